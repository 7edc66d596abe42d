"""dead.letter: where a message goes when it can be neither delivered nor queued.

The whole message, headers included (ssmtp kept only the unread rest of stdin), appended
in mbox format (mboxrd `From ` quoting, RFC 4155) to `$DEAD` or `~/dead.letter`. The file
is created 0600, opened with O_NOFOLLOW so a planted symlink cannot redirect it, must be a
regular file owned by us, and is locked with `fcntl` while we append.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping

from relay.errors import CantCreateError, IOFailure

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


def default_path(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get("DEAD"):
        return env["DEAD"]
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, "dead.letter")


def mbox_entry(message: bytes, sender: str, when: float | None = None) -> bytes:
    """One mboxrd entry: `From ` line, the message with LF line ends, a blank line."""
    stamp = time.asctime(time.gmtime(when if when is not None else time.time()))
    text = message.replace(b"\r\n", b"\n")
    if not text.endswith(b"\n"):
        text += b"\n"
    envelope = (sender or "MAILER-DAEMON").replace(" ", "_")
    return f"From {envelope} {stamp}\n".encode() + _FROM_LINE.sub(rb">\1", text) + b"\n"


def save(message: bytes, sender: str, path: str | None = None, what: str = "dead.letter") -> str:
    """Append the message to an mbox (dead.letter unless `what` names another, such as
    `mail`'s record file) and return the path; raises 73/74 on failure."""
    path = path or default_path()
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as err:
        raise CantCreateError(
            f"cannot open {what}: {err.strerror or err}"
            + (" (it is a symlink; refusing to follow it)" if err.errno == 40 else ""),
            path=path,
        ) from None
    try:
        import fcntl

        info = os.fstat(fd)
        if not _regular_and_ours(info):
            raise CantCreateError(f"{what} is not a regular file owned by you", path=path)
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o600)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        data = mbox_entry(message, sender)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as err:
        raise IOFailure(f"cannot write {what}: {err.strerror or err}", path=path) from None
    finally:
        os.close(fd)
    return path


def _regular_and_ours(info: os.stat_result) -> bool:
    import stat

    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()
