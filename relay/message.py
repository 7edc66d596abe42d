"""Message intake: the raw message as read from stdin, its header fix-ups, and wire form.

The message is read whole before any SMTP begins (so a failure can always keep it), its
header block is parsed as raw lines so that nothing we do not mean to change is changed,
and the body is passed through byte for byte unless it cannot travel as it is.

Fix-ups (DESIGN 3.2, as OpenSMTPD's enqueue and msmtp): Date, Message-ID and From added
when missing (RFC 5322 3.6); Bcc and Resent-Bcc always removed (RFC 5322 3.6.3 leaves the
choice; sending them to every recipient leaks them); a leading mbox `From ` line dropped.

Wire form (RFC 5321 2.3.8, 4.5.3.1; SMTP smuggling, CVE-2023-51764): every line ends in
CRLF; a body holding a bare CR, a NUL, a line over 998 octets, or 8-bit data for a
server without 8BITMIME is re-encoded part by part with the standard library's `email`
package (quoted-printable for text; base64 for the rest and for text holding a bare CR
or NUL), so it arrives intact and no input can end the DATA early. Dot-stuffing is the
SMTP layer's job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from relay.errors import DataError

# RFC 5322 2.2: field name is printable ASCII except colon; obsolete syntax allows WSP
# before the colon (RFC 5322 4.5.8).
_FIELD = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
MAX_LINE = 998


@dataclass
class Message:
    """A header block as raw physical lines per field, and the body bytes as received."""

    fields: list[list[bytes]] = field(default_factory=list)
    body: bytes = b""

    @staticmethod
    def name_of(lines: list[bytes]) -> str:
        return lines[0].split(b":", 1)[0].strip().decode("ascii").lower()

    def values(self, name: str) -> list[str]:
        """Unfolded values of every field called `name` (8-bit bytes kept as surrogates)."""
        wanted = name.lower()
        out = []
        for lines in self.fields:
            if self.name_of(lines) == wanted:
                value = b"".join(lines).split(b":", 1)[1].strip()
                out.append(value.decode("utf-8", "surrogateescape"))
        return out

    def has(self, name: str) -> bool:
        wanted = name.lower()
        return any(self.name_of(lines) == wanted for lines in self.fields)

    def remove(self, name: str) -> int:
        wanted = name.lower()
        before = len(self.fields)
        self.fields = [lines for lines in self.fields if self.name_of(lines) != wanted]
        return before - len(self.fields)

    def add(self, name: str, value: str) -> None:
        """Append a field folded and RFC 2047-encoded by the email package's SMTP policy."""
        from email.policy import SMTP

        if any(c in value for c in "\r\n\0"):
            raise DataError(f"{name} header value contains CR, LF or NUL")
        folded = SMTP.header_factory(name, value).fold(policy=SMTP)
        self.fields.append(folded.encode("ascii").rstrip(b"\r\n").split(b"\r\n"))

    def addresses(self, *names: str) -> list[str]:
        """Addr-specs named in these address headers, in order."""
        from email.utils import getaddresses

        values = [v for name in names for v in self.values(name)]
        return [addr for _display, addr in getaddresses(values) if addr]

    def header_recipients(self) -> list[str]:
        """`-t`: To, Cc, Bcc; only the Resent- ones when there are any (RFC 5322 3.6.6)."""
        if any(self.has(n) for n in ("resent-to", "resent-cc", "resent-bcc")):
            return self.addresses("resent-to", "resent-cc", "resent-bcc")
        return self.addresses("to", "cc", "bcc")

    def from_address(self) -> str | None:
        found = self.addresses("from")
        return found[0] if found else None

    def header_bytes(self) -> bytes:
        return b"".join(line + b"\r\n" for lines in self.fields for line in lines)


def parse(raw: bytes) -> Message:
    """Split raw input into header fields and body; an mbox `From ` first line is dropped."""
    message = Message()
    position = 0
    # An mbox envelope line (`From user date`), not an obsolete `From : x` header field.
    if raw.startswith(b"From ") and not _FIELD.match(raw.split(b"\n", 1)[0]):
        end = raw.find(b"\n")
        position = len(raw) if end < 0 else end + 1
    while position < len(raw):
        end = raw.find(b"\n", position)
        stop = len(raw) if end < 0 else end + 1
        line = raw[position:stop].rstrip(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            position = stop  # the blank separator line is not part of the body
            break
        if line[:1] in (b" ", b"\t") and message.fields:
            message.fields[-1].append(line)
        elif _FIELD.match(line):
            message.fields.append([line])
        else:
            break  # no separator: the body starts here, and we will write one
        position = stop
    message.body = raw[position:]
    for lines in message.fields:
        for line in lines:
            if b"\r" in line or b"\0" in line:
                name = Message.name_of(lines)
                raise DataError(f"header '{name}' contains a bare CR or a NUL byte")
    return message


@dataclass(frozen=True)
class Fixups:
    """What `fix_headers` changed, for `-v`."""

    added: tuple[str, ...]
    removed: tuple[str, ...]


def fix_headers(
    message: Message,
    *,
    from_header: str | None,
    replace_from: bool,
    msgid_domain: str,
    date: str | None = None,
) -> Fixups:
    """Add Date, Message-ID and From when missing; drop Bcc; replace From when told to."""
    from email.utils import formatdate, make_msgid

    added: list[str] = []
    removed: list[str] = []
    for name in ("bcc", "resent-bcc"):
        if message.remove(name):
            removed.append(name.title())
    if from_header is not None and (replace_from or not message.has("from")):
        if message.remove("from"):
            removed.append("From")
        message.add("From", from_header)
        added.append("From")
    if not message.has("date"):
        message.add("Date", date or formatdate(localtime=True))
        added.append("Date")
    if not message.has("message-id"):
        message.add("Message-ID", make_msgid(domain=msgid_domain))
        added.append("Message-ID")
    return Fixups(tuple(added), tuple(removed))


def _body_lines(body: bytes) -> list[bytes]:
    """Lines without their LF or CRLF; a CR not followed by LF stays in the line."""
    lines = body.split(b"\n")
    last = lines.pop()  # after the final LF: b"" if the body ended with a newline
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if last:
        lines.append(last)
    return lines


def _unsafe(lines: Iterable[bytes]) -> bool:
    return any(len(line) > MAX_LINE or b"\r" in line or b"\0" in line for line in lines)


def has_8bit(data: bytes) -> bool:
    return not data.isascii()


def to_wire(message: Message, *, eight_bit_ok: bool = True) -> bytes:
    """The message as it goes into DATA: CRLF everywhere, unsafe parts re-encoded."""
    lines = _body_lines(message.body)
    long_header = any(len(line) > MAX_LINE for lines_ in message.fields for line in lines_)
    if _unsafe(lines) or long_header or (not eight_bit_ok and has_8bit(message.body)):
        return _reencode(message, eight_bit_ok=eight_bit_ok)
    body = b"".join(line + b"\r\n" for line in lines)
    return message.header_bytes() + b"\r\n" + body


def _reencode(message: Message, *, eight_bit_ok: bool) -> bytes:
    """Re-encode the leaf parts that cannot travel raw; the rest is regenerated unchanged."""
    from email import encoders
    from email.generator import BytesGenerator
    from email.parser import BytesParser
    from email.policy import SMTP
    from io import BytesIO

    policy = SMTP.clone(max_line_length=MAX_LINE)
    # Line ends become LF for the parser; a CR that is not part of CRLF stays a CR.
    body = b"".join(line + b"\n" for line in _body_lines(message.body))
    raw = b"".join(b"\n".join(lines) + b"\n" for lines in message.fields) + b"\n" + body
    parsed = BytesParser(policy=policy).parsebytes(raw)
    changed = False
    for part in parsed.walk():
        if part.is_multipart():
            continue
        encoding = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        if encoding not in ("7bit", "8bit", "binary"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        payload_lines = payload.split(b"\n")
        if not _unsafe(payload_lines) and (eight_bit_ok or payload.isascii()):
            continue
        del part["Content-Transfer-Encoding"]
        part.set_payload(payload)
        # binascii's quoted-printable leaves a bare CR raw (the generator would then turn
        # it into a line break), so text holding CR or NUL goes base64 like binary data.
        if part.get_content_maintype() == "text" and b"\0" not in payload and not _bare_cr(payload):
            if "Content-Type" not in part and not payload.isascii():
                charset = "utf-8" if _is_utf8(payload) else "unknown-8bit"
                part["Content-Type"] = f"text/plain; charset={charset}"
            encoders.encode_quopri(part)
        else:
            encoders.encode_base64(part)
        changed = True
    if changed and "MIME-Version" not in parsed:
        parsed["MIME-Version"] = "1.0"
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=policy).flatten(parsed)
    wire = out.getvalue()
    if not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    return wire


def _bare_cr(data: bytes) -> bool:
    return b"\r" in data.replace(b"\r\n", b"")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
