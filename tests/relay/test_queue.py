"""relay.queue (the durable spool) and the Queue= policy of relay.submission.submit.

The spool: directory checks (no symlink, ours only), the commit order of an enqueue (checked by
recording the system calls instead of cutting power: docs/architecture.md, "Queue"), unique
names, flock exclusion, corruption detection, back-off, tmp/ cleaning. The policy:
fallback, always and no, and partial refusals, against real aiosmtpd servers.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from relay import config as config_module
from relay.config import Config
from relay.errors import CantCreateError, IOFailure, RelayError, TempFailError
from relay.queue import (
    SYSTEM_QUEUE_DIR,
    Queue,
    backoff_delay,
    blames_message,
    default_dir,
    new_id,
    queue_dir,
)
from tests.mailhub import MailHub, MailHubFactory, closed_port, dead_letters
from tests.relayconf import PASSWORD, send, write_config


@pytest.fixture
def qpath(tmp_path: Path) -> Path:
    return tmp_path / "queue"


@pytest.fixture
def queue(qpath: Path) -> Iterator[Queue]:
    with Queue.open(str(qpath)) as opened:
        yield opened


def put(queue: Queue, body: bytes = b"Subject: s\r\n\r\nhi\r\n", **kw: Any) -> str:
    kw.setdefault("sender", "bob@example.org")
    kw.setdefault("recipients", ["alice@example.com"])
    return queue.enqueue(body, **kw).id


def meta(qpath: Path, name: str, where: str = "new") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((qpath / where / name / "meta.json").read_text())
    return data


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


class TestDirectory:
    def test_default_for_root_is_the_system_spool(self) -> None:
        assert default_dir({"XDG_STATE_HOME": "/x"}, euid=0) == SYSTEM_QUEUE_DIR

    def test_default_for_a_user_follows_xdg(self) -> None:
        env = {"XDG_STATE_HOME": "/x/state", "HOME": "/h"}
        assert default_dir(env, euid=1000) == "/x/state/mailx-relay/queue"
        assert default_dir({"HOME": "/h"}, euid=1000) == "/h/.local/state/mailx-relay/queue"
        # The XDG spec: a relative value is invalid and ignored.
        relative = {"XDG_STATE_HOME": "state", "HOME": "/h"}
        assert default_dir(relative, euid=1000) == "/h/.local/state/mailx-relay/queue"

    def test_queuedir_may_start_with_tilde(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HOME", "/home/someone")
        assert queue_dir("~/q") == "/home/someone/q"

    def test_created_private_with_its_subdirectories(self, tmp_path: Path) -> None:
        path = tmp_path / "state" / "mailx-relay" / "queue"
        Queue.open(str(path)).close()
        assert mode(path) == 0o700
        for sub in ("tmp", "new", "corrupt"):
            assert mode(path / sub) == 0o700

    def test_missing_without_create(self, qpath: Path) -> None:
        with pytest.raises(FileNotFoundError):
            Queue.open(str(qpath), create=False)

    def test_refuses_a_symlink(self, tmp_path: Path) -> None:
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        (tmp_path / "link").symlink_to(real)
        with pytest.raises(CantCreateError, match="symlink") as caught:
            Queue.open(str(tmp_path / "link"))
        assert caught.value.exit_code == os.EX_CANTCREAT

    @pytest.mark.parametrize("bits", [0o770, 0o707, 0o722])
    def test_refuses_writable_by_others(self, qpath: Path, bits: int) -> None:
        qpath.mkdir()
        qpath.chmod(bits)
        with pytest.raises(CantCreateError, match=r"writable by others.*chmod 700"):
            Queue.open(str(qpath))

    def test_refuses_a_subdirectory_that_is_a_symlink(self, qpath: Path, tmp_path: Path) -> None:
        qpath.mkdir(mode=0o700)
        (tmp_path / "elsewhere").mkdir()
        (qpath / "new").symlink_to(tmp_path / "elsewhere")
        with pytest.raises(CantCreateError, match="symlink"):
            Queue.open(str(qpath))

    @pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory away")
    def test_refuses_one_owned_by_someone_else(self, qpath: Path) -> None:
        qpath.mkdir(mode=0o700)
        os.chown(qpath, 4321, 4321)
        with pytest.raises(CantCreateError, match="belongs to uid 4321"):
            Queue.open(str(qpath))

    def test_a_file_in_the_way_is_73(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(CantCreateError, match="not a directory") as caught:
            Queue.open(str(tmp_path / "file" / "queue"))
        assert caught.value.exit_code == os.EX_CANTCREAT


class TestEnqueue:
    def test_entry_is_complete_and_private(self, queue: Queue, qpath: Path) -> None:
        entry = queue.enqueue(
            b"Subject: s\r\n\r\nhi\r\n",
            sender="bob@example.org",
            recipients=["a@example.com", "b@example.com"],
            message_id="<1@x>",
            dead_letter="/d/dead.letter",
            now=1_800_000_000.25,
        )
        where = qpath / "new" / entry.id
        assert sorted(p.name for p in where.iterdir()) == ["message", "meta.json"]
        assert mode(where) == 0o700
        assert mode(where / "message") == mode(where / "meta.json") == 0o600
        assert (where / "message").read_bytes() == b"Subject: s\r\n\r\nhi\r\n"
        assert meta(qpath, entry.id) == {
            "version": 1,
            "id": entry.id,
            "sender": "bob@example.org",
            "recipients": ["a@example.com", "b@example.com"],
            "queued_at": 1_800_000_000.25,
            "next_try": 1_800_000_000.25,
            "size": 18,
            "attempts": 0,
            "last_error": None,
            "message_id": "<1@x>",
            "mailhub": None,
            "dead_letter": "/d/dead.letter",
            "delivered": [],
            "uid": None,
            "origin": None,
        }
        assert entry.id.startswith("20270115080000.250000.")
        assert list((qpath / "tmp").iterdir()) == []

    def test_commit_order(self, queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
        """write+fsync both files, fsync the entry, rename it into new/, fsync new/."""
        calls: list[tuple[str, str]] = []
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd: int) -> None:
            calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def rename(src: str, dst: str, **kw: Any) -> None:
            calls.append(("rename", src))
            real_rename(src, dst, **kw)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename)
        name = put(queue)
        monkeypatch.undo()
        tmp, new = f"{queue.path}/tmp/{name}", f"{queue.path}/new"
        assert calls == [
            ("fsync", f"{tmp}/message"),
            ("fsync", f"{tmp}/meta.json"),
            ("fsync", tmp),
            ("rename", name),
            ("fsync", new),
        ]

    def test_names_unique_within_one_microsecond(self, queue: Queue) -> None:
        with freeze_time("2027-01-15 08:00:00.123456"):
            names = {put(queue) for _ in range(300)}
        assert len(names) == 300
        assert len(queue.scan().entries) == 300
        assert all(n.startswith("20270115080000.123456.") for n in names)

    def test_names_sort_in_queue_order(self, queue: Queue) -> None:
        names = [put(queue, now=1_800_000_000 + i * 0.5) for i in range(5)]
        assert [e.id for e in queue.scan().entries] == names

    def test_disk_full_is_74_and_leaves_no_entry(
        self, queue: Queue, qpath: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def full(fd: int, data: Any) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "write", full)
        with pytest.raises(IOFailure, match="No space left") as caught:
            put(queue)
        monkeypatch.undo()
        assert caught.value.exit_code == os.EX_IOERR
        assert list((qpath / "new").iterdir()) == []
        assert list((qpath / "tmp").iterdir()) == []

    def test_cannot_create_is_73(
        self, queue: Queue, qpath: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def denied(*args: Any, **kw: Any) -> None:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(os, "mkdir", denied)
        with pytest.raises(CantCreateError, match="Permission denied"):
            put(queue)


class TestLock:
    def test_a_second_locker_is_refused_until_release(self, queue: Queue, qpath: Path) -> None:
        name = put(queue)
        with Queue.open(str(qpath)) as other:
            first = queue.lock(name)
            assert first is not None
            assert other.lock(name) is None  # flock: per open file, so even in one process
            first.close()
            second = other.lock(name)
            assert second is not None
            second.close()

    def test_a_removed_entry_cannot_be_locked(self, queue: Queue, qpath: Path) -> None:
        name = put(queue)
        locked = queue.lock(name)
        assert locked is not None
        locked.remove()
        locked.close()
        assert queue.lock(name) is None
        assert list((qpath / "new").iterdir()) == []
        assert list((qpath / "tmp").iterdir()) == []

    def test_the_lock_dies_with_its_process(self, queue: Queue, qpath: Path) -> None:
        name = put(queue)
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time\n"
                "from relay.queue import Queue\n"
                f"locked = Queue.open({str(qpath)!r}).lock({name!r})\n"
                "print('held' if locked else 'busy', flush=True)\n"
                "time.sleep(60)\n",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            assert queue.lock(name) is None
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            if holder.stdout is not None:
                holder.stdout.close()
        locked = queue.lock(name)  # no lock file survived the SIGKILL
        assert locked is not None
        locked.close()

    def test_update_rewrites_the_sidecar_atomically(self, queue: Queue, qpath: Path) -> None:
        name = put(queue, now=1000.0)
        with queue.lock(name) as locked:  # type: ignore[union-attr]
            locked.defer("451 try later", (60, 3600), blame=True, now=2000.0)
            locked.defer("451 again", (60, 3600), blame=True, now=3000.0)
        data = meta(qpath, name)
        assert (data["attempts"], data["next_try"], data["last_error"]) == (2, 3120.0, "451 again")
        assert sorted(p.name for p in (qpath / "new" / name).iterdir()) == [
            "message",
            "meta.json",
        ]


class TestCorrupt:
    @pytest.mark.parametrize(
        ("damage", "reason"),
        [
            (lambda e: (e / "meta.json").unlink(), "missing"),
            (lambda e: (e / "meta.json").write_text("{not json"), "not valid JSON"),
            (lambda e: (e / "meta.json").write_text('{"version": 9}'), "format version"),
            (lambda e: (e / "message").unlink(), "missing"),
            (lambda e: (e / "message").write_bytes(b"Subj"), "truncated"),
            (lambda e: _edit(e, recipients=[]), "no recipients"),
            (lambda e: _edit(e, recipients=["a@x\r\nDATA"]), "control character"),
            (lambda e: _edit(e, attempts=-1), "attempts"),
            (lambda e: _edit(e, id="20990101000000.000000.1.abcdef"), "names entry"),
        ],
    )
    def test_detected_listed_and_quarantined(
        self, queue: Queue, qpath: Path, damage: Any, reason: str
    ) -> None:
        good, bad = put(queue), put(queue)
        damage(qpath / "new" / bad)
        scan = queue.scan()
        assert [e.id for e in scan.entries] == [good]
        (found,) = scan.corrupt
        assert (found.id, found.quarantined) == (bad, False)
        assert reason in found.reason
        assert queue.quarantine(bad) == str(qpath / "corrupt" / bad)
        (found,) = queue.scan().corrupt
        assert (found.id, found.quarantined) == (bad, True)
        assert reason in found.reason

    def test_stray_files_in_new_are_corrupt(self, queue: Queue, qpath: Path) -> None:
        (qpath / "new" / "notes.txt").write_text("hi")
        (found,) = queue.scan().corrupt
        assert found.reason == "not a queue entry name"

    def test_locking_a_corrupt_entry_says_why(self, queue: Queue, qpath: Path) -> None:
        name = put(queue)
        (qpath / "new" / name / "meta.json").unlink()
        with pytest.raises(ValueError, match=r"meta\.json missing"):
            queue.lock(name)


def _edit(entry: Path, **changes: Any) -> None:
    data = json.loads((entry / "meta.json").read_text())
    data.update(changes)
    (entry / "meta.json").write_text(json.dumps(data))


class TestBackoffAndCleaning:
    def test_backoff_starts_at_first_doubles_and_is_capped(self) -> None:
        delays = [backoff_delay(n, (60, 3600)) for n in range(1, 9)]
        assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]
        assert backoff_delay(3, (1, 2)) == 2

    @pytest.mark.parametrize(
        ("step", "reply", "blamed"),
        [
            ("MAIL FROM", "451 4.3.0 later", True),
            ("RCPT TO", None, True),  # every recipient refused for now
            ("DATA", None, True),  # session lost in this message's data
            ("end of data", None, True),  # lost after the final dot
            ("end of data", "452 4.3.1 full", True),
            ("DATA", "421 4.3.2 shutting down", False),
            ("RCPT TO", "421 4.3.2 shutting down", False),
            ("connect", None, False),
            ("AUTH", "454 4.7.0 later", False),
            ("EHLO", "421 busy", False),
        ],
    )
    def test_what_backs_off(self, step: str, reply: str | None, blamed: bool) -> None:
        code = int(reply.split()[0]) if reply else None
        err = TempFailError("x", step=step, reply=reply, code=code)
        assert blames_message(err) is blamed

    def test_clean_tmp_removes_junk_only(self, queue: Queue, qpath: Path) -> None:
        tmp = qpath / "tmp"
        for name in ("old", "fresh", "gone.done"):
            (tmp / name).mkdir()
            (tmp / name / "message").write_text("x")
        os.utime(tmp / "old", (1000, 1000))
        assert sorted(queue.clean_tmp(now=time.time())) == ["gone.done", "old"]
        assert [p.name for p in tmp.iterdir()] == ["fresh"]

    def test_clean_tmp_removes_a_dead_writers_entry_at_once(
        self, queue: Queue, qpath: Path
    ) -> None:
        """A sender killed mid-write leaves tmp/<id>; its pid is in the id, so a flush
        need not wait an hour to reclaim the space. A living writer keeps its entry."""
        import subprocess

        child = subprocess.Popen(["sleep", "30"])
        try:
            child_pid = child.pid
            dead_pid = _exited_pid()
            now = time.time()
            stamp = new_id(now).split(".")
            dead = f"{stamp[0]}.{stamp[1]}.{dead_pid}.abcdef"
            alive = f"{stamp[0]}.{stamp[1]}.{child_pid}.abcdef"
            mine = new_id(now)
            for name in (dead, alive, mine):
                (qpath / "tmp" / name).mkdir()
                (qpath / "tmp" / name / "message").write_bytes(b"x" * 1000)
            assert queue.clean_tmp(now=now) == [dead]
            assert sorted(p.name for p in (qpath / "tmp").iterdir()) == sorted([alive, mine])
        finally:
            child.kill()
            child.wait()


# -- the submit policy --------------------------------------------------------------------


def policy_config(tmp_path: Path, hub: MailHub | None, **keys: Any) -> Config:
    keys.setdefault("QueueDir", tmp_path / "queue")
    if hub is None:
        keys.setdefault("mailhub", f"127.0.0.1:{closed_port()}")
    return config_module.load(str(write_config(tmp_path, hub, **keys)))


def entries(tmp_path: Path) -> list[Any]:
    path = tmp_path / "queue"
    if not path.exists():
        return []
    with Queue.open(str(path), create=False) as queue:
        return queue.scan().entries


class TestSubmitPolicy:
    def test_fallback_queues_when_the_hub_is_down(self, tmp_path: Path) -> None:
        result = send(tmp_path, policy_config(tmp_path, None))
        (entry,) = entries(tmp_path)
        assert result.queued_id == entry.id
        assert "Connection refused" in result.queued_reason
        assert result.recipients == ()
        assert result.queued_for == ("alice@example.com",)
        # Unreachable: not the message's fault, so no back-off: due at the next flush.
        assert (entry.attempts, entry.next_try) == (1, entry.queued_at)
        assert "Connection refused" in (entry.last_error or "")
        assert entry.message_id == result.message_id
        assert entry.dead_letter == str(tmp_path / "dead.letter")
        stored = (tmp_path / "queue" / "new" / entry.id / "message").read_bytes()
        assert f"Message-ID: {result.message_id}".encode() in stored  # fixed once
        assert b"Bcc" not in stored and b"hidden@example.net" not in stored
        assert dead_letters(tmp_path) == []

    @pytest.mark.parametrize(
        ("options", "said", "wait"),
        [
            ({"faults": {"CONNECT": (421, "4.3.2 busy")}}, "421 4.3.2 busy", 0),
            ({"faults": {"MAIL": (451, "4.3.0 later")}}, "451 4.3.0 later", 90),
            ({"faults": {"RCPT": (451, "4.2.0 greylisted")}}, "4.2.0 greylisted", 90),
            ({"faults": {"EOD": (451, "4.3.0 full")}}, "451 4.3.0 full", 90),
            ({"disconnect_in_data": True}, "the message may have been delivered", 90),
        ],
    )
    def test_fallback_queues_each_temporary_failure(
        self,
        tmp_path: Path,
        mailhub: MailHubFactory,
        options: dict[str, Any],
        said: str,
        wait: int,
    ) -> None:
        hub = mailhub(**options)
        result = send(tmp_path, policy_config(tmp_path, hub, QueueBackoff="90,900"))
        (entry,) = entries(tmp_path)
        assert result.queued_id == entry.id
        assert said in result.queued_reason
        # Back-off only when the message itself was refused; a busy server: next flush.
        assert entry.next_try - entry.queued_at == pytest.approx(wait)
        assert hub.messages == []
        assert dead_letters(tmp_path) == []

    @pytest.mark.parametrize(
        "fault",
        [{"faults": {"MAIL": (550, "5.7.1 no")}}, {"faults": {"RCPT": (550, "5.1.1 unknown")}}],
    )
    def test_a_5xx_is_never_queued(
        self, tmp_path: Path, mailhub: MailHubFactory, fault: dict[str, Any]
    ) -> None:
        hub = mailhub(**fault)
        with pytest.raises(RelayError) as caught:
            send(tmp_path, policy_config(tmp_path, hub))
        assert caught.value.exit_code in (os.EX_UNAVAILABLE, os.EX_NOUSER)
        assert caught.value.saved_to == str(tmp_path / "dead.letter")
        assert entries(tmp_path) == []
        assert len(dead_letters(tmp_path)) == 1

    def test_always_queues_without_connecting(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        hub = mailhub()
        result = send(tmp_path, policy_config(tmp_path, hub, Queue="always"))
        (entry,) = entries(tmp_path)
        assert result.queued_id == entry.id
        assert "Queue=always" in result.queued_reason
        assert (entry.attempts, entry.last_error, entry.next_try) == (0, None, entry.queued_at)
        assert hub.connections == 0

    def test_no_is_75_and_dead_letter(self, tmp_path: Path) -> None:
        with pytest.raises(TempFailError) as caught:
            send(tmp_path, policy_config(tmp_path, None, Queue="no"))
        assert caught.value.exit_code == os.EX_TEMPFAIL
        assert caught.value.saved_to == str(tmp_path / "dead.letter")
        assert entries(tmp_path) == []

    def test_partial_4xx_queues_only_the_refused(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        hub = mailhub(rcpt_faults={"later@example.com": (451, "4.2.0 greylisted")})
        result = send(
            tmp_path,
            policy_config(tmp_path, hub),
            recipients=("alice@example.com", "later@example.com"),
        )
        assert result.recipients == ("alice@example.com",)
        assert result.queued_for == ("later@example.com",)
        (entry,) = entries(tmp_path)
        assert entry.recipients == ("later@example.com",)
        assert entry.next_try > entry.queued_at  # greylisting: back off
        assert [m.rcpt_tos for m in hub.messages] == [["alice@example.com"]]
        assert dead_letters(tmp_path) == []

    def test_partial_mixed_queues_4xx_and_fails_for_5xx(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        hub = mailhub(
            rcpt_faults={
                "later@example.com": (451, "4.2.0 greylisted"),
                "never@example.com": (550, "5.1.1 unknown"),
            }
        )
        with pytest.raises(RelayError) as caught:
            send(
                tmp_path,
                policy_config(tmp_path, hub),
                recipients=("alice@example.com", "later@example.com", "never@example.com"),
            )
        err = caught.value
        assert err.exit_code == os.EX_NOUSER
        (entry,) = entries(tmp_path)
        assert f"later@example.com queued as {entry.id}" in str(err)
        assert "<never@example.com>: 550 5.1.1 unknown" in str(err)
        assert entry.recipients == ("later@example.com",)
        assert len(dead_letters(tmp_path)) == 1

    def test_unusable_queue_is_73_and_dead_letter(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        config = policy_config(tmp_path, None, QueueDir=tmp_path / "file" / "queue")
        with pytest.raises(CantCreateError) as caught:
            send(tmp_path, config)
        err = caught.value
        assert err.exit_code == os.EX_CANTCREAT
        assert err.saved_to == str(tmp_path / "dead.letter")
        assert "Connection refused" in str(err)  # both problems named
        assert "queue" in str(err)
        (kept,) = dead_letters(tmp_path)
        assert kept["Subject"] == "hello"

    def test_full_queue_is_74_and_dead_letter(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = policy_config(tmp_path, None, Queue="always")
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            if "/queue/tmp/" in os.readlink(f"/proc/self/fd/{fd}"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(IOFailure) as caught:
            send(tmp_path, config)
        monkeypatch.undo()
        assert caught.value.exit_code == os.EX_IOERR
        assert caught.value.saved_to == str(tmp_path / "dead.letter")
        assert entries(tmp_path) == []
        assert len(dead_letters(tmp_path)) == 1

    def test_the_secret_is_never_stored(self, tmp_path: Path) -> None:
        config = policy_config(
            tmp_path, None, AuthUser="alice", AuthPass=f'"{PASSWORD}"', AuthOverPlaintext="yes"
        )
        send(tmp_path, config, password=PASSWORD)
        stored = b"".join(p.read_bytes() for p in (tmp_path / "queue").rglob("*") if p.is_file())
        assert stored
        assert PASSWORD.encode() not in stored
        assert b"alice" not in stored.replace(b"alice@example.com", b"")


def _exited_pid() -> int:
    """The pid of a process that has exited and been reaped (and not reused yet)."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
