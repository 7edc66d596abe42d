"""The offline drop: where an unprivileged client leaves a message when no service answers.

The directory (`/var/spool/mailx-relay/offline`, moved by `$RELAY_OFFLINE`) is mode 1733
and owned by root, like a mail spool: every user may create files there, nobody may list
it or remove another user's file. A drop file holds exactly what would have gone over the
service's socket (`relay.handoff`: the request line, then the message). The writer's side
of the protocol, so that a reader never sees half a file:

1. create `tmp.<unique>` with O_CREAT|O_EXCL|O_NOFOLLOW (never through a planted link),
   mode 0600 (only its owner and the root pickup read it);
2. write the request line and the message, fsync;
3. rename it to `msg.<unique>`, fsync the directory (or, for a user who may not open
   it, the file once more: see `_sync_dir`).

`<unique>` is `<unix time in ns>.<pid>.<16 hex random>`. The pickup (root's
`mailq --flush` and the service at start) takes only `msg.*` files, and the sender is the
file's owner as the kernel reports it; see mailx-relayd(8).

Imports are light: the unprivileged `sendmail` writes drop files on its send path.
"""

from __future__ import annotations

import errno
import os
import time

from relay.errors import CantCreateError, ConfigError, IOFailure

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Mapping

    from relay.handoff import Request
    from relay.message import Spooled

DEFAULT_DIR = "/var/spool/mailx-relay/offline"
#: Mode of the directory: everyone may drop, nobody may list or remove others' files.
DIR_MODE = 0o1733

# errno values that mean "this host has no usable drop directory" (not installed, not
# writable for us), as opposed to a disk that failed while we wrote.
_UNUSABLE = frozenset({errno.ENOENT, errno.EACCES, errno.ENOTDIR, errno.EROFS, errno.EPERM})
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def default_dir(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("RELAY_OFFLINE") or DEFAULT_DIR


def unique() -> str:
    return f"{time.time_ns()}.{os.getpid()}.{os.urandom(8).hex()}"


def drop(request: Request, raw: bytes | Spooled, directory: str) -> str:
    """Commit `request` + `raw` durably as `<directory>/msg.<unique>`; returns its path.

    Raises ConfigError (78, its `errno` set) when the directory is missing or not
    writable for us, IOFailure (74) when the disk fails while writing, CantCreateError
    (73) otherwise; nothing is left behind in any of those cases.
    """
    from relay.handoff import encode

    line = encode(request)
    name = unique()
    tmp = f"tmp.{name}"
    try:
        # O_PATH: the directory is not readable for its users (1733), only searchable.
        dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise _error(err, directory) from None
    fd = -1
    try:
        try:
            fd = os.open(
                tmp,
                os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
        except OSError as err:
            raise _error(err, directory) from None
        try:
            _write(fd, line)
            if isinstance(raw, bytes):
                _write(fd, raw)
            else:
                for block in raw.blocks():
                    _write(fd, block)
            os.fsync(fd)
            os.rename(tmp, f"msg.{name}", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as err:
            _unlink(tmp, dir_fd)
            raise _error(err, directory) from None
        try:
            _sync_dir(directory, fd)
        except OSError as err:  # renamed, but maybe not durable: the caller keeps it
            _unlink(f"msg.{name}", dir_fd)
            raise _error(err, directory) from None
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(dir_fd)
    return os.path.join(directory, f"msg.{name}")


def _sync_dir(directory: str, file_fd: int) -> None:
    """Make the rename durable. A user may not open the 1733 directory to fsync it; then
    fsync the file again: on journaling filesystems (ext4, xfs) that commits the journal,
    which holds the rename made before it."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        os.fsync(file_fd)
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:  # already gone, or the directory broke: the caller reports the error
        return


def _error(err: OSError, directory: str) -> ConfigError | IOFailure | CantCreateError:
    text = err.strerror or str(err)
    if err.errno in _UNUSABLE:
        failure = ConfigError(f"offline drop directory: {text}", path=directory)
        failure.errno = err.errno
        return failure
    if err.errno in _FULL:
        return IOFailure(f"cannot write to the offline drop: {text}", path=directory)
    return CantCreateError(f"cannot create a file in the offline drop: {text}", path=directory)
