"""The pickup: messages users left in the offline drop, into the system queue.

When no submission service answers, a user's client commits the message into the offline
drop directory (`/var/spool/mailx-relay/offline`, mode 1733 like a mail spool; moved by
`RELAY_OFFLINE`): it writes `tmp.<unique>` (O_EXCL, 0600), the request line of
`relay.handoff` and the message, fsyncs, renames it to `msg.<unique>` and fsyncs the
directory. Root's `mailq --flush` (the shipped timer) and the service at start call
`pickup`, which takes each `msg.*` entry in turn and trusts nothing in it:

1. open it with O_NOFOLLOW|O_NONBLOCK (a symlink is refused, a FIFO cannot hang us);
   fstat: a regular file, one link (a hard link may point at someone else's file), no
   larger than the limit (the configuration's maximum message size if it has one, else
   64 MiB);
2. lock it (flock, without waiting: two pickups never take the same file) and check
   that the name still is that file;
3. read the request line (`relay.handoff.decode`): its `claimed_uid` must be the file's
   owner as the kernel reports it; the owner (not the request) is the sender;
4. prepend `Received: by HOST (mailx-relay, from userid UID); DATE` and resolve sender
   and recipients exactly as for an in-process submission by that user (aliases,
   `root=`, `FromLineOverride`, revaliases, refusal of local names);
5. commit it into the system queue as an entry carrying the sender's `uid` and its
   origin (drop file name and inode), the flush that follows sends it (`Queue=always`);
6. only then unlink the drop file and fsync the directory.

A crash between 5 and 6 leaves the file in the drop *and* its entry in the queue; the
next pickup finds the entry's origin and removes the file instead of queueing it again,
so a message is queued exactly once. (The one remaining window: the entry was already
delivered and removed by a concurrent flush before that next pickup; then it is sent
twice. mailq(1) says so.)

Anything that fails a check is moved aside to `<queue dir>/corrupt/offline.<name>` (or
removed if it cannot be moved) and reported, never sent. A message whose recipients are
refused (a local name with no alias) is kept in the spool's dead-letter area with the
reason (`mailq --dead`), never sent. `tmp.*` files untouched for an hour belong to a
client that died and are removed.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from relay import handoff
from relay.errors import CantCreateError, DataError, NoUserError, RelayError, UsageError
from relay.records import Record

# Annotations only (`typing` at run time is start-up cost: docs/architecture.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.config import Config
    from relay.queue import Queue

DEFAULT_MAX_SIZE = handoff.DEFAULT_MAX_MESSAGE
#: A `tmp.*` file untouched for this long belongs to a client that died.
TMP_MAX_AGE = 3600.0
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Picked(Record):
    """A drop file now in the system queue (or found there already, `duplicate`)."""

    __slots__ = ("duplicate", "name", "queue_id", "uid")

    def __init__(self, name: str, uid: int, queue_id: str, duplicate: bool = False) -> None:
        self.name = name
        self.uid = uid
        self.queue_id = queue_id
        self.duplicate = duplicate


class Problem(Record):
    """A drop file not queued: set aside (`moved_to`), or refused and kept (`kept_in`)."""

    __slots__ = ("kept_in", "moved_to", "name", "reason", "uid")

    def __init__(
        self,
        name: str,
        reason: str,
        *,
        uid: int | None = None,
        moved_to: str | None = None,
        kept_in: str | None = None,
    ) -> None:
        self.name = name
        self.reason = reason
        self.uid = uid
        self.moved_to = moved_to
        self.kept_in = kept_in


class PickupReport:
    """What one pickup did; `lines` are the one-line reports for stderr."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.queued: list[Picked] = []
        #: Files failing a check: moved to the queue's corrupt/ (or removed).
        self.corrupt: list[Problem] = []
        #: Messages whose recipients were refused: in the spool's dead area.
        self.refused: list[Problem] = []
        #: Files another pickup is handling right now.
        self.busy: list[str] = []
        self.removed_tmp: list[str] = []
        #: Local failures (queue or spool unwritable): the drop file stays for next time.
        self.errors: list[RelayError] = []

    def lines(self) -> list[str]:
        out = []
        for bad in self.corrupt:
            where = f"moved to {bad.moved_to}" if bad.moved_to else "removed"
            out.append(
                f"offline drop {os.path.join(self.directory, bad.name)}: {bad.reason}; "
                f"{where}, not sent"
            )
        for refused in self.refused:
            out.append(
                f"offline drop {refused.name} (uid {refused.uid}): {refused.reason}; "
                f"not sent, message kept in {refused.kept_in}"
            )
        out.extend(
            f"offline drop: {err}; left in the drop for the next pickup" for err in self.errors
        )
        return out

    def exit_code(self) -> int:
        if self.errors:
            return self.errors[0].exit_code
        if self.corrupt or self.refused:
            return os.EX_DATAERR
        return os.EX_OK


def pickup(
    config: Config,
    directory: str | None = None,
    queue_dir: str | None = None,
    *,
    max_size: int | None = None,
    hostname: str | None = None,
    now: float | None = None,
    after_commit: Callable[[str], None] | None = None,
) -> PickupReport:
    """Move every acceptable `msg.*` file of the offline drop into the system queue.

    `directory` defaults to `relay.offline.default_dir()`, `queue_dir` to the configured queue (the
    system queue for root). A missing drop directory is an empty one. Raises
    CantCreateError (73) when the drop directory or the queue is unsafe to use; every
    per-file outcome is in the report. `after_commit` is called with the file name
    between the commit and the unlink (tests kill the process there).
    """
    from relay.offline import default_dir
    from relay.queue import Queue
    from relay.queue import queue_dir as configured_queue

    directory = directory or default_dir()
    report = PickupReport(directory)
    try:
        dir_fd = os.open(directory, _DIR_FLAGS)
    except FileNotFoundError:
        return report
    except OSError as err:
        raise CantCreateError(
            f"cannot open the offline drop: {err.strerror or err}", path=directory
        ) from None
    try:
        _check_directory(dir_fd, directory)
        names = sorted(os.listdir(dir_fd))
        when = time.time() if now is None else now
        report.removed_tmp = _clean_tmp(dir_fd, names, when)
        wanted = [name for name in names if name.startswith("msg.")]
        if not wanted:
            return report
        with Queue.open(queue_dir or configured_queue(config.queue_dir)) as spool:
            run = _Pickup(config, dir_fd, spool, report, max_size, hostname, after_commit)
            for name in wanted:
                run.one(name)
    finally:
        os.close(dir_fd)
    return report


def _check_directory(fd: int, path: str) -> None:
    """Ours, and not a place where others could replace each other's files."""
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        raise CantCreateError(
            f"the offline drop belongs to uid {info.st_uid}, not to us; refusing to pick up",
            path=path,
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise CantCreateError(
            f"the offline drop is writable by others without the sticky bit (mode "
            f"{stat.S_IMODE(info.st_mode):o}); fix with: chmod 1733 {path}",
            path=path,
        )


def _clean_tmp(dir_fd: int, names: list[str], now: float) -> list[str]:
    removed = []
    for name in names:
        if not name.startswith("tmp."):
            continue
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if now - info.st_mtime < TMP_MAX_AGE or stat.S_ISDIR(info.st_mode):
                continue
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            continue  # gone already, or odd: harmless, and not ours to guess about
        removed.append(name)
    return removed


class _SetAside(Exception):
    """The file failed a check: move it aside with this reason."""


class _Gone(Exception):
    """The file left (another pickup took it) or another pickup holds it."""


class _Pickup:
    def __init__(
        self,
        config: Config,
        dir_fd: int,
        spool: Queue,
        report: PickupReport,
        max_size: int | None,
        hostname: str | None,
        after_commit: Callable[[str], None] | None,
    ) -> None:
        self.config = config
        self.dir_fd = dir_fd
        self.spool = spool
        self.report = report
        self.limit = max_size or handoff.configured_limit(config) or DEFAULT_MAX_SIZE
        self.hostname = hostname or config.hostname or _hostname()
        self.after_commit = after_commit
        # Origins of what is queued: a drop file found here was committed before a crash.
        # Streamed (`Queue.entries`): only the origins are held, not every entry.
        from relay.queue import Entry

        self.known = {
            item.origin: item.id
            for item in spool.entries()
            if isinstance(item, Entry) and item.origin is not None
        }

    def one(self, name: str) -> None:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return
        except OSError as err:
            reason = (
                "a symlink (refusing to follow it)"
                if err.errno == errno.ELOOP
                else f"cannot open it: {err.strerror or err}"
            )
            self._aside(name, reason)
            return
        try:
            self._take(name, fd)
        except _SetAside as why:
            self._aside(name, str(why))
        except _Gone:
            pass
        except RelayError as err:
            self.report.errors.append(err)
        except Exception as err:  # one hostile file must not stop the pickup of the rest
            self._aside(name, f"could not be read as a message ({type(err).__name__})")
        finally:
            os.close(fd)

    def _take(self, name: str, fd: int) -> None:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _SetAside(f"not a regular file ({_kind(info.st_mode)})")
        if info.st_nlink != 1:
            raise _SetAside(f"has {info.st_nlink} hard links (a drop file has exactly one)")
        if info.st_size > self.limit:
            raise _SetAside(f"too large ({info.st_size} bytes; at most {self.limit})")
        self._lock(name, fd, info)
        origin = f"{name}:{info.st_ino}"
        if origin in self.known:
            # Committed by a pickup that died before it could unlink: queued once only.
            self._unlink(name)
            self.report.queued.append(Picked(name, info.st_uid, self.known[origin], True))
            return
        data = _read_bounded(fd, self.limit)
        uid = info.st_uid
        cut = data.find(b"\n", 0, handoff.MAX_REQUEST_LINE + 1)
        if cut < 0:
            raise _SetAside("no request line (empty, truncated or not a drop file)")
        try:
            request = handoff.decode(data[:cut])
        except DataError as err:
            raise _SetAside(str(err)) from None
        if request.claimed_uid != uid:
            raise _SetAside(
                f"the request claims uid {request.claimed_uid} but the file belongs to uid {uid}"
            )
        message = data[cut + 1 :]
        if not message.strip():
            raise _SetAside("no message after the request line")
        raw = self._received(uid, message) + message
        self._queue(name, uid, origin, request, raw)

    def _lock(self, name: str, fd: int, info: os.stat_result) -> None:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.report.busy.append(name)
            raise _Gone() from None
        # Granted: but the pickup before us may have removed (or replaced) it meanwhile.
        try:
            here = os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise _Gone() from None
        if (here.st_ino, here.st_dev) != (info.st_ino, info.st_dev):
            raise _Gone()

    def _received(self, uid: int, message: bytes) -> bytes:
        return handoff.trace_header(self.hostname, uid, handoff.line_ending(message[:4096]))

    def _queue(
        self, name: str, uid: int, origin: str, request: handoff.Request, raw: bytes
    ) -> None:
        from relay import deadletter, submission
        from relay.envelope import identity_of

        who = identity_of(uid)
        try:
            prepared = submission.prepare(raw, self.config, request.envelope(who))
        except (DataError, UsageError, NoUserError) as refused:
            # What an in-process submission by this user would have refused (a local
            # name with no alias, no recipient, a bad address): never sent, kept.
            from relay.envelope import default_sender_address

            sender, _why = default_sender_address(self.config, who)
            kept = deadletter.save_to_spool(raw, sender, self.spool.path, uid, str(refused))
            self._unlink(name)
            self.report.refused.append(Problem(name, str(refused), uid=uid, kept_in=kept))
            return
        hub = prepared.sender.mailhub
        hostport = submission.hostport(hub) if hub is not None else None
        entry = self.spool.enqueue(
            submission.stored_pieces(prepared),
            sender=prepared.sender.envelope,
            recipients=prepared.recipients,
            message_id=prepared.message_id,
            mailhub=hostport,
            uid=uid,
            origin=origin,
        )
        self.known[origin] = entry.id
        if self.after_commit is not None:
            self.after_commit(name)
        self._unlink(name)
        self.report.queued.append(Picked(name, uid, entry.id))

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.dir_fd)
            os.fsync(self.dir_fd)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise CantCreateError(
                f"cannot remove {name} after queueing it: {err.strerror or err} "
                "(the next pickup recognises it and will not queue it twice)",
                path=self.report.directory,
            ) from None

    def _aside(self, name: str, reason: str) -> None:
        moved = _move_aside(self.dir_fd, name, self.spool)
        self.report.corrupt.append(Problem(name, reason, moved_to=moved))


def _move_aside(dir_fd: int, name: str, spool: Queue) -> str | None:
    """Rename into `<queue>/corrupt/offline.<name>`; remove it if that fails."""
    from relay.queue import SET_ASIDE_PREFIX

    corrupt = os.path.join(spool.path, "corrupt")
    for attempt in range(100):
        target = f"{SET_ASIDE_PREFIX}{name}" + (f".{attempt}" if attempt else "")
        try:
            if os.path.lexists(os.path.join(corrupt, target)):
                continue
            os.rename(name, os.path.join(corrupt, target), src_dir_fd=dir_fd)
            os.fsync(dir_fd)
            return os.path.join(corrupt, target)
        except OSError:
            break
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            import shutil

            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
    return None


def _read_bounded(fd: int, limit: int) -> bytes:
    """The whole file, refusing one that grew past the limit after the fstat."""
    chunks = []
    total = 0
    while chunk := os.read(fd, 1 << 20):
        total += len(chunk)
        if total > limit:
            raise _SetAside(f"too large (more than {limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "not a file"


def _hostname() -> str:
    import socket

    return socket.getfqdn() or socket.gethostname() or "localhost"
