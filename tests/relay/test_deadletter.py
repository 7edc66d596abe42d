"""relay.deadletter: whole message, mbox, 0600, no symlink following."""

from __future__ import annotations

import os
import pwd
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import deadletter
from relay.deadletter import default_path, mbox_chunks, save, save_to_spool, spool_entries
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


def whole_entry(message: bytes, sender: str, when: float) -> bytes:
    """The mboxrd entry as written from the message held whole (the reference)."""
    import time

    stamp = time.asctime(time.gmtime(when))
    text = message.replace(b"\r\n", b"\n")
    if not text.endswith(b"\n"):
        text += b"\n"
    quoted = re.sub(rb"^(>*From )", rb">\1", text, flags=re.MULTILINE)
    return f"From {sender} {stamp}\n".encode() + quoted + b"\n"


def split(message: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted(cuts):
        yield message[start:cut]
        start = cut
    yield message[start:]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"From ", b">From ", b"From", b"\r\n", b"\n", b"\r", b"x", b">"]),
        max_size=30,
    ),
    st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_blocks_of_any_size_give_the_entry_of_the_whole_message(
    parts: list[bytes], cuts: list[int]
) -> None:
    # A `From ` or a CRLF cut in two by a block boundary is still quoted and converted.
    message = b"".join(parts)
    got = b"".join(mbox_chunks(split(message, cuts), "me@x.org", when=0))
    assert got == whole_entry(message, "me@x.org", 0)


def test_a_line_longer_than_a_block_is_written_in_pieces_and_quoted_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deadletter, "_LONG_LINE", 8)
    message = b"From " + b"From x" * 10 + b"\r\nFrom end\r\n" + b"y" * 30 + b"\r"
    pieces = [message[i : i + 3] for i in range(0, len(message), 3)]
    got = b"".join(mbox_chunks(pieces, "me@x.org", when=0))
    assert got == whole_entry(message, "me@x.org", 0)


class Blocks:
    """A big message read in blocks, as often as asked (a spooled copy of stdin)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def blocks(self) -> Iterator[bytes]:
        self.reads += 1
        for start in range(0, len(self.data), 5):
            yield self.data[start : start + 5]


def test_a_message_in_blocks_is_saved_as_the_same_entry(tmp_path: Path) -> None:
    whole, blocks = tmp_path / "whole", tmp_path / "blocks"
    save(MESSAGE, "me@x.org", str(whole))
    source = Blocks(MESSAGE)
    save(source, "me@x.org", str(blocks))
    assert source.reads == 1
    strip = re.compile(rb"^From me@x.org .*$", re.MULTILINE)
    assert strip.sub(b"", blocks.read_bytes()) == strip.sub(b"", whole.read_bytes())
