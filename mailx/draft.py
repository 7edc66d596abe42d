"""What `mail` was asked to send (`Draft`), and the checks every way of building it shares.

Kept apart from `mailx.compose` (the `email` package's message) and `mailx.plain` (a
simple message written as bytes) so that reading the body and the recipients imports
neither: the parse of an address list is the relay's (`relay.split_recipient_list`,
`relay.classify_recipient`), refused as it refuses.
"""

from __future__ import annotations

from relay import (
    DataError,
    Recipient,
    __version__,
    classify_recipient,
    dedupe_recipients,
    recipient_problem,
    split_recipient_list,
)
from relay.records import Record

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Sequence

#: RFC 5322 section 2.1.1: a line, without its CRLF, is at most 998 octets.
MAX_LINE = 998
#: Bytes file(1) does not count as text: binary content (`mailx.compose` and
#: `mailx.plain` both decide by these).
BINARY_BYTES = bytes([*range(0x00, 0x07), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
#: Control bytes legal in 7bit data but safer encoded (everything but TAB, CR, LF).
CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


#: RFC 5321 section 4.5.3.1.1 and 4.5.3.1.2.
MAX_LOCAL_PART = 64


#: RFC 5322 section 3.6.8: ftext, printable ASCII except the colon.
_FIELD_CHARS = frozenset(map(chr, range(0x21, 0x7F))) - {":"}


#: The headers `build` writes itself, and those that would leak Bcc recipients.
_RESERVED_HEADERS = frozenset(
    {
        "date",
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "resent-bcc",
        "subject",
        "message-id",
        "reply-to",
        "user-agent",
        "mime-version",
    }
)


_NO_DOMAIN_HINT = "give a full address such as name@example.com"


class Draft(Record):
    """What the user asked to send; `build` turns it into the message.

    Addresses are in header form ("My Name <someone@example.com>", or a bare local name
    such as "bob" in To, Cc and Bcc, which the relay resolves); an entry may hold several,
    separated by commas. Bcc is never written to the headers. A record (`replace` makes
    a changed copy), not a dataclass: `dataclasses` imports `inspect` at every `mail`.
    """

    __slots__ = (
        "attachments",
        "bcc",
        "body",
        "cc",
        "custom_headers",
        "from_",
        "hostname",
        "input_charset",
        "reply_to",
        "sendcharsets",
        "sender",
        "subject",
        "to",
        "user_agent",
    )

    to: Sequence[str]
    cc: Sequence[str]
    bcc: Sequence[str]
    subject: str | None
    #: Raw bytes as read from stdin: any encoding, NUL, lone CR, long lines, no final LF.
    body: bytes
    #: File paths for `-a`.
    attachments: Sequence[str]
    #: From header; None: no From unless `hostname` is set (the relay adds it otherwise).
    from_: str | None
    sender: str | None
    reply_to: Sequence[str]
    #: "Name: value" strings from `-C`, `customhdr` or `-t`.
    custom_headers: Sequence[str]
    hostname: str | None
    sendcharsets: Sequence[str]
    #: The charset the body bytes are in (s-nail's `ttycharset`).
    input_charset: str
    #: None: `default_user_agent()`; "": no User-Agent header.
    user_agent: str | None

    def __init__(
        self,
        to: Sequence[str],
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        subject: str | None = None,
        body: bytes = b"",
        attachments: Sequence[str] = (),
        from_: str | None = None,
        sender: str | None = None,
        reply_to: Sequence[str] = (),
        custom_headers: Sequence[str] = (),
        hostname: str | None = None,
        sendcharsets: Sequence[str] = ("utf-8",),
        input_charset: str = "utf-8",
        user_agent: str | None = None,
    ) -> None:
        self.to = to
        self.cc = cc
        self.bcc = bcc
        self.subject = subject
        self.body = body
        self.attachments = attachments
        self.from_ = from_
        self.sender = sender
        self.reply_to = reply_to
        self.custom_headers = custom_headers
        self.hostname = hostname
        self.sendcharsets = sendcharsets
        self.input_charset = input_charset
        self.user_agent = user_agent


def parse_recipients(text: str, field: str = "To", *, allow_local: bool = False) -> list[Recipient]:
    """`parse_addresses`, as `relay.Recipient` values: what `relay.classify_recipient`
    reads in each item of the list (`relay.split_recipient_list`), refused as it refuses."""
    if _has_control(text):
        raise DataError(
            f"{field}: address {text!r} contains a control character (CR, LF, NUL): refused"
        )
    if not text.strip():
        raise DataError(f"{field}: empty address")
    items = split_recipient_list(text, keep_empty=True)
    if items and not items[-1]:
        items.pop()  # `a@x,` and a group's closing `;`
    if not items:
        raise DataError(f"{field}: no address in {text!r}")
    found: list[Recipient] = []
    for item in items:
        if not item:
            raise DataError(f"{field}: invalid address {text!r}: an empty item in the list")
        problem = recipient_problem(item)
        if problem:
            raise DataError(f"{field}: invalid address {text!r}: {problem}")
        recipient = classify_recipient(item)
        if recipient.kind == "local" and item.startswith("\\"):
            raise DataError(f"{field}: invalid address {text!r}: not a valid address")
        if recipient.kind in ("file", "pipe"):
            raise DataError(f"{field}: {recipient.kind} recipient refused: {item!r}")
        if recipient.kind == "local" and not allow_local:
            raise DataError(f"{field}: {text!r} has no domain", hint=_NO_DOMAIN_HINT)
        if recipient.needs_smtputf8:
            raise DataError(
                f"{field}: {text!r} has a non-ASCII local part",
                hint="mail does not write UTF-8 headers (RFC 6532) yet: send it with sendmail, "
                "which uses SMTPUTF8 when the server offers it",
            )
        found.append(recipient)
    return found


def default_user_agent() -> str:
    """`mailx-relay VERSION`, the User-Agent written unless the draft names another."""
    # relay's constant, not importlib.metadata: reading package metadata costs every
    # `mail` call several milliseconds of start-up.
    return f"mailx-relay {__version__}"


def _recipient_lists(
    draft: Draft,
) -> tuple[list[Recipient], list[Recipient], list[Recipient]]:
    """To, Cc and Bcc, parsed; a recipient already seen (first wins) is dropped, by the
    one duplicate key the relay uses for the envelope (`relay.dedupe_key`: local part as
    written, domain case-folded), so the headers and the envelope always agree."""
    seen: set[str] = set()
    fields: list[list[Recipient]] = []
    for field, entries in (("To", draft.to), ("Cc", draft.cc), ("Bcc", draft.bcc)):
        found = [r for entry in entries for r in parse_recipients(entry, field, allow_local=True)]
        fields.append(dedupe_recipients(found, seen=seen))
    return fields[0], fields[1], fields[2]


def _parse_custom_header(header: str) -> tuple[str, str]:
    name, colon, value = header.partition(":")
    if not colon or not is_field_name(name):
        raise DataError(
            f"custom header {header!r}: expected 'Name: value', the name printable ASCII "
            "without spaces or colon"
        )
    if _has_control(value):
        raise DataError(
            f"custom header {name}: the value contains a control character (CR, LF, NUL): "
            "refused as a header injection attempt"
        )
    lowered = name.lower()
    if lowered in _RESERVED_HEADERS or lowered.startswith("content-"):
        raise DataError(
            f"custom header {name}: mail writes this header itself",
            hint="use -s, -c, -b, -r, -a or the reply-to/sender variables instead",
        )
    return name, value.strip()


def _has_control(text: str) -> bool:
    """True for any control character but TAB, including NEL, U+2028 and U+2029."""
    if text.isascii():  # the common case, without `unicodedata` (a C module to load)
        return any((ch < " " and ch != "\t") or ch == "\x7f" for ch in text)
    import unicodedata

    return any(
        ch != "\t" and (unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029") for ch in text
    )


def _one_line(text: str) -> str:
    """The subject on one line: each control character (CR, LF, NUL, ...) becomes a space.

    The caller warns about CR and LF; this is the defence in depth against injection.
    """
    if not _has_control(text):
        return text
    return "".join(" " if _has_control(ch) else ch for ch in text)


def is_field_name(name: str) -> bool:
    """RFC 5322 section 3.6.8 ftext: one or more printable ASCII characters but the colon.
    (A set test, not `re`: this runs for every `-C` header, and `re` costs an import.)"""
    return bool(name) and all(ch in _FIELD_CHARS for ch in name)
