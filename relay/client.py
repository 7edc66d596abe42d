"""The client side of the submission service: how a user who cannot read the configuration
sends anyway.

`sendmail` and `mail` come here only when loading the configuration failed for lack of
permission (`needs_service`). The message goes to `mailx-relayd` over its Unix socket
(`/run/mailx-relay/submit.sock`, moved by `$RELAY_SOCKET`) in `relay.handoff`'s format;
the service answers with one JSON line, `{"status": N, "lines": [...]}` (and, with -v, a
`"transcript"`), and we print what it says: the same exit status and text root sees
in-process. On any failure the message is kept here, in the user's own dead.letter: the
service never writes into a home.

When no service answers (no socket, nobody listening), the message goes into the offline
drop (`relay.offline`) and we exit 0: it is durably queued for the system relay. With
neither, exit 78 and the message kept, naming the fix.

Lean on purpose: an unprivileged `sendmail` imports socket and json here, never email or
ssl (the service does the parsing).
"""

from __future__ import annotations

import errno
import os
import sys

from relay.entry import say
from relay.errors import ConfigError, DataError, RelayError, TempFailError

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    import _socket
    from collections.abc import Mapping
    from email.message import EmailMessage
    from typing import Any

    from relay.handoff import Request
    from relay.message import Spooled

DEFAULT_SOCKET = "/run/mailx-relay/submit.sock"
CONNECT_TIMEOUT = 5.0
#: How long to wait for the answer: the service may try several mailhubs, each with the
#: configured Timeout, before it queues; a dead service closes the socket at once.
ANSWER_TIMEOUT = 900.0
MAX_ANSWER = 16 * 1024 * 1024
CHUNK = 1 << 16

FIX = "start mailx-relayd (systemctl enable --now mailx-relayd.socket) or run make install"

# connect() errors that mean "no service here" (so the offline drop is the way).
_NOBODY = frozenset(
    {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR, errno.ENOTSOCK, errno.EPROTOTYPE}
)


def needs_service(err: RelayError) -> bool:
    """True when `err` is the configuration being unreadable for lack of permission:
    then, and only then, the message goes to the system relay."""
    return isinstance(err, ConfigError) and err.errno in (errno.EACCES, errno.EPERM)


def socket_path(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("RELAY_SOCKET") or DEFAULT_SOCKET


class NoAnswer(Exception):
    """No service listens on the socket."""


def hand_off(
    request: Request,
    raw: bytes | Spooled | EmailMessage,
    *,
    prog: str,
    dead_letter: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Submit through the service (or the offline drop); print its lines; return the status.

    On a non-zero status the message is appended to `dead_letter` (default `$DEAD` or
    `~/dead.letter`) and the last line says so.
    """
    if request.claimed_uid == -1:
        # The effective uid: the one the kernel reports to the service and gives the
        # drop file (a real uid that differs would set the file aside as forged).
        request.claimed_uid = os.geteuid()
    if not isinstance(raw, bytes) and not hasattr(raw, "blocks"):
        from email.policy import SMTP

        raw = raw.as_bytes(policy=SMTP)
    data: bytes | Spooled = raw  # type: ignore[assignment]
    where = socket_path(environ)
    try:
        try:
            status, lines, transcript = _submit(request, data, where)
        except NoAnswer:
            path = _drop(request, data, where, environ)
            say(
                prog,
                f"queued for the system relay in {path} (the submission service is not running)",
            )
            return os.EX_OK
    except RelayError as err:
        status, lines, transcript = err.exit_code, [str(err)], ""
    if transcript:
        sys.stderr.write(transcript)
    if status != os.EX_OK:
        status, lines = _keep(status, lines, data, dead_letter)
    for line in lines:
        say(prog, line)
    return status


def _drop(
    request: Request, raw: bytes | Spooled, where: str, environ: Mapping[str, str] | None
) -> str:
    from relay import offline
    from relay.handoff import DEFAULT_MAX_MESSAGE

    size = len(raw) if isinstance(raw, bytes) else raw.size
    if size > DEFAULT_MAX_MESSAGE:  # the pickup would set it aside, out of the user's sight
        raise DataError(
            f"message too large for the offline drop ({size} bytes; at most "
            f"{DEFAULT_MAX_MESSAGE}) and no submission service answers on {where}"
        )
    directory = offline.default_dir(environ)
    try:
        return offline.drop(request, raw, directory)
    except ConfigError as err:
        # Nothing installed (or not for us): say what is missing and how to fix it.
        raise ConfigError(
            f"cannot send: this user may not read the configuration, no submission service "
            f"answers on {where} and the offline drop {directory} is not usable "
            f"({err.message.rsplit(': ', 1)[-1]}); {FIX}"
        ) from None


def _submit(request: Request, raw: bytes | Spooled, path: str) -> tuple[int, list[str], str]:
    """One exchange with the service: (status, lines, transcript). Raises NoAnswer when
    nobody listens, TempFailError when the service went away before answering."""
    # `_socket`, the C module under `socket`: `socket`'s import converts every constant
    # into an IntEnum (~10 ms), and a Unix socket needs none of what it adds.
    import _socket

    from relay.handoff import encode

    line = encode(request)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except TimeoutError:
            raise NoAnswer() from None
        except OSError as err:
            if err.errno in _NOBODY:
                raise NoAnswer() from None
            if err.errno == errno.EACCES:  # a socket we may not use: not our service
                raise ConfigError(
                    f"cannot connect to the submission service: {err.strerror}", path=path
                ) from None
            raise _lost(path, err.strerror or str(err)) from None
        sock.settimeout(ANSWER_TIMEOUT)
        try:
            sock.sendall(line)
            if isinstance(raw, bytes):
                sock.sendall(raw)
            else:
                for block in raw.blocks():
                    sock.sendall(block)
            sock.shutdown(_socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the service stopped reading (a refusal): its answer says why
        except OSError as err:
            raise _lost(path, err.strerror or str(err)) from None
        answer = _read_answer(sock, path)
    finally:
        sock.close()
    return _parse_answer(answer, path)


def _read_answer(sock: _socket.socket, path: str) -> bytes:
    parts: list[bytes] = []
    size = 0
    try:
        while size <= MAX_ANSWER:
            block = sock.recv(CHUNK)
            if not block:
                break
            parts.append(block)
            size += len(block)
            if block.endswith(b"\n"):
                break
    except OSError as err:
        raise _lost(path, err.strerror or str(err)) from None
    return b"".join(parts)


def _parse_answer(answer: bytes, path: str) -> tuple[int, list[str], str]:
    from relay.wirejson import loads  # not `json`: see relay/wirejson.py

    if not answer:
        raise _lost(path, "it closed the connection without answering")
    try:
        data = loads(answer)
        status = data["status"]
        lines = data["lines"]
        transcript = data.get("transcript", "")
    except (ValueError, KeyError, TypeError):
        raise _lost(path, "it sent an answer that is not one") from None
    if (
        not isinstance(status, int)
        or not 0 <= status < 256
        or not isinstance(lines, list)
        or not all(isinstance(item, str) for item in lines)
        or not isinstance(transcript, str)
    ):
        raise _lost(path, "it sent an answer that is not one")
    return status, lines, transcript


def _lost(path: str, why: str) -> TempFailError:
    # The service may or may not have sent the message by now: keeping it (and saying
    # so) is the answer that never loses it; dropping it offline could send it twice.
    return TempFailError(f"the submission service did not answer: {why}", path=path)


def _keep(
    status: int, lines: list[str], raw: bytes | Spooled, dead_letter: str | None
) -> tuple[int, list[str]]:
    from relay import deadletter
    from relay.envelope import identity_of

    lines = lines or [f"the submission service failed (status {status})"]
    try:
        saved = deadletter.save(raw, identity_of(os.getuid()).login, dead_letter)
    except RelayError as failed:
        lines[-1] += f"; and the message could not be kept: {failed}"
        return failed.exit_code, lines
    lines[-1] += f"; message kept in {saved}"
    return status, lines


#: A listing is a few sidecars per message the user has queued; this bounds a broken one.
MAX_LISTING = 16 << 20


def ask_listing(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The service's answer to `handoff.LIST_LINE` for this user: {"queue": path,
    "entries": [sidecar dicts], "dead": [dicts]}; None when no service answers (or it
    answers nonsense: the caller then says it cannot list, never invents an empty list)."""
    import json
    import socket

    from relay.handoff import LIST_LINE

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(socket_path(environ))
        sock.settimeout(ANSWER_TIMEOUT)
        sock.sendall(LIST_LINE + b"\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while block := sock.recv(65536):
            data += block
            if len(data) > MAX_LISTING:
                return None
        answer = json.loads(data.decode("ascii"))
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    if not isinstance(answer, dict) or not isinstance(answer.get("entries"), list):
        return None
    return answer
