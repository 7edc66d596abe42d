"""The hand-off format between an unprivileged client and the system relay.

A user who cannot read the configuration hands a message to the system relay in one of
two ways: over the submission service's Unix socket, or, when no service answers, as a
file in the offline drop directory. Both carry the same bytes:

    MAILX-RELAY-SUBMIT 1 {"recipients": [...], "read_recipients": false, ...}\\n
    <the message, exactly as the client read or built it>

The first line is the request: what the client's command line asked for. It is the
caller's *wish*, never their identity: the service takes the uid from `SO_PEERCRED`, the
pickup from the file's owner as the kernel reports it, and both apply the configured
sender policy to that uid. `claimed_uid` exists only so that a pickup can set aside a
file whose owner disagrees with the uid that wrote the request (a file planted by or for
someone else); it grants nothing.

Everything here is bounded, and a malformed request raises `DataError` with one line
saying what is wrong: the service and the pickup read input from users they do not trust.
Imports are light (no `email`, `ssl`, `typing` at run time).
"""

from __future__ import annotations

from relay.errors import DataError
from relay.records import Record

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from relay.config import Config
    from relay.envelope import Envelope, Identity

MAGIC = b"MAILX-RELAY-SUBMIT 1 "
#: The other request, alone on its line: "what of mine is in the system queue and in the
#: spool's dead area?" (`mailq` of a user who may not read the spool). Answered for the
#: peer's uid only.
LIST_LINE = b"MAILX-RELAY-LIST 1"
#: The request line, JSON included; a larger one is refused before it is parsed.
MAX_REQUEST_LINE = 256 * 1024
MAX_RECIPIENTS = 1000
MAX_FIELD = 998  # RFC 5322's line limit: no address or name is longer
#: Largest message the service or the pickup takes when the configuration sets no
#: maximum message size.
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024

_KEYS = frozenset(
    {"recipients", "read_recipients", "envelope_from", "full_name", "verbose", "claimed_uid"}
)


class Request(Record):
    """What a client asks the system relay to do with the message that follows."""

    __slots__ = (
        "claimed_uid",
        "envelope_from",
        "full_name",
        "read_recipients",
        "recipients",
        "verbose",
    )

    def __init__(
        self,
        recipients: tuple[str, ...] = (),
        *,
        read_recipients: bool = False,
        envelope_from: str | None = None,
        full_name: str | None = None,
        verbose: bool = False,
        claimed_uid: int = -1,
    ) -> None:
        self.recipients = recipients
        self.read_recipients = read_recipients
        self.envelope_from = envelope_from
        self.full_name = full_name
        self.verbose = verbose
        self.claimed_uid = claimed_uid

    def envelope(self, sender: Identity) -> Envelope:
        """The envelope as asked, for `sender` as the kernel reported them (never the
        request's `claimed_uid`): what the service and the pickup submit."""
        from relay.envelope import Envelope

        return Envelope(
            self.recipients,
            read_recipients=self.read_recipients,
            envelope_from=self.envelope_from,
            full_name=self.full_name,
            identity=sender,
        )


def encode(request: Request) -> bytes:
    """The request line, newline included."""
    data = {
        "recipients": list(request.recipients),
        "read_recipients": request.read_recipients,
        "envelope_from": request.envelope_from,
        "full_name": request.full_name,
        "verbose": request.verbose,
        "claimed_uid": request.claimed_uid,
    }
    # ASCII with escapes: an argument may hold surrogate escapes of undecodable bytes.
    # `wirejson`, not `json`: the sender's side should not import `re` for one line.
    from relay.wirejson import dumps

    line = MAGIC + dumps(data).encode("ascii") + b"\n"
    if len(line) > MAX_REQUEST_LINE:
        raise DataError(f"the request is too large ({len(line)} bytes; at most {MAX_REQUEST_LINE})")
    return line


def decode(line: bytes) -> Request:
    """Parse one request line (with or without its newline); raises DataError."""
    if len(line) > MAX_REQUEST_LINE:
        raise DataError(f"request line too long ({len(line)} bytes; at most {MAX_REQUEST_LINE})")
    if not line.startswith(MAGIC):
        raise DataError("not a mailx-relay request (bad magic or version)")
    import json  # the receiving side (the service, the pickup): a long-lived process

    try:
        data = json.loads(line[len(MAGIC) :].decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # `[[[[...`: too deep
        raise DataError("malformed request: not ASCII JSON") from None
    if not isinstance(data, dict):
        raise DataError("malformed request: not a JSON object")
    unknown = set(data) - _KEYS
    if unknown:
        raise DataError(f"malformed request: unknown field {sorted(unknown)[0]!r}")
    recipients = data.get("recipients", [])
    if not isinstance(recipients, list) or len(recipients) > MAX_RECIPIENTS:
        raise DataError(f"malformed request: recipients must be a list of at most {MAX_RECIPIENTS}")
    return Request(
        tuple(_text(value, "recipient") for value in recipients),
        read_recipients=_flag(data, "read_recipients"),
        envelope_from=_optional(data, "envelope_from"),
        full_name=_optional(data, "full_name"),
        verbose=_flag(data, "verbose"),
        claimed_uid=_uid(data.get("claimed_uid", -1)),
    )


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
        raise DataError(f"malformed request: a {what} must be a string of 1 to {MAX_FIELD} chars")
    return value


def _optional(data: dict[str, object], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else _text(value, key.replace("_", " "))


def _flag(data: dict[str, object], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise DataError(f"malformed request: {key} must be true or false")
    return value


def _uid(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value < 2**32:
        raise DataError("malformed request: claimed_uid must be a uid")
    return value


# -- what the receiving side does with every handed-off message --------------------------


def configured_limit(config: Config) -> int | None:
    """The configuration's maximum message size, when it sets one."""
    limit = config.max_message_size
    return limit if limit is not None and limit > 0 else None


def line_ending(head: bytes) -> bytes:
    """The line ending the message uses (its first line's), so that what we add matches."""
    end = head.find(b"\n")
    return b"\r\n" if end > 0 and head[end - 1 : end] == b"\r" else b"\n"


def trace_header(host: str, uid: int, linesep: bytes) -> bytes:
    """`Received: by HOST (mailx-relay, from userid UID);` and the date, as Postfix writes
    it for a local submission: a forged From: can be traced to its account. The service
    and the pickup put it first on every message a user handed over."""
    from relay.message import format_date

    return (
        f"Received: by {host} (mailx-relay, from userid {uid});".encode("ascii", "replace")
        + linesep
        + b"\t"
        + format_date().encode("ascii")
        + linesep
    )
