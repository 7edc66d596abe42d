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

import os

from mailx.draft import MAX_LINE, _one_line, _recipient_lists, default_user_agent
from relay import DataError

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

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: RFC 5322 section 3.2.3 atext: what a dot-atom local part and an atom may hold.
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
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
        message_id = _message_id(from_domain)
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
    if not _is_dot_atom(local):
        return None
    addr_spec = f"{local}@{domain}" if domain else local
    name = recipient.display_name
    if not name:
        return addr_spec
    if not all(word and all(ch in _ATEXT for ch in word) for word in name.split(" ")):
        return None
    return f"{name} <{addr_spec}>"


def _is_dot_atom(text: str) -> bool:
    return bool(text) and all(atom and all(ch in _ATEXT for ch in atom) for atom in text.split("."))


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
    """RFC 5322 Date of `clock` in local time, as `email.utils.format_datetime` writes
    `datetime.fromtimestamp(clock).astimezone()` (English names, numeric zone)."""
    import math
    import time

    fraction, whole = math.modf(clock)
    seconds = int(whole)
    # datetime rounds the microseconds half to even and carries a whole second up.
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        seconds += 1
    elif micros < 0:
        seconds -= 1
    tm = time.localtime(seconds)
    offset = tm.tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    minutes = abs(offset) // 60
    zone = f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    if abs(offset) % 60:
        zone += f"{abs(offset) % 60:02d}"  # %z's form for an offset in seconds
    return (
        f"{_DAYS[tm.tm_wday]}, {tm.tm_mday:02d} {_MONTHS[tm.tm_mon - 1]} {tm.tm_year:04d} "
        f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {zone}"
    )


def _message_id(domain: str) -> str:
    """`email.utils.make_msgid(domain=domain)`'s form: hundredths of a second since the
    epoch, the process id, 64 random bits (from os.urandom: `random` is not imported)."""
    import time

    random = int.from_bytes(os.urandom(8), "big")
    return f"<{int(time.time() * 100)}.{os.getpid()}.{random}@{domain}>"


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


#: Bytes file(1) does not count as text (`mailx.compose`'s `_BINARY`).
_BINARY = bytes([*range(0x00, 0x07), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
#: Control bytes that force quoted-printable (`mailx.compose`'s `_CONTROL`).
_CONTROL = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_ALL = bytes(range(256))


def _is_binary(data: bytes) -> bool:
    # `translate` keeps only the listed bytes: a C loop, and no `re` to import.
    return bool(data.translate(None, _ALL.translate(None, _BINARY)))


def _has_control_byte(data: bytes) -> bool:
    return bool(data.translate(None, _ALL.translate(None, _CONTROL)))


def _is_7bit_text(data: bytes) -> bool:
    """ASCII text `mailx.compose._is_7bit` passes: no control but TAB, LF (CR is
    excluded before), no line over 998 octets, no line starting `From `."""
    if _has_control_byte(data):
        return False
    lines = data.split(b"\n")
    return not any(len(line) > MAX_LINE or line.startswith(b"From ") for line in lines)
