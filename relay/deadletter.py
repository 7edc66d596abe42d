"""dead.letter: where a message goes when it can be neither delivered nor queued.

The whole message, headers included (ssmtp kept only the unread rest of stdin), appended
in mbox format (mboxrd `From ` quoting, RFC 4155) to the sender's dead.letter:

- `$DEAD` when set;
- else `$HOME/dead.letter` when `$HOME` is a directory owned by the real uid (a cron job
  or daemon started with another user's `HOME=/root` must not write, or try to write,
  into that home);
- else `dead.letter` in the real uid's passwd home.

The file is created 0600, opened with O_NOFOLLOW (a planted symlink cannot redirect it)
and O_NONBLOCK (a FIFO planted in its place cannot hang us), must be a regular file
owned by us, and is locked with `fcntl` while we append.

When that fails (no home, a home that is not ours, no passwd entry, unwritable, a FIFO),
and only when we run as root (the mailx-relayd service, root's `mailq --flush` picking up
the offline drop, root's own `sendmail`), the message is kept in the system spool's
dead-letter area instead: `<queue dir>/dead/`, 0700 root, one file per message named
`<id>.<owner uid>`, read by root's `mailq --dead` (mailq(1)). Otherwise the error says
that the message could not be kept (73 or 74): the only honest outcome.

Memory stays flat in the message size: a big message (a `relay.message.Spooled` copy of
stdin, a queue entry's file) is written in blocks, the mboxrd quoting done line by line
with the unfinished last line of each block carried into the next.

The file size limit (`ulimit -f`): Python starts with SIGXFSZ ignored, so a write past
it fails with EFBIG instead of killing us; that is an I/O failure (74), and the partial
entry is cut off again so the mbox stays readable.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from relay.errors import CantCreateError, IOFailure, RelayError

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from typing import Protocol

    class Blocks(Protocol):
        """A message too big to hold, read in blocks as often as needed (a
        `relay.message.Spooled`, a queue entry's file)."""

        def blocks(self) -> Iterator[bytes]: ...

    Source = bytes | Blocks

#: The spool's dead-letter area, inside the queue directory.
DEAD_DIR = "dead"
#: First line of every message kept in the spool's dead area: whose it is and why.
OWNER_HEADER = "X-Mailx-Relay-Owner"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_IO_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def default_path(environ: Mapping[str, str] | None = None, uid: int | None = None) -> str | None:
    """The sender's dead.letter (module doc); None when the real uid has no usable home."""
    env = os.environ if environ is None else environ
    if env.get("DEAD"):
        return env["DEAD"]
    home = own_home(env, os.getuid() if uid is None else uid)
    return os.path.join(home, "dead.letter") if home else None


def own_home(environ: Mapping[str, str], uid: int) -> str | None:
    """`$HOME` when it is a directory owned by `uid`, else the passwd home, else None."""
    home = environ.get("HOME")
    if home and os.path.isabs(home):
        try:
            info = os.stat(home)
        except OSError:
            info = None
        if info is not None and stat.S_ISDIR(info.st_mode) and info.st_uid == uid:
            return home
    import pwd

    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return None
    return entry.pw_dir if entry.pw_dir and os.path.isabs(entry.pw_dir) else None


#: A line longer than this is written in pieces (its start decided the quoting already).
_LONG_LINE = 1 << 16


def mbox_entry(message: bytes, sender: str, when: float | None = None) -> bytes:
    """One mboxrd entry: `From ` line, the message with LF line ends, a blank line."""
    return b"".join(mbox_chunks((message,), sender, when))


def mbox_chunks(
    message: Iterable[bytes], sender: str, when: float | None = None
) -> Iterator[bytes]:
    """`mbox_entry` in pieces, for a message given in blocks of any size.

    Only whole lines are quoted and converted (CRLF to LF), so a `From ` or a CRLF split
    across two blocks is seen whole: the unfinished last line is carried to the next
    block, except a line longer than `_LONG_LINE`, which goes out in pieces once its
    start (all the quoting looks at) has been seen.
    """
    stamp = time.asctime(time.gmtime(when if when is not None else time.time()))
    envelope = (sender or "MAILER-DAEMON").replace(" ", "_")
    yield f"From {envelope} {stamp}\n".encode()
    carry = b""
    at_line_start = True  # whether `carry` starts a line
    last = b""  # the last octet written: the entry ends with an empty line after it
    for block in message:
        data = carry + block
        cut = data.rfind(b"\n") + 1
        whole, carry = data[:cut], data[cut:]
        if whole:
            out = _quote(whole, at_line_start)
            at_line_start = True
            yield out
            last = out[-1:]
        if len(carry) > _LONG_LINE:
            # Keep a trailing CR: its LF may start the next block.
            keep = 1 if carry.endswith(b"\r") else 0
            piece, carry = carry[: len(carry) - keep], carry[len(carry) - keep :]
            yield _quote(piece, at_line_start)
            at_line_start = False
            last = piece[-1:]
    if carry:
        yield _quote(carry, at_line_start)
        last = carry[-1:]
    yield b"\n\n" if last != b"\n" else b"\n"


def _quote(text: bytes, at_line_start: bool) -> bytes:
    """mboxrd quoting and LF line ends for `text`; its first line is the rest of a line
    already begun (so never quoted) unless `at_line_start`."""
    text = text.replace(b"\r\n", b"\n")
    if at_line_start:
        return quote_from_lines(text)
    first, newline, rest = text.partition(b"\n")
    return first + newline + quote_from_lines(rest)


def quote_from_lines(text: bytes) -> bytes:
    """mboxrd: one more `>` before every line that is `From ` after any `>`s. What
    `re.sub(rb"^(>*From )", rb">\1", text, flags=re.MULTILINE)` does, without `re`,
    which this module (on every `sendmail`'s path) would import for this alone; held to
    that expression by tests/relay/test_scanners.py."""
    if b"From " not in text:
        return text
    lines = text.split(b"\n")
    for index, line in enumerate(lines):
        if line.startswith((b"From ", b">")) and line.lstrip(b">").startswith(b"From "):
            lines[index] = b">" + line
    return b"\n".join(lines)


def _blocks(message: Source) -> Iterable[bytes]:
    return (message,) if isinstance(message, bytes) else message.blocks()


def save(
    message: Source,
    sender: str,
    path: str | None = None,
    what: str = "dead.letter",
    *,
    spool: str | None = None,
    owner: int | None = None,
) -> str:
    """Append the message to an mbox (dead.letter unless `what` names another, such as
    `mail`'s record file) and return the path; raises 73/74 on failure. A big message
    is given as its blocks (`Blocks`: read again if the spool's dead area is tried next).

    For dead.letter, a failure falls back to the spool's dead area when we are root and
    `spool` (the queue directory) is given; `owner` is the uid the message belongs to,
    default the real uid.
    """
    target = path or default_path()
    try:
        if target is None:
            raise CantCreateError(
                "cannot write dead.letter: no home directory of yours to hold it (no passwd home)"
            )
        return _append(message, sender, target, what)
    except RelayError as failed:
        if what != "dead.letter" or spool is None or os.geteuid() != 0:
            raise
        try:
            return save_to_spool(
                message, sender, spool, os.getuid() if owner is None else owner, str(failed)
            )
        except RelayError as also:
            also.message = f"{failed}; and in the spool's dead-letter area: {also.message}"
            also.path = None
            raise also from None


def _append(message: Source, sender: str, path: str, what: str) -> str:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as err:
        why = err.strerror or str(err)
        if err.errno == errno.ELOOP:
            why += " (it is a symlink; refusing to follow it)"
        elif err.errno == errno.ENXIO:
            why = "it is a FIFO or socket, not a file"
        raise CantCreateError(f"cannot open {what}: {why}", path=path) from None
    try:
        import fcntl

        info = os.fstat(fd)
        if not _regular_and_ours(info):
            raise CantCreateError(f"{what} is not a regular file owned by you", path=path)
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o600)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        end = os.fstat(fd).st_size
        try:
            for chunk in mbox_chunks(_blocks(message), sender):
                _write_all(fd, chunk)
            os.fsync(fd)
        except OSError:
            # A half-written entry (disk full, ulimit -f) would glue the next one onto
            # it: cut the mbox back to where it was.
            try:  # noqa: SIM105 (not contextlib: see the module's imports)
                os.ftruncate(fd, end)
            except OSError:
                pass
            raise
    except OSError as err:
        raise _io_error(err, f"cannot write {what}", path) from None
    finally:
        os.close(fd)
    return path


def _io_error(err: OSError, what: str, path: str) -> RelayError:
    why = err.strerror or str(err)
    if err.errno == errno.EFBIG:
        why += " (the file size limit, ulimit -f)"
    if err.errno in _IO_ERRNOS:
        return IOFailure(f"{what}: {why}", path=path)
    return CantCreateError(f"{what}: {why}", path=path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _regular_and_ours(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


# -- the spool's dead-letter area ---------------------------------------------------------


def spool_dir(queue_dir: str | None = None) -> str:
    """`<queue dir>/dead`; the queue directory defaults to the system queue."""
    from relay.queue import SYSTEM_QUEUE_DIR

    return os.path.join(queue_dir or SYSTEM_QUEUE_DIR, DEAD_DIR)


def save_to_spool(
    message: Source, sender: str, queue_dir: str | None, owner: int, reason: str
) -> str:
    """Keep a message in `<queue dir>/dead/<id>.<owner>` (0600, the directory 0700).

    Written under a temporary name, fsynced, renamed, and the directory fsynced: a
    crash leaves either the whole file or a `.tmp` leftover. Raises 73/74.
    """
    from relay.queue import new_id, one_line

    where = spool_dir(queue_dir)
    try:
        for path in (os.path.dirname(where), where):
            try:  # noqa: SIM105 (not contextlib: see the module's imports)
                os.mkdir(path, 0o700)  # the queue directory too: 0700, as relay.queue makes it
            except FileExistsError:
                pass
        dir_fd = os.open(where, _DIR_FLAGS)
    except OSError as err:
        raise _io_error(err, "cannot use the spool's dead-letter area", where) from None
    try:
        info = os.fstat(dir_fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise CantCreateError(
                "the spool's dead-letter area must be owned by us and mode 700", path=where
            )
        head = f"{OWNER_HEADER}: uid={owner}; {one_line(reason)}\r\n"
        data = mbox_chunks(_prefixed(head.encode("utf-8", "surrogateescape"), message), sender)
        name = f"{new_id(time.time())}.{owner}"
        temporary = f".{name}.tmp"
        try:
            fd = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
            try:
                for chunk in data:
                    _write_all(fd, chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
        except OSError as err:
            try:  # noqa: SIM105 (not contextlib: see the module's imports)
                os.unlink(temporary, dir_fd=dir_fd)
            except OSError:
                pass
            raise _io_error(err, "cannot write the spool's dead-letter area", where) from None
    finally:
        os.close(dir_fd)
    return os.path.join(where, name)


def _prefixed(head: bytes, message: Source) -> Iterator[bytes]:
    yield head
    yield from _blocks(message)


class DeadEntry:
    """A message kept in the spool's dead area: file, owner, size, when, why."""

    __slots__ = ("kept_at", "name", "owner", "path", "reason", "size")

    def __init__(
        self, name: str, path: str, owner: int, size: int, kept_at: float, reason: str
    ) -> None:
        self.name = name
        self.path = path
        self.owner = owner
        self.size = size
        self.kept_at = kept_at
        self.reason = reason


def spool_entries(queue_dir: str | None = None, owner: int | None = None) -> list[DeadEntry]:
    """The messages in the spool's dead area (only those of `owner` if given), oldest first.

    Raises PermissionError when we may not read the area (it is root's), and returns an
    empty list when it was never made.
    """
    where = spool_dir(queue_dir)
    try:
        names = sorted(os.listdir(where))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        stem, dot, uid_text = name.rpartition(".")
        if name.startswith(".") or not dot or not uid_text.isdigit() or not stem:
            continue
        uid = int(uid_text)
        if owner is not None and uid != owner:
            continue
        path = os.path.join(where, name)
        try:
            info = os.stat(path, follow_symlinks=False)
            with open(path, "rb") as handle:
                head = handle.read(4096)
        except OSError:
            continue
        found.append(DeadEntry(name, path, uid, info.st_size, info.st_mtime, _reason(head)))
    return found


def _reason(head: bytes) -> str:
    marker = f"\n{OWNER_HEADER}: ".encode()
    start = head.find(marker)
    if start < 0:
        return ""
    line = head[start + len(marker) :].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return line.split("; ", 1)[1] if "; " in line else ""
