"""relay.deadletter: whole message, mbox, 0600, no symlink following."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from relay.deadletter import default_path, save, save_to_spool, spool_entries
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


def test_default_path(tmp_path: Path) -> None:
    assert default_path({"DEAD": "/x/d", "HOME": "/h"}) == "/x/d"
    # $HOME counts when it is a directory of the real uid's own...
    assert default_path({"HOME": str(tmp_path)}) == str(tmp_path / "dead.letter")
    # ...not when it is missing or another user's (cron's inherited HOME=/root for a
    # job of another user): then the passwd home of the real uid.
    passwd_home = pwd.getpwuid(os.getuid()).pw_dir
    assert default_path({"HOME": "/nonexistent/h"}) == os.path.join(passwd_home, "dead.letter")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    assert default_path({"HOME": str(theirs)}) == os.path.join(passwd_home, "dead.letter")


def test_home_of_another_user_is_not_used(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, os.getuid(), 0)
    assert default_path({"HOME": str(theirs)}, uid=65534) == "/nonexistent/dead.letter"
    assert default_path({"HOME": str(theirs)}, uid=4_000_000) is None  # no passwd entry


def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "dead.letter"
    os.mkfifo(fifo)
    with pytest.raises(CantCreateError, match="FIFO"):
        save(MESSAGE, "me@x.org", str(fifo))  # no reader: a blocking open would hang here
    # With a reader holding it open, the open succeeds and fstat refuses it.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(CantCreateError, match="not a regular file"):
            save(MESSAGE, "me@x.org", str(fifo))
        assert os.read(reader, 100) == b""  # nothing was written into it
    finally:
        os.close(reader)


@pytest.mark.skipif(os.geteuid() != 0, reason="the spool fallback is root's")
def test_root_falls_back_to_the_spool_dead_area(tmp_path: Path) -> None:
    spool = tmp_path / "queue"
    kept = save(MESSAGE, "me@x.org", str(tmp_path / "missing" / "dead.letter"), spool=str(spool))
    assert kept.startswith(str(spool / "dead") + "/") and kept.endswith(f".{os.getuid()}")
    assert stat.S_IMODE(os.stat(spool / "dead").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    (entry,) = spool_entries(str(spool))
    assert entry.owner == os.getuid() and "missing" in entry.reason
    (message,) = read_mbox(Path(kept))
    assert message["Subject"] == "s" and message["X-Mailx-Relay-Owner"].startswith("uid=")
    # Without a spool to fall back to (mail's record file, a user), the error stands.
    with pytest.raises(CantCreateError):
        save(MESSAGE, "me@x.org", str(tmp_path / "missing" / "dead.letter"))


def test_spool_entries_by_owner(tmp_path: Path) -> None:
    spool = str(tmp_path / "queue")
    save_to_spool(MESSAGE, "a@x.org", spool, 1500, "refused: no alias for 'bob'")
    save_to_spool(MESSAGE, "b@x.org", spool, 1600, "hub said 550")
    assert [e.owner for e in spool_entries(spool)] == [1500, 1600]
    (mine,) = spool_entries(spool, owner=1500)
    assert mine.reason == "refused: no alias for 'bob'"
    assert spool_entries(str(tmp_path / "never")) == []
