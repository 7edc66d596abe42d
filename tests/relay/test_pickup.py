"""relay.pickup: the offline drop read back with every check, into the system queue.

Drop files are written here exactly as the client writes them (tmp.<unique>, O_EXCL,
0600, fsync, rename to msg.<unique>, fsync of the directory), then given to another
owner with fchown, since the tests run as root and the pickup trusts only the owner.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay import handoff
from relay.config import load
from relay.pickup import DEFAULT_MAX_SIZE, pickup
from relay.queue import Queue
from tests.e2e.tools import run
from tests.mailhub import MailHub, MailHubFactory
from tests.relayconf import write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="drop files of other owners need root")

NOBODY = 65534
MESSAGE = b"From: someone\nTo: ops@example.com\nSubject: offline\n\nbody line\n"


def unique() -> str:
    return f"{time.time_ns()}.{os.getpid()}.{os.urandom(8).hex()}"


def drop(
    directory: Path,
    message: bytes = MESSAGE,
    *,
    uid: int = NOBODY,
    recipients: tuple[str, ...] = ("ops@example.com",),
    claimed_uid: int | None = None,
    request: bytes | None = None,
) -> Path:
    """One drop file, committed as the client commits it, owned by `uid`."""
    line = request
    if line is None:
        line = handoff.encode(
            handoff.Request(recipients, claimed_uid=uid if claimed_uid is None else claimed_uid)
        )
    name = unique()
    fd = os.open(
        directory / f"tmp.{name}", os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY, 0o600
    )
    try:
        os.write(fd, line + message)
        os.fchown(fd, uid, uid)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(directory / f"tmp.{name}", directory / f"msg.{name}")
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return directory / f"msg.{name}"


@pytest.fixture
def offline(tmp_path: Path) -> Path:
    path = tmp_path / "offline"
    path.mkdir()
    path.chmod(0o1733)
    return path


def entries(tmp_path: Path) -> list[object]:
    with Queue.open(str(tmp_path / "queue")) as queue:
        return list(queue.scan().entries)


def test_good_file_is_queued_with_its_owner_and_a_trace_header(
    tmp_path: Path, offline: Path
) -> None:
    config = load(str(write_config(tmp_path, None, mailhub="127.0.0.1:9")))
    path = drop(offline)
    report = pickup(config, str(offline), str(tmp_path / "queue"), hostname="box.example.net")
    assert not report.corrupt and not report.errors and not report.lines()
    (picked,) = report.queued
    assert picked.uid == NOBODY and not picked.duplicate
    assert not path.exists()  # unlinked once the entry was committed
    with Queue.open(str(tmp_path / "queue")) as queue:
        (entry,) = queue.scan().entries
        assert entry.id == picked.queue_id
        assert entry.uid == NOBODY
        assert entry.sender == "nobody@example.org"  # the owner, not anything in the file
        assert entry.recipients == ("ops@example.com",)
        assert entry.dead_letter is None  # root never writes into the user's home
        with queue.lock(entry.id) as locked:  # type: ignore[union-attr]
            stored = locked.read_message()
    first, date = stored.split(b"\r\n")[:2]
    # The same trace header as the service writes: folded before the date.
    assert first == b"Received: by box.example.net (mailx-relay, from userid 65534);"
    assert date.startswith(b"\t") and date[4:6] == b", "  # "\tWed, 02 Dec 2026 ..."


def test_mailq_flush_as_root_picks_up_and_sends(
    tmp_path: Path, offline: Path, mailhub: MailHubFactory
) -> None:
    hub: MailHub = mailhub()
    conf = write_config(tmp_path, hub)
    drop(offline)
    done = run(
        "mailq", ["-C", str(conf), "--flush"], home=tmp_path, env={"RELAY_OFFLINE": str(offline)}
    )
    assert done.returncode == 0, done.stderr
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["ops@example.com"]
    assert received.mail_from == "nobody@example.org"
    parsed = received.message()
    assert "from userid 65534" in parsed["Received"]
    assert received.data.startswith(b"Received: by box.example.net (mailx-relay, from userid")
    assert not list(offline.iterdir())
    assert entries(tmp_path) == []


def test_root_listing_shows_the_sender_uid(tmp_path: Path, offline: Path) -> None:
    conf = write_config(tmp_path, None, mailhub="127.0.0.1:9")
    drop(offline)
    pickup(load(str(conf)), str(offline), str(tmp_path / "queue"))
    text = run("mailq", ["-C", str(conf)], home=tmp_path)
    assert text.returncode == 0, text.stderr
    header, line = text.stdout.decode().splitlines()[:2]
    assert "User" in header.split() and " nobody " in line
    listed = run("mailq", ["-C", str(conf), "--json"], home=tmp_path)
    (entry,) = json.loads(listed.stdout)["entries"]
    assert entry["uid"] == NOBODY and entry["user"] == "nobody"


def _symlink(offline: Path, tmp_path: Path) -> Path:
    target = drop(tmp_path / "elsewhere")
    link = offline / f"msg.{unique()}"
    link.symlink_to(target)
    return link


def _hard_link(offline: Path, tmp_path: Path) -> Path:
    first = drop(offline)
    second = tmp_path / "elsewhere" / "second-link"
    os.link(first, second)
    return first


def _fifo(offline: Path, tmp_path: Path) -> Path:
    path = offline / f"msg.{unique()}"
    os.mkfifo(path)
    os.chown(path, NOBODY, NOBODY)
    return path


def _directory(offline: Path, tmp_path: Path) -> Path:
    path = offline / f"msg.{unique()}"
    path.mkdir()
    return path


def _empty(offline: Path, tmp_path: Path) -> Path:
    path = offline / f"msg.{unique()}"
    path.touch()
    os.chown(path, NOBODY, NOBODY)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda o, t: drop(o, claimed_uid=1500), "claims uid 1500 but the file belongs to uid"),
        (lambda o, t: drop(o, uid=1500, claimed_uid=0), "claims uid 0"),
        (_symlink, "symlink"),
        (_hard_link, "2 hard links"),
        (_fifo, "a FIFO"),
        (_directory, "a directory"),
        (lambda o, t: drop(o, request=b"HELO there\n"), "bad magic"),
        (lambda o, t: drop(o, request=b"MAILX-RELAY-SUBMIT 1 {not json\n"), "not ASCII JSON"),
        (lambda o, t: drop(o, b"", request=b"MAILX-RELAY-SUBMIT 1 {}"), "no request line"),
        (_empty, "no request line"),
        (lambda o, t: drop(o, b""), "no message"),
    ],
    ids=[
        "forged-claimed-uid",
        "claims-root",
        "symlink",
        "hard-link",
        "fifo",
        "directory",
        "garbage-request",
        "bad-json",
        "no-newline",
        "empty",
        "request-only",
    ],
)
def test_suspicious_files_are_set_aside_and_never_queued(
    tmp_path: Path, offline: Path, make: object, reason: str
) -> None:
    (tmp_path / "elsewhere").mkdir()
    config = load(str(write_config(tmp_path, None, mailhub="127.0.0.1:9")))
    bad = make(offline, tmp_path)  # type: ignore[operator]
    report = pickup(config, str(offline), str(tmp_path / "queue"))
    assert report.queued == [] and entries(tmp_path) == []
    (problem,) = report.corrupt
    assert reason in problem.reason
    assert problem.moved_to == str(tmp_path / "queue" / "corrupt" / f"offline.{bad.name}")
    assert os.path.lexists(problem.moved_to) and not os.path.lexists(bad)
    (line,) = report.lines()
    assert bad.name in line and reason in line and "not sent" in line
    assert report.exit_code() == os.EX_DATAERR
    with Queue.open(str(tmp_path / "queue")) as queue:
        (listed,) = queue.scan().corrupt  # root's mailq shows it among the corrupt entries
    assert listed.id == f"offline.{bad.name}" and "offline drop file" in listed.reason


def test_oversized_file_is_set_aside(tmp_path: Path, offline: Path) -> None:
    config = load(str(write_config(tmp_path, None, mailhub="127.0.0.1:9")))
    drop(offline, MESSAGE + b"x" * 2000)
    report = pickup(config, str(offline), str(tmp_path / "queue"), max_size=1000)
    assert entries(tmp_path) == []
    (problem,) = report.corrupt
    assert "too large" in problem.reason and "at most 1000" in problem.reason
    assert DEFAULT_MAX_SIZE == 64 * 1024 * 1024


def test_good_and_bad_files_together(tmp_path: Path, offline: Path) -> None:
    config = load(str(write_config(tmp_path, None, mailhub="127.0.0.1:9")))
    drop(offline, claimed_uid=0)
    drop(offline)
    report = pickup(config, str(offline), str(tmp_path / "queue"))
    assert len(report.queued) == 1 and len(report.corrupt) == 1
    assert [getattr(e, "uid", None) for e in entries(tmp_path)] == [NOBODY]


def test_old_tmp_files_are_removed_fresh_ones_kept(tmp_path: Path, offline: Path) -> None:
    config = load(str(write_config(tmp_path, None, mailhub="127.0.0.1:9")))
    old = offline / f"tmp.{unique()}"
    fresh = offline / f"tmp.{unique()}"
    for path in (old, fresh):
        path.write_bytes(b"MAILX-RELAY-SUBMIT 1 {}\npartial")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    report = pickup(config, str(offline), str(tmp_path / "queue"))
    assert report.removed_tmp == [old.name]
    assert not old.exists() and fresh.exists()
    assert entries(tmp_path) == []  # a tmp.* file is never picked up


def test_refused_recipient_is_kept_in_the_spool_dead_area(tmp_path: Path, offline: Path) -> None:
    conf = write_config(tmp_path, None, mailhub="127.0.0.1:9")
    drop(offline, recipients=("bob",))  # a local name with no alias: refused in-process too
    report = pickup(load(str(conf)), str(offline), str(tmp_path / "queue"))
    assert entries(tmp_path) == [] and not list(offline.iterdir())
    (refused,) = report.refused
    assert refused.uid == NOBODY and refused.kept_in is not None
    kept = Path(refused.kept_in)
    assert kept.parent == tmp_path / "queue" / "dead" and kept.name.endswith(f".{NOBODY}")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.stat().st_uid == 0
    assert b"body line" in kept.read_bytes()
    listed = run("mailq", ["-C", str(conf), "--dead"], home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    text = listed.stdout.decode()
    assert kept.name in text and "nobody" in text and "bob" in text
    as_json = json.loads(run("mailq", ["-C", str(conf), "--dead", "--json"], home=tmp_path).stdout)
    (entry,) = as_json["entries"]
    assert entry["uid"] == NOBODY and entry["file"] == str(kept)


CRASH = """
import os, sys
from relay.config import load
from relay.pickup import pickup
pickup(load(sys.argv[1]), sys.argv[2], sys.argv[3], after_commit=lambda name: os._exit(9))
"""


def test_killed_between_commit_and_unlink_loses_nothing_and_queues_once(
    tmp_path: Path, offline: Path
) -> None:
    conf = write_config(tmp_path, None, mailhub="127.0.0.1:9")
    path = drop(offline)
    queue = str(tmp_path / "queue")
    died = subprocess.run(
        [sys.executable, "-c", CRASH, str(conf), str(offline), queue],
        capture_output=True,
        check=False,
    )
    assert died.returncode == 9, died.stderr
    assert path.exists()  # not unlinked: the process died first
    (entry,) = entries(tmp_path)  # but committed
    report = pickup(load(str(conf)), str(offline), queue)
    (picked,) = report.queued
    assert picked.duplicate and picked.queue_id == getattr(entry, "id", None)
    assert not path.exists()
    assert len(entries(tmp_path)) == 1  # exactly once


def test_missing_drop_directory_is_empty(tmp_path: Path) -> None:
    config = load(str(write_config(tmp_path, None, mailhub="127.0.0.1:9")))
    report = pickup(config, str(tmp_path / "none"), str(tmp_path / "queue"))
    assert report.queued == [] and report.lines() == []
    assert not (tmp_path / "queue").exists()


def test_drop_directory_of_another_owner_is_refused(tmp_path: Path, offline: Path) -> None:
    from relay.errors import CantCreateError

    config = load(str(write_config(tmp_path, None, mailhub="127.0.0.1:9")))
    drop(offline)
    os.chown(offline, NOBODY, NOBODY)
    with pytest.raises(CantCreateError, match="belongs to uid 65534"):
        pickup(config, str(offline), str(tmp_path / "queue"))
    assert len(list(offline.iterdir())) == 1


def test_max_message_size_in_the_config_bounds_the_offline_drop(
    tmp_path: Path, offline: Path
) -> None:
    conf = write_config(tmp_path, None, mailhub="127.0.0.1:9", MaxMessageSize="1K")
    drop(offline, MESSAGE + b"x" * 2000)
    report = pickup(load(str(conf)), str(offline), str(tmp_path / "queue"))
    assert entries(tmp_path) == []
    (problem,) = report.corrupt
    assert "at most 1024" in problem.reason


def test_a_hostile_file_cannot_stop_the_pickup_of_the_others(tmp_path: Path, offline: Path) -> None:
    """JSON or a header nested deep enough to exhaust the parser's recursion: set aside,
    and the good file beside it is still queued (the flush and the service go on)."""
    config = load(str(write_config(tmp_path, None, mailhub="127.0.0.1:9")))
    drop(offline, request=handoff.MAGIC + b"[" * 200_000 + b"\n")
    drop(offline, b"From: " + b"(" * 20_000 + b"\nTo: ops@example.com\n\nx\n")
    drop(offline)
    report = pickup(config, str(offline), str(tmp_path / "queue"))
    assert len(report.queued) == 1
    assert len(report.corrupt) + len(report.refused) == 2
    assert [getattr(e, "uid", None) for e in entries(tmp_path)] == [NOBODY]
    assert sorted(p.name for p in offline.iterdir()) == []


def test_a_local_configuration_problem_leaves_the_file_for_a_later_pickup(
    tmp_path: Path, offline: Path
) -> None:
    """Not the message's fault (the Aliases file is unreadable for a moment): the drop
    file stays where it is, reported, neither sent nor set aside."""
    conf = write_config(tmp_path, None, mailhub="127.0.0.1:9", Aliases=tmp_path / "missing")
    config = load(str(conf))
    dropped = drop(offline)
    report = pickup(config, str(offline), str(tmp_path / "queue"))
    assert report.queued == [] and report.refused == [] and report.corrupt == []
    assert report.errors and dropped.exists()
