"""A simple message written as bytes, without the `email` package (`build`, `Plain`).

Why: `email.policy` and its header parser are the largest block of `mail`'s start-up
(docs/performance.md, section 2), and the message of a cron job or a script is nearly
always the same shape: a text body, a subject, a few plain addresses. For that shape
`build` writes the same bytes `mailx.compose.build` gets from the `email` package:
s-nail's header order, the Date as `email.utils.format_datetime` writes a local time,
the Message-ID as `email.utils.make_msgid` makes it, the body in the transfer encoding
`mailx.compose` chooses (its module docstring has the rules), headers folded where the
package folds them. tests/mailx/test_plain.py holds it to that, byte for byte, for
generated drafts.

Anything else returns None, and the caller builds the message with `mailx.compose`:
an attachment, a non-ASCII or `=?`-looking header, a display name or local part that
would need quoting or encoding, an address header too long for one line, a custom
header, Sender, Reply-To, `hostname`, a User-Agent of its own, charsets other than the
defaults, a body that is binary, not UTF-8, or would go quoted-printable. The fast path
declines rather than guesses.
"""

from __future__ import annotations

from mailx.draft import (
    BINARY_BYTES,
    CONTROL_BYTES,
    MAX_LINE,
    _one_line,
    _recipient_lists,
    default_user_agent,
)
from relay import DataError
from relay.message import format_date, make_msgid
from relay.plain import is_atom_words, is_dot_atom

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from mailx.draft import Draft
    from relay import Recipient

__all__ = ["SMTP_WIDTH", "WIDTH", "Plain", "build"]

#: The line length `mailx.compose.POLICY` folds to (`bytes(msg)`, dead.letter, `-d`).
WIDTH = 74
#: The line length of `email.policy.SMTP`, which `relay.submit` generates a built
#: message with: the headers on the wire are folded to it.
SMTP_WIDTH = 78

#: What an IDNA (A-label) host name holds.
_DOMAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
#: Octets of a base64 line at WIDTH (72 characters), as the email package cuts them.
_B64_LINE = WIDTH // 4 * 3
#: A subject word longer than this might not fit a line of its own: left to `email`.
_LONGEST_WORD = 60


class Plain:
    """A message made of unfolded ASCII headers and a body with LF line ends, written
    with either line end and folded to either width; what `mail` needs of a message
    (`bytes()`, `as_bytes()`, `render`).

    Only `Subject` is ever folded here; `build` declines every other header that does
    not fit one line.
    """

    __slots__ = ("body", "headers")

    def __init__(self, headers: list[tuple[str, str]], body: bytes) -> None:
        #: (name, value), in order; every value ASCII, without CR or LF.
        self.headers = headers
        #: The encoded body, lines ended by LF (no CR anywhere).
        self.body = body

    def render(self, width: int = WIDTH, linesep: bytes = b"\r\n") -> bytes:
        """The whole message, headers folded to `width`, lines ended by `linesep`."""
        lines: list[str] = []
        for name, value in self.headers:
            if name == "Subject":
                lines.extend(_fold(name, value, width))
            else:
                lines.append(f"{name}: {value}")
        head = "\n".join(lines).encode("ascii") + b"\n\n"
        data = head + self.body
        return data if linesep == b"\n" else data.replace(b"\n", linesep)

    def as_bytes(self) -> bytes:
        """As `bytes(msg)` of a message of `mailx.compose`: CRLF, folded to WIDTH."""
        return self.render()

    def __bytes__(self) -> bytes:
        return self.render()

    def wire(self) -> bytes:
        """What `relay.submit` would generate from the same message built by `email`."""
        return self.render(SMTP_WIDTH)


def build(draft: Draft, clock: float) -> Plain | None:
    """`mailx.compose.build(draft, now=<clock as local time>)` as a `Plain`, or None
    when the draft is not simple enough (module docstring).

    Raises DataError as `mailx.compose.build` does for an invalid recipient.
    """
    if (
        draft.attachments
        or draft.custom_headers
        or draft.sender is not None
        or draft.reply_to
        or draft.hostname is not None
        or draft.user_agent is not None
        or draft.input_charset != "utf-8"
        or tuple(draft.sendcharsets) != ("utf-8",)
    ):
        return None
    to, cc, _bcc = _recipient_lists(draft)  # raises as compose.build does, first
    headers: list[tuple[str, str]] = [("Date", _date(clock))]
    from_domain = None
    if draft.from_ is not None:
        found = _recipient_lists_of(draft.from_)
        if found is None:
            return None
        from_text, from_domain = found
        if len("From: ") + len(from_text) > WIDTH:
            return None
        headers.append(("From", from_text))
    for name, recipients in (("To", to), ("Cc", cc)):
        if recipients:
            rendered = [_address(r) for r in recipients]
            if None in rendered:
                return None
            value = ", ".join(a for a in rendered if a is not None)
            if len(name) + 2 + len(value) > WIDTH:
                return None
            headers.append((name, value))
    if draft.subject is not None:
        subject = _subject(draft.subject)
        if subject is None:
            return None
        headers.append(("Subject", subject))
    if from_domain is not None:
        message_id = make_msgid(from_domain)
        if len("Message-ID: ") + len(message_id) > WIDTH:
            return None
        headers.append(("Message-ID", message_id))
    headers.append(("User-Agent", default_user_agent()))
    headers.append(("MIME-Version", "1.0"))
    body = _body(draft.body, headers)
    if body is None:
        return None
    return Plain(headers, body)


def _recipient_lists_of(text: str) -> tuple[str, str] | None:
    """The From header and its domain, for one plain address; None for anything else
    (several, none, a bare local name: `mailx.compose` refuses or writes those)."""
    from mailx.draft import parse_recipients

    try:
        found = parse_recipients(text, "From")
    except DataError:
        return None  # compose.build reports it, in its own order
    if len(found) != 1:
        return None
    rendered = _address(found[0])
    if rendered is None:
        return None
    domain = found[0].header_address().rpartition("@")[2]
    return rendered, domain


def _address(recipient: Recipient) -> str | None:
    """The address as the `email` package writes it (`Address.__str__`; the domain in
    IDNA A-labels, as the relay gives it), or None when that would take quoting or
    encoding: left to `mailx.compose`."""
    if recipient.kind == "local":
        local, domain = recipient.address, ""
    elif recipient.kind == "address":
        local, _, domain = recipient.header_address().rpartition("@")
        if not domain or not all(ch in _DOMAIN for ch in domain):
            return None
    else:
        return None
    if not is_dot_atom(local):
        return None
    addr_spec = f"{local}@{domain}" if domain else local
    name = recipient.display_name
    if not name:
        return addr_spec
    if not is_atom_words(name):
        return None
    return f"{name} <{addr_spec}>"


def _subject(text: str) -> str | None:
    """The subject as compose writes it (controls made spaces), when it is ASCII words
    separated by single spaces, none of them long, none that could be read as an
    RFC 2047 encoded-word; else None."""
    text = _one_line(text)
    if not text.isascii() or "=?" in text:
        return None
    words = text.split(" ")
    if text and (not all(words) or any(len(word) > _LONGEST_WORD for word in words)):
        return None
    return text


def _fold(name: str, value: str, width: int) -> list[str]:
    """An unstructured header folded as the `email` package folds it (its parse tree,
    `_refold_parse_tree`): whole when it fits; else the whole value on the next line
    when it fits there; else word by word, a word that does not fit going to the next
    line with the space before it."""
    if not value:
        return [f"{name}:"]
    line = f"{name}: {value}"
    if len(line) <= width:
        return [line]
    if len(value) + 1 <= width:
        return [f"{name}:", f" {value}"]
    words = line.split(" ")
    lines = [words[0]]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(" " + word)
    return lines


def _date(clock: float) -> str:
    """The Date `mailx.compose` writes for `clock` (`datetime.fromtimestamp(clock)`
    rounds the microseconds half to even, carrying a whole second up), by the relay's
    own formatter (`relay.message.format_date`)."""
    import math

    fraction, whole = math.modf(clock)
    seconds = int(whole)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        seconds += 1
    elif micros < 0:
        seconds -= 1
    return format_date(seconds)


def _body(body: bytes, headers: list[tuple[str, str]]) -> bytes | None:
    """The body as `mailx.compose._set_text` encodes it, its Content-* headers added to
    `headers`; None for a body compose would send as binary, unknown-8bit or
    quoted-printable."""
    if _is_binary(body):
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    charset = "us-ascii" if body.isascii() else "utf-8"
    if not text:
        headers.append(("Content-Type", 'text/plain; charset="us-ascii"'))
        headers.append(("Content-Transfer-Encoding", "7bit"))
        return b""
    if b"\r" in body or not body.endswith(b"\n"):
        import binascii

        headers.append(("Content-Transfer-Encoding", "base64"))
        headers.append(("Content-Type", f'text/plain; charset="{charset}"'))
        view = memoryview(body)
        return b"".join(
            binascii.b2a_base64(view[start : start + _B64_LINE])
            for start in range(0, len(view), _B64_LINE)
        )
    if charset != "us-ascii" or not _is_7bit_text(body):
        return None  # quoted-printable: the email package's encoder
    headers.append(("Content-Type", 'text/plain; charset="us-ascii"'))
    headers.append(("Content-Transfer-Encoding", "7bit"))
    return body


_ALL = bytes(range(256))
_NOT_BINARY = _ALL.translate(None, BINARY_BYTES)
_NOT_CONTROL = _ALL.translate(None, CONTROL_BYTES)


def _is_binary(data: bytes) -> bool:
    # `translate` keeps only the listed bytes: a C loop, and no `re` to import.
    return bool(data.translate(None, _NOT_BINARY))


def _has_control_byte(data: bytes) -> bool:
    return bool(data.translate(None, _NOT_CONTROL))


def _is_7bit_text(data: bytes) -> bool:
    """ASCII text `mailx.compose._is_7bit` passes: no control but TAB, LF (CR is
    excluded before), no line over 998 octets, no line starting `From `."""
    if _has_control_byte(data):
        return False
    lines = data.split(b"\n")
    return not any(len(line) > MAX_LINE or line.startswith(b"From ") for line in lines)
