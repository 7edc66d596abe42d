"""relay.deadletter: whole message, mbox, 0600, no symlink following."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from relay.deadletter import default_path, save
from relay.errors import CantCreateError
from tests.mailhub import read_mbox

MESSAGE = b"To: a@x.org\r\nSubject: s\r\n\r\nFrom the top\r\n>From quoted\r\nend\r\n"


def test_whole_message_in_mbox_0600(tmp_path: Path) -> None:
    path = str(tmp_path / "dead.letter")
    assert save(MESSAGE, "me@x.org", path) == path
    save(b"Subject: second\n\nbody\n", "me@x.org", path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first, second = read_mbox(Path(path))
    assert first["Subject"] == "s" and first["To"] == "a@x.org"
    # mboxrd quoting (RFC 4155): readers that un-quote get the original lines back.
    assert first.get_payload() == ">From the top\n>>From quoted\nend\n"
    assert first.get_from().startswith("me@x.org ")
    assert second["Subject"] == "second"


def test_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("precious\n")
    link = tmp_path / "dead.letter"
    link.symlink_to(target)
    with pytest.raises(CantCreateError, match="symlink"):
        save(MESSAGE, "me@x.org", str(link))
    assert target.read_text() == "precious\n"


def test_wide_mode_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "dead.letter"
    path.write_text("")
    path.chmod(0o644)
    save(MESSAGE, "me@x.org", str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unwritable_directory(tmp_path: Path) -> None:
    with pytest.raises(CantCreateError) as caught:
        save(MESSAGE, "me@x.org", str(tmp_path / "missing" / "dead.letter"))
    assert caught.value.exit_code == os.EX_CANTCREAT
    assert "missing" in str(caught.value)


def test_default_path() -> None:
    assert default_path({"DEAD": "/x/d", "HOME": "/h"}) == "/x/d"
    assert default_path({"HOME": "/h"}) == "/h/dead.letter"
