"""Message intake: the raw message as read from stdin, its header fix-ups, and wire form.

The message is read whole before any SMTP begins (so a failure can always keep it), its
header block is parsed as raw lines so that nothing we do not mean to change is changed,
and the body is passed through byte for byte unless it cannot travel as it is.

A big message (over `SPOOL_AT`) is never held in memory: `read_input` copies
it to an unlinked temporary file (`Spooled`), `parse` reads only its header block, and
`wire` streams the body from the file in fixed-size chunks that each end a line, with the
line ends normalised to CRLF on the way (`StreamedWire`). A body that needs re-encoding
(see below) is the exception: it is loaded, since the `email` package needs it whole.

Fix-ups (sendmail(8) "Headers", as OpenSMTPD's enqueue and msmtp): Date, Message-ID and From added
when missing (RFC 5322 3.6); Bcc and Resent-Bcc always removed (RFC 5322 3.6.3 leaves the
choice; sending them to every recipient leaks them); a leading mbox `From ` line dropped.

Wire form (RFC 5321 2.3.8, 4.5.3.1; SMTP smuggling, CVE-2023-51764): every line ends in
CRLF; a body holding a bare CR, a NUL, a line over 998 octets, or 8-bit data for a
server without 8BITMIME is re-encoded part by part with the standard library's `email`
package (quoted-printable for text; base64 for the rest and for text holding a bare CR
or NUL), so it arrives intact and no input can end the DATA early. Dot-stuffing is the
SMTP layer's job.

Start-up cost matters here (every cron job pays it): the `email` package is imported only
for what needs it (a non-ASCII or unusual header value, `-t` with a complex address list,
re-encoding); Date, Message-ID and a plain From are written directly, in exactly the form
the `email` package's SMTP policy gives them.
"""

from __future__ import annotations

import os

from relay.errors import DataError
from relay.plain import PLAIN_ADDRESS, PLAIN_NAME

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import BinaryIO

# RFC 5322 2.2: field name is printable ASCII except colon; obsolete syntax allows WSP
# before the colon (RFC 5322 4.5.8).
_NAME_OCTETS = bytes(range(0x21, 0x3A)) + bytes(range(0x3B, 0x7F))


def is_field(line: bytes) -> bool:
    """Whether `line` starts a header field: `re.match(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:",
    line)`, scanned with bytes methods (`re` costs every `sendmail` its import; held to
    that expression by tests/relay/test_scanners.py). The name cannot hold a colon, so it
    is what comes before the first one, less the spaces and tabs before the colon."""
    name, colon, _rest = line.partition(b":")
    name = name.rstrip(b" \t")
    return bool(colon) and bool(name) and not name.strip(_NAME_OCTETS)


MAX_LINE = 998
#: Input larger than this goes to a temporary file instead of memory.
SPOOL_AT = 1 << 20
#: The piece size for reading, scanning and streaming a spooled message.
CHUNK = 1 << 18
#: The longest header block read from a spooled message; a longer one is loaded whole.
_HEAD_MAX = 1 << 20

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_date(when: float | None = None) -> str:
    """RFC 5322 3.3 date in local time: `email.utils.formatdate(localtime=True)`'s form."""
    import time

    t = time.localtime(when)
    offset: int | None = getattr(t, "tm_gmtoff", None)
    if offset is None:  # a struct_time made by hand (a frozen clock in tests)
        offset = -(time.altzone if t.tm_isdst > 0 else time.timezone)
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    zone = f"{sign}{hours:02d}{minutes:02d}"
    if abs(offset) % 60:  # a historical zone's offset in seconds: `%z` writes them too
        zone += f"{abs(offset) % 60:02d}"
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {zone}"
    )


def make_msgid(domain: str) -> str:
    """A unique Message-ID (RFC 5322 3.6.4) in `email.utils.make_msgid`'s form."""
    import time

    unique = int.from_bytes(os.urandom(8), "big")
    return f"<{int(time.time() * 100)}.{os.getpid()}.{unique}@{domain}>"


class Spooled:
    """Raw input too big for memory, in an unlinked temporary file (mode 0600).

    Also a binary file to write to (`write`), so a generator can fill it.
    """

    def __init__(self) -> None:
        directory = os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 (unlinked, 0600)
        try:
            self.fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except (OSError, AttributeError):
            import tempfile

            with tempfile.TemporaryFile() as handle:
                self.fd = os.dup(handle.fileno())
        self.size = 0

    @classmethod
    def of_file(cls, fd: int, size: int) -> Spooled:
        """An existing file (a queue entry's message) read the same way; the descriptor
        becomes this object's, closed by `close`."""
        spooled = cls.__new__(cls)
        spooled.fd = fd
        spooled.size = size
        return spooled

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += len(data)
        return len(data)

    def pread(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def blocks(self, offset: int = 0, size: int | None = None) -> Iterator[bytes]:
        """The contents from `offset` to the end, `size` (default CHUNK) octets at a time."""
        size = size or CHUNK
        while offset < self.size:
            block = os.pread(self.fd, min(size, self.size - offset), offset)
            if not block:
                raise OSError(f"spool file ended early at octet {offset}")
            offset += len(block)
            yield block

    def read_all(self, offset: int = 0) -> bytes:
        return b"".join(self.blocks(offset, 1 << 22))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


def read_input(
    stream: BinaryIO, *, spool_at: int = SPOOL_AT, limit: int | None = None
) -> bytes | Spooled:
    """Read a message to EOF: bytes when small, else a `Spooled` copy, never both.

    With `limit` (MaxMessageSize), reading stops as soon as the input passes it (an
    endless stdin cannot fill the disk or memory): `TooBigError` (65) is raised, its
    `partial` the first `limit` octets, for dead.letter.
    """
    if limit is None:
        return _read_input(stream, spool_at)
    bounded = _Bounded(stream, limit + 1)
    raw = _read_input(bounded, spool_at)
    if bounded.taken <= limit:
        return raw
    from relay.errors import TooBigError

    if isinstance(raw, Spooled):
        raw.size = limit  # what blocks() reads: the first `limit` octets
    else:
        raw = raw[:limit]
    raise TooBigError(
        f"the message is larger than MaxMessageSize ({limit} bytes): reading stopped there "
        "and nothing was sent; raise MaxMessageSize in relay.conf, or send it smaller",
        limit=limit,
        partial=raw,
    )


class _Bounded:
    """A stream that gives at most `most` octets (then acts as at its end)."""

    def __init__(self, stream: BinaryIO, most: int) -> None:
        self.stream = stream
        self.left = most
        self.taken = 0

    def read(self, size: int) -> bytes:
        if self.left <= 0:
            return b""
        data = self.stream.read(min(size, self.left))
        self.left -= len(data)
        self.taken += len(data)
        return data


def _read_input(stream: BinaryIO | _Bounded, spool_at: int) -> bytes | Spooled:
    first = stream.read(spool_at + 1)
    if len(first) <= spool_at:
        return first
    try:
        spool = Spooled()
    except OSError:
        return _in_memory([first], stream)
    block = first
    try:
        spool.write(block)
        while block := stream.read(CHUNK):
            spool.write(block)
    except OSError:
        # No room for the temporary copy (ulimit -f, a full /tmp): hold the message in
        # memory instead, so it is still delivered, queued or kept, never half-read.
        # Only what was counted: a failed write may have left part of `block` on disk.
        done = [spool.pread(at, min(CHUNK, spool.size - at)) for at in range(0, spool.size, CHUNK)]
        spool.close()
        return _in_memory([*done, block], stream)
    except BaseException:
        spool.close()
        raise
    return spool


def _in_memory(parts: list[bytes], stream: BinaryIO | _Bounded) -> bytes:
    while block := stream.read(CHUNK):
        parts.append(block)
    return b"".join(parts)


class BodyScan:
    """What a streamed body needs before it may go raw (see the module doc)."""

    def __init__(self) -> None:
        self.unsafe = False  # a bare CR, a NUL or a line over MAX_LINE
        self.eight_bit = False
        self.wire_size = 0  # octets once every line ends in CRLF
        self.has_cr = False  # some line ends in CRLF already (else every one is a bare LF)


def scan_body(blocks: Iterable[bytes]) -> BodyScan:
    """One pass over the body in pieces, the unfinished last line carried across.

    Written for the big message's sake (a 20 MiB body is 80 pieces of 256 KiB): one
    `split` per piece gives both the number of lines and the longest, and the common
    body with LF line ends and no CR is settled by one `find` for CR, not by counting
    CR, CRLF and LF in three more passes. tests/relay/test_scanners.py holds it to the
    straightforward version on generated bodies cut at every place."""
    scan = BodyScan()
    carry = b""
    size = bare_lf = 0
    for block in blocks:
        size += len(block)
        if not scan.eight_bit and not block.isascii():
            scan.eight_bit = True
        if scan.unsafe:
            continue
        data = carry + block
        cut = data.rfind(b"\n") + 1
        lines = data.split(b"\n")
        carry = lines.pop()  # what follows the last LF: a line to finish with the next piece
        if data.find(b"\r", 0, cut) < 0:
            crlf = 0
        else:
            scan.has_cr = True
            crlf = data.count(b"\r\n", 0, cut)
            if data.count(b"\r", 0, cut) != crlf:
                scan.unsafe = True  # a bare CR
        bare_lf += len(lines) - crlf
        if (
            data.find(b"\0", 0, cut) >= 0
            or len(carry) > MAX_LINE + 1  # longer than 998 even if CRLF follows
            or (lines and max(map(len, lines)) > MAX_LINE and _long_line(data[:cut]))
        ):
            scan.unsafe = True
    if carry:
        size += 2  # the last line gets its CRLF on the wire
        scan.unsafe = scan.unsafe or b"\0" in carry or b"\r" in carry or len(carry) > MAX_LINE
    scan.wire_size = size + bare_lf
    return scan


def _long_line(lines: bytes) -> bool:
    return any(len(line.removesuffix(b"\r")) > MAX_LINE for line in lines.split(b"\n"))


class Message:
    """A header block as raw physical lines per field, and the body bytes as received.

    For a spooled message `body` is empty and the body is `spool` from `body_offset` on.
    (Plain classes in this module: generating dataclasses costs start-up time.)
    """

    def __init__(self, fields: list[list[bytes]] | None = None, body: bytes = b"") -> None:
        self.fields: list[list[bytes]] = fields if fields is not None else []
        self.body = body
        self.spool: Spooled | None = None
        self.body_offset = 0

    def __repr__(self) -> str:
        return f"Message(fields={self.fields!r}, body={self.body!r}, spool={self.spool!r})"

    def body_bytes(self) -> bytes:
        """The body as received, loaded from the spool file if need be."""
        if self.spool is None:
            return self.body
        return self.spool.read_all(self.body_offset)

    def loaded(self) -> Message:
        """The same message with its body in memory."""
        if self.spool is None:
            return self
        return Message(self.fields, self.body_bytes())

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
        if any(c in value for c in "\r\n\0"):
            raise DataError(f"{name} header value contains CR, LF or NUL")
        if _folds_to_itself(name, value):
            self.fields.append([f"{name}: {value}".encode("ascii")])
            return
        from email.policy import SMTP

        folded = SMTP.header_factory(name, value).fold(policy=SMTP)
        self.fields.append(folded.encode("ascii").rstrip(b"\r\n").split(b"\r\n"))

    def addresses(self, *names: str) -> list[str]:
        """Addr-specs named in these address headers, in order."""
        values = [v for name in names for v in self.values(name)]
        simple = [_simple_address(value.strip()) for value in values]
        if all(simple):
            return [address for address in simple if address]
        from email.utils import getaddresses

        return [addr for _display, addr in getaddresses(values) if addr]

    def header_recipients(self) -> list[str]:
        """`-t`: To, Cc, Bcc; only the Resent- ones when there are any (RFC 5322 3.6.6).

        Read by `relay.recipients` like a command-line recipient, so a header that would
        send somewhere else than it seems to (`$(x)@example.org`) is refused, not
        reinterpreted; envelope forms, deduplicated."""
        names = ("to", "cc", "bcc")
        if any(self.has(n) for n in ("resent-to", "resent-cc", "resent-bcc")):
            names = ("resent-to", "resent-cc", "resent-bcc")
        values = [v for name in names for v in self.values(name)]
        simple = [_simple_address(value.strip()) for value in values]
        if all(simple):
            return [address for address in simple if address]
        from relay.recipients import ADDRESS, LOCAL, dedupe, parse_list

        found = []
        for name in names:
            for value in self.values(name):
                for recipient in parse_list(value, f"{name.title()} header recipient"):
                    if recipient.kind not in (ADDRESS, LOCAL):
                        raise DataError(
                            f"{recipient.kind} recipient refused in the {name.title()} "
                            f"header: '{recipient.address}'"
                        )
                    found.append(recipient)
        return [r.envelope if r.kind == ADDRESS else r.address for r in dedupe(found)]

    def from_address(self) -> str | None:
        found = self.addresses("from")
        return found[0] if found else None

    def header_bytes(self) -> bytes:
        return b"".join(line + b"\r\n" for lines in self.fields for line in lines)


def _simple_address(value: str) -> str | None:
    """The addr-spec of a plain From value, else None: a plain address
    (`relay.plain.PLAIN_ADDRESS`) alone, in brackets, or after a display name of plain
    words. `getaddresses` reads these to the same address, the SMTP policy folds them to
    themselves (checked in the tests); anything else goes to the email package."""
    name, bracket, address = value.rpartition("<")
    if bracket:
        if not address.endswith(">") or (name and not name.endswith(" ")):
            return None
        address = address[:-1]
        if name and not PLAIN_NAME.fullmatch(name[:-1]):
            return None
    return address if PLAIN_ADDRESS.fullmatch(address) else None


def _folds_to_itself(name: str, value: str) -> bool:
    """True when the SMTP policy would write `Name: value` unchanged: a short ASCII value
    we generate (Date, Message-ID) or a plain From (`_simple_address`)."""
    if len(name) + len(value) + 2 > 78 or not value.isascii() or not value.isprintable():
        return False
    if value != value.strip() or "  " in value:
        return False
    if name in ("Date", "Message-ID"):
        return True
    return name == "From" and _simple_address(value) is not None


def parse(raw: bytes | Spooled) -> Message:
    """Split raw input into header fields and body; an mbox `From ` first line is dropped.

    For spooled input only the header block is read; the body stays in the file.
    """
    if isinstance(raw, Spooled):
        head = raw.pread(0, min(raw.size, _HEAD_MAX))
        message = parse(head)
        start = len(head) - len(message.body)
        # The header block must end inside what was read, on a complete line.
        if len(head) < raw.size and head.find(b"\n", start) < 0:
            return parse(raw.read_all())
        message.body = b""
        message.spool = raw
        message.body_offset = start
        return message
    message = Message()
    position = 0
    # An mbox envelope line (`From user date`), not an obsolete `From : x` header field.
    if raw.startswith(b"From ") and not is_field(raw.split(b"\n", 1)[0]):
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
        elif is_field(line):
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


class Fixups:
    """What `fix_headers` changed, for `-v`."""

    def __init__(self, added: tuple[str, ...], removed: tuple[str, ...]) -> None:
        self.added = added
        self.removed = removed

    def __repr__(self) -> str:
        return f"Fixups(added={self.added!r}, removed={self.removed!r})"


def fix_headers(
    message: Message,
    *,
    from_header: str | None,
    replace_from: bool,
    msgid_domain: str,
    date: str | None = None,
) -> Fixups:
    """Add Date, Message-ID and From when missing; drop Bcc; replace From when told to."""
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
        message.add("Date", date or format_date())
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


class StreamedWire:
    """A spooled message in wire form, produced a chunk at a time (`chunks`).

    Each chunk ends a line (CRLF), so the SMTP layer can dot-stuff chunk by chunk.
    """

    def __init__(self, message: Message, scan: BodyScan) -> None:
        assert message.spool is not None
        self.head = message.header_bytes() + b"\r\n"
        self.spool = message.spool
        self.offset = message.body_offset
        self.size = len(self.head) + scan.wire_size
        self.eight_bit = scan.eight_bit or not self.head.isascii()
        self.has_cr = scan.has_cr

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        carry = b""
        for block in self.spool.blocks(self.offset):
            data = carry + block
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                # No bare CR here (the scan made sure): every LF becomes CRLF. Without
                # any CR in the body (the scan says), one pass does it.
                whole = data[:cut]
                if self.has_cr:
                    whole = whole.replace(b"\r\n", b"\n")
                yield whole.replace(b"\n", b"\r\n")
        if carry:
            yield carry + b"\r\n"


def wire(message: Message, *, eight_bit_ok: bool = True) -> bytes | StreamedWire:
    """`to_wire`, but a spooled message that can travel raw stays on disk and streams."""
    if message.spool is None:
        return to_wire(message, eight_bit_ok=eight_bit_ok)
    scan = scan_body(message.spool.blocks(message.body_offset))
    if (
        scan.unsafe
        or _header_needs_work(message, eight_bit_ok)
        or (not eight_bit_ok and scan.eight_bit)
    ):
        return to_wire(message.loaded(), eight_bit_ok=eight_bit_ok)
    return StreamedWire(message, scan)


def to_wire(message: Message, *, eight_bit_ok: bool = True) -> bytes:
    """The message as it goes into DATA: CRLF everywhere, unsafe parts re-encoded."""
    message = message.loaded()
    lines = _body_lines(message.body)
    if (
        _unsafe(lines)
        or _header_needs_work(message, eight_bit_ok)
        or (not eight_bit_ok and has_8bit(message.body))
    ):
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

    # 998, not 78: a header that is fine as it came (a long References line) is kept as
    # it is; the ones that are not were folded to 78 by `_refolded` already.
    policy = SMTP.clone(max_line_length=MAX_LINE)
    # Line ends become LF for the parser; a CR that is not part of CRLF stays a CR.
    body = b"".join(line + b"\n" for line in _body_lines(message.body))
    fields = [_refolded(lines, eight_bit_ok) for lines in message.fields]
    raw = b"".join(b"\n".join(lines) + b"\n" for lines in fields) + b"\n" + body
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


def _header_needs_work(message: Message, eight_bit_ok: bool) -> bool:
    """A header line over 998 octets (RFC 5322 2.1.1), or 8-bit octets in the header for
    a server that takes no 8-bit data (RFC 6532 needs SMTPUTF8 for them; a server
    without even 8BITMIME must get RFC 2047 encoded-words)."""
    return any(_field_needs_work(lines, eight_bit_ok) for lines in message.fields)


def _field_needs_work(lines: list[bytes], eight_bit_ok: bool) -> bool:
    return any(len(line) > MAX_LINE or (not eight_bit_ok and not line.isascii()) for line in lines)


def _refolded(lines: list[bytes], eight_bit_ok: bool) -> list[bytes]:
    """A field that cannot travel as it is, folded again by the email package: RFC 2047
    encoded-words of at most 75 octets (RFC 2047 section 2), never the 998-octet words a
    fold at the line limit would give. The package's words can be one octet longer than
    the line limit allows, hence 76, not 78 (measured in the tests)."""
    if not _field_needs_work(lines, eight_bit_ok):
        return lines
    from email.policy import SMTP

    name, _, value = b"".join(lines).partition(b":")
    text = " ".join(value.decode("utf-8", "surrogateescape").split())
    policy = SMTP.clone(max_line_length=76)
    folded: str = policy.header_factory(name.decode("ascii").strip(), text).fold(policy=policy)
    return folded.encode("ascii").rstrip(b"\r\n").split(b"\r\n")


def _bare_cr(data: bytes) -> bool:
    return b"\r" in data.replace(b"\r\n", b"")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
