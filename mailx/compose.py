"""Build the message `mail` sends: RFC 5322 headers and a MIME body (mail(1) MESSAGE).

Everything on the wire is made by the standard library's `email` package: header
folding and RFC 2047 encoded-words, address quoting, RFC 2231 file names, quoted-printable
and base64, multipart assembly; only `render` writes the multipart boundary lines itself,
byte for byte as the package would, to stream big attachments (below). This module
otherwise only makes the decisions s-nail makes and validates what it is given.
Formats: RFC 5322 (message, header order of s-nail), RFC 2045 and 2046 (MIME, transfer
encodings, text/plain), RFC 2047 (non-ASCII header text), RFC 2183 and 2231
(Content-Disposition and its file name), RFC 5321 section 4.5.3.1 (length limits),
RFC 1428 (`unknown-8bit`), RFC 4155 (mbox `From ` lines), RFC 3490 (IDNA).

Decisions, where s-nail leaves room or where we differ from it:

* MIME-Version and Content-Type are always written, even for a plain ASCII body
  (s-nail writes none then). RFC 2045 section 5.2 makes both forms mean the same; one
  code path is simpler and states the charset explicitly.
* The body arrives as it was given, byte for byte once decoded. Text with LF line ends
  that ends in a newline goes 7bit or quoted-printable, whose line breaks readers turn
  into their own. A body that a line-based encoding cannot carry exactly (a CR anywhere,
  so a lone CR or CRLF line ends, or no newline at the end) goes base64 as text/plain:
  RFC 2046 section 4.1.1 allows CR and LF in text only as the CRLF pair, which every
  decoder may turn into its own newline, and SMTP ends the data with CRLF. s-nail keeps
  the same bytes with quoted-printable `=0D` and a trailing soft break, which decoders
  that keep CRLF give back differently. An empty body stays empty.
* Body charset: `us-ascii` for ASCII text, else the first of `sendcharsets` that can hold
  the text, else `utf-8` (s-nail's `charset-8bit`). The body is read in `input_charset`
  (s-nail's `ttycharset`, default UTF-8).
* Transfer encoding: `7bit` for ASCII with lines of at most 998 octets, no control
  character but TAB and no line starting with `From `; otherwise quoted-printable, and in
  quoted-printable every line that would start with `From ` starts with `=46rom ` instead,
  so that an mbox on the way cannot turn it into `>From ` (s-nail and mutt do the same).
* Control bytes: a body holding a byte that file(1) does not count as text (NUL, and C0
  controls other than BEL, BS, TAB, LF, VT, FF, CR and ESC; DEL) is binary: it goes out
  as `application/octet-stream`, base64, byte for byte, as s-nail sends it. ESC, BS, FF
  and BEL stay text (coloured cron output is common) and only force quoted-printable,
  where s-nail would turn the whole body into an attachment.
* Invalid input in `input_charset` (a Latin-1 byte in a UTF-8 locale) goes out as
  `text/plain; charset=unknown-8bit` (RFC 1428), quoted-printable, its bytes kept (line
  ends as above): the reader still sees the text inline, and nobody claims a charset we
  do not know. s-nail refuses to send it ("Cannot find a usable character set").
* Header encoded-words always use UTF-8 (the email package's choice), whatever the body
  charset; every reader decodes them.
* Attachments are read once and their bytes kept: `text/*` goes out 7bit when that keeps
  them (ASCII, no lone CR, no control, short lines, no `From ` line; only the line ends
  become CRLF, the canonical form), otherwise base64; everything else base64. An unknown
  type is `text/plain` when the file is UTF-8 text, else `application/octet-stream`.
  A big binary attachment (over `STREAM_AT`, of a type known from its name) is the
  exception: only its path is kept, and its base64 is made from the file when the
  message is written, a block at a time by `render` (which `mail` uses to deliver),
  whole for anything else that reads the part; the output is the same byte for byte.
  `message/*` and `multipart/*` guesses become `application/octet-stream`, since RFC 2046
  section 5 forbids base64 for them. Sub-parts carry no MIME-Version.
* Non-ASCII domains are written as IDNA A-labels; a non-ASCII local part would need
  SMTPUTF8 and RFC 6532 headers, which `mail` does not generate: refused.
* Recipients are deduplicated by `relay.dedupe_key`, first one wins: the domain
  case-folded, the local part as written (RFC 5321 2.4 leaves its case to the
  receiving host), the same key the relay uses for the envelope.
* Custom headers may not replace a header this module writes, nor add Bcc or Resent-Bcc.

The message uses `POLICY`: CRLF line ends, so `bytes(msg)` is ready for SMTP.
"""

from __future__ import annotations

import binascii
import codecs
import email.policy
import email.utils
import os
import re
import stat
from datetime import datetime
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart

from mailx.draft import (
    BINARY_BYTES,
    CONTROL_BYTES,
    MAX_LINE,
    MAX_LOCAL_PART,
    Draft,
    _has_control,
    _one_line,
    _parse_custom_header,
    _recipient_lists,
    default_user_agent,
    parse_recipients,
)
from relay import ConfigError, DataError, NoInputError, Recipient, unquote

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any, BinaryIO, Protocol

    class Writer(Protocol):
        def write(self, data: bytes, /) -> int: ...


__all__ = [
    "POLICY",
    "Draft",
    "build",
    "default_user_agent",
    "envelope_recipients",
    "parse_addresses",
    "render",
]

#: SMTP policy (CRLF). Lines at most 74 columns, not 78: RFC 2045 section 6.7 caps
#: quoted-printable lines at 76, the email package fills them up to `max_line_length`, and
#: the two spare columns take the `=46` that protects a `From ` line.
POLICY = email.policy.SMTP.clone(max_line_length=74)

#: RFC 5321 section 4.5.3.1.2.
MAX_DOMAIN = 255

_PREAMBLE = "This is a multi-part message in MIME format."

_BINARY = re.compile(b"[" + re.escape(BINARY_BYTES) + b"]")
_CONTROL = re.compile(b"[" + re.escape(CONTROL_BYTES) + b"]")
_LONG_LINE = re.compile(rb"[^\r\n]{%d}" % (MAX_LINE + 1))
_FROM_LINE = re.compile(rb"(?:\A|[\r\n])From ")
_BARE_CR = re.compile(rb"\r(?!\n)")
#: A quoted-printable line that starts with "From " (the payload uses LF line ends).
_QP_FROM_LINE = re.compile(r"^From ", re.MULTILINE)
_COMPRESSED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
}
_CHUNK = 1 << 20
#: Binary attachments larger than this are encoded from the file as the message is
#: written (`_FilePart`, `render`), never held whole.
STREAM_AT = 1 << 20
#: Octets per base64 line at POLICY's length (72 characters), as the email package cuts.
_B64_LINE = (POLICY.max_line_length or 78) // 4 * 3
#: Octets read from a big attachment at a time: whole base64 lines, about 54 KiB (twice
#: that is no faster, measured, and `write_base64` holds a few copies of a block).
_B64_BLOCK = _B64_LINE * 1024


def build(draft: Draft, *, now: datetime | None = None, login: str | None = None) -> EmailMessage:
    """Return the message for `draft`, headers in s-nail's order, ready for `bytes()`.

    `now` is the Date (default: the current local time; a naive value is taken as local);
    `login` names the user for `login@hostname` (default: `getpass.getuser()`).

    Raises:
        DataError: an invalid or non-ASCII-local-part address, a header injection attempt
            (CR, LF or another control character in an address or custom header), a custom
            header replacing one `build` writes, a header line that cannot be folded under
            998 octets.
        NoInputError: an attachment is missing or unreadable (`path` names it).
        ConfigError: `sendcharsets` or `input_charset` names an unknown charset or one
            that is not a superset of ASCII.
    """
    to, cc, _bcc = _recipients(draft)  # Bcc only reaches the envelope
    input_charset = _ascii_superset(draft.input_charset, "input charset")
    sendcharsets = [_ascii_superset(name, "sendcharsets") for name in draft.sendcharsets]
    custom = [_parse_custom_header(header) for header in draft.custom_headers]
    sender = _single_address(draft.sender, "Sender") if draft.sender is not None else None
    reply_to = [a for entry in draft.reply_to for a in parse_addresses(entry, "Reply-To")]
    hostname = _domain(draft.hostname, "hostname") if draft.hostname is not None else None
    if draft.from_ is not None:
        from_addr: Address | None = _single_address(draft.from_, "From")
    elif hostname is not None:
        from_addr = _login_address(login, hostname)
    else:
        from_addr = None
    user_agent = default_user_agent() if draft.user_agent is None else draft.user_agent
    if _has_control(user_agent):
        raise DataError("User-Agent contains a control character: refused")

    msg = _Rendered(policy=POLICY)
    msg["Date"] = email.utils.format_datetime(_local_time(now))
    if from_addr is not None:
        msg["From"] = from_addr
    if sender is not None:
        msg["Sender"] = sender
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    if draft.subject is not None:
        msg["Subject"] = _one_line(draft.subject)
    if from_addr is not None:
        # s-nail writes a Message-ID once `from` or `hostname` is set; the domain is the
        # hostname, else the From domain. A From without a domain cannot happen here.
        msg["Message-ID"] = email.utils.make_msgid(domain=hostname or from_addr.domain)
    if reply_to:
        msg["Reply-To"] = reply_to
    if user_agent:
        msg["User-Agent"] = user_agent
    for name, value in custom:
        try:
            msg[name] = value
        except (ValueError, IndexError, MessageError) as err:
            raise DataError(f"custom header {name}: {err}") from err
    msg["MIME-Version"] = "1.0"

    if draft.attachments:
        msg.make_mixed()
        msg.preamble = _PREAMBLE
        if draft.body:
            part = EmailMessage(policy=POLICY)
            _set_text(part, draft.body, input_charset, sendcharsets, disposition="inline")
            _attach(msg, part)
        for path in draft.attachments:
            _attach(msg, _attachment(path))
    else:
        _set_text(msg, draft.body, input_charset, sendcharsets, disposition=None)
    _check_header_lines(msg)
    return msg


def envelope_recipients(draft: Draft) -> list[str]:
    """Bare addresses (or local names) for the envelope: To, Cc, Bcc, each once.

    Raises DataError as `build` does for an invalid recipient.
    """
    to, cc, bcc = _recipient_lists(draft)
    return [recipient.envelope for recipient in (*to, *cc, *bcc)]


def parse_addresses(text: str, field: str = "To", *, allow_local: bool = False) -> list[Address]:
    """Parse one header-form address list into validated `Address` objects.

    `field` only names the header in error messages. A bare local name ("bob") is
    accepted when `allow_local`. Non-ASCII domains become IDNA A-labels.

    Raises DataError for a control character (a header injection attempt), an
    unparsable or empty address, a missing domain, a non-ASCII local part, or a local
    part or domain over the RFC 5321 length limits.
    """
    return [_address(r) for r in parse_recipients(text, field, allow_local=allow_local)]


def _address(recipient: Recipient) -> Address:
    """The `email` package's Address for the header: local part unquoted (the package
    quotes it again where needed), domain in IDNA A-labels."""
    if recipient.kind == "local":
        return Address(recipient.display_name, recipient.address, "")
    local, _, domain = recipient.header_address().rpartition("@")
    if local.startswith('"') and local.endswith('"'):
        local = unquote(local[1:-1])
    return Address(recipient.display_name, local, domain)


def _recipients(draft: Draft) -> tuple[list[Address], list[Address], list[Address]]:
    """To, Cc and Bcc for the headers, deduplicated together (`_recipient_lists`)."""
    to, cc, bcc = _recipient_lists(draft)
    return [_address(r) for r in to], [_address(r) for r in cc], [_address(r) for r in bcc]


def _single_address(text: str, field: str) -> Address:
    found = parse_addresses(text, field)
    if len(found) != 1:
        raise DataError(f"{field}: exactly one address expected, got {text!r}")
    return found[0]


def _domain(hostname: str, what: str) -> str:
    """A validated, ASCII (IDNA) domain, checked by parsing postmaster@hostname."""
    if _has_control(hostname) or "@" in hostname:
        raise DataError(f"{what}: {hostname!r} is not a domain name")
    try:
        return _single_address(f"postmaster@{hostname.strip()}", what).domain
    except DataError as err:
        raise DataError(f"{what}: {hostname!r} is not a domain name") from err


def _login_address(login: str | None, domain: str) -> Address:
    if login is None:
        import getpass  # (and termios): only for a From made of the login name

        login = getpass.getuser()
    user = login
    if not user or _has_control(user) or len(user.encode()) > MAX_LOCAL_PART:
        raise DataError(f"login name {user!r} cannot be used in a From address")
    try:
        return Address(username=user, domain=domain)
    except ValueError as err:
        raise DataError(f"login name {user!r} cannot be used in a From address") from err


def _local_time(now: datetime | None) -> datetime:
    """`now` as given when aware; a naive time (and the default, the clock) as local time."""
    moment = now if now is not None else datetime.now()
    return moment if moment.tzinfo is not None else moment.astimezone()


def _set_text(
    part: MIMEPart,
    body: bytes,
    input_charset: str,
    sendcharsets: Sequence[str],
    *,
    disposition: str | None,
) -> None:
    """Put the body into `part`: text/plain with a chosen charset and encoding, or binary."""
    if _BINARY.search(body):
        part.set_content(
            body, maintype="application", subtype="octet-stream", disposition=disposition
        )
        return
    label: str | None = None
    try:
        text = body.decode(input_charset)
        charset = _pick_charset(text, sendcharsets)
    except UnicodeError:
        # RFC 1428: the bytes go out unchanged, labelled as what they are: unknown.
        # Latin-1 maps every byte to itself, so the email package's encoder keeps them.
        text = body.decode("latin-1")
        charset = "iso-8859-1"
        label = "unknown-8bit"
    if not text:
        part.set_content("", charset="us-ascii", cte="7bit", disposition=disposition)
        part.set_payload("")  # set_content writes one empty line; an empty body stays empty
        return
    if "\r" in text or not text.endswith("\n"):
        data = body if label is not None else text.encode(charset)
        params = {"charset": label or charset}
        part.set_content(
            data, "text", "plain", cte="base64", disposition=disposition, params=params
        )
        return
    cte = "7bit" if _is_7bit(text.encode(charset)) else "quoted-printable"
    part.set_content(text, charset=charset, cte=cte, disposition=disposition)
    if cte == "quoted-printable":
        _protect_from_lines(part)
    if label is not None:
        part.set_param("charset", label, replace=True)


def _pick_charset(text: str, sendcharsets: Sequence[str]) -> str:
    """us-ascii, else the first of `sendcharsets` that holds `text`, else utf-8.

    Raises UnicodeEncodeError when not even UTF-8 can hold it (lone surrogates).
    """
    if text.isascii():
        return "us-ascii"
    for charset in sendcharsets:
        try:
            text.encode(charset)
        except UnicodeEncodeError:
            continue
        return charset
    text.encode("utf-8")
    return "utf-8"


def _ascii_superset(name: str, what: str) -> str:
    """`name` lower-cased, if Python knows it and it encodes ASCII as ASCII."""
    name = name.strip().lower()
    probe = "".join(map(chr, range(128)))
    try:
        same = probe.encode(name) == probe.encode("ascii")
    except LookupError as err:
        raise ConfigError(f"{what}: unknown charset {name!r}") from err
    except UnicodeError:
        same = False
    if not same:
        raise ConfigError(f"{what}: charset {name!r} is not a superset of ASCII")
    return name


def _is_7bit(data: bytes) -> bool:
    """True when `data` can go out 7bit unchanged and unmangled (RFC 2045 section 2.7).

    Regex searches, not a split: attachments can be large.
    """
    return (
        data.isascii()
        and not _CONTROL.search(data)
        and not _LONG_LINE.search(data)
        and not _FROM_LINE.search(data)
    )


def _protect_from_lines(part: MIMEPart) -> None:
    """Write `From ` at the start of a quoted-printable line as `=46rom ` (RFC 4155).

    An mbox on the way would otherwise prefix it with `>`, changing the text; `=46` is
    the same `F` to every decoder. POLICY's line length leaves room for the two octets.
    """
    payload = part.get_payload()
    if isinstance(payload, str) and _QP_FROM_LINE.search(payload):
        part.set_payload(_QP_FROM_LINE.sub("=46rom ", payload))


def _attach(msg: EmailMessage, part: EmailMessage) -> None:
    # EmailMessage.set_content adds MIME-Version to every part; RFC 2045 section 4 needs it
    # only at the top, and s-nail writes it only there.
    del part["MIME-Version"]
    msg.attach(part)


def _attachment(path: str) -> EmailMessage:
    """One `-a` file as an attachment part; its bytes are read once and sent unchanged."""
    streamed = _streamed_attachment(path)
    if streamed is not None:
        return streamed
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise NoInputError(
            f"cannot read attachment: {err.strerror or err}",
            path=path,
            hint="check the -a path; nothing was sent",
        ) from err
    maintype, subtype = _guess_type(path, data)
    part = EmailMessage(policy=POLICY)
    filename = _attachment_name(path)
    if maintype == "text":
        cte = "7bit" if _is_7bit(data) and not _BARE_CR.search(data) else "base64"
        part.set_content(data, maintype, subtype, cte=cte, filename=filename)
        part.set_param("charset", _file_charset(data), replace=True)
    else:
        part.set_content(data, maintype, subtype, filename=filename)
    return part


def _guess_type(path: str, data: bytes) -> tuple[str, str]:
    import mimetypes  # (and urllib.parse): only for attachments

    mime, encoding = mimetypes.guess_type(os.path.basename(path))
    if encoding is not None:
        # "x.tar.gz" is (application/x-tar, gzip): what travels is the gzip file.
        mime = _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    if mime is None:
        is_text = not _BINARY.search(data) and _is_utf8(data)
        mime = "text/plain" if is_text else "application/octet-stream"
    maintype, _, subtype = mime.partition("/")
    if maintype in ("message", "multipart") or not subtype:
        return "application", "octet-stream"
    return maintype, subtype


def _file_charset(data: bytes) -> str:
    if data.isascii():
        return "us-ascii"
    return "utf-8" if _is_utf8(data) else "unknown-8bit"


def _is_utf8(data: bytes) -> bool:
    """Whether `data` is valid UTF-8, decoded a chunk at a time so no copy is kept."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for start in range(0, len(view), _CHUNK):
            decoder.decode(view[start : start + _CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _attachment_name(path: str) -> str:
    """The basename, control characters replaced by `_` (a file name may hold a newline)."""
    name = os.path.basename(path)
    if not _has_control(name):
        return name
    return "".join("_" if _has_control(ch) else ch for ch in name)


def _check_header_lines(msg: EmailMessage) -> None:
    """Refuse a header the policy cannot fold under 998 octets per line (RFC 5322 2.1.1).

    A very long unbreakable word in a display name would otherwise go out as one line.
    """
    for part in msg.walk():
        for name, value in part.items():
            try:
                folded = POLICY.fold_binary(name, value)
            except (ValueError, IndexError, MessageError) as err:
                raise DataError(f"{name}: header cannot be written: {err}") from err
            if any(len(line) > MAX_LINE for line in folded.split(b"\r\n")):
                raise DataError(
                    f"{name}: header has a line longer than {MAX_LINE} octets",
                    hint="shorten the name or value",
                )


def _streamed_attachment(path: str) -> _FilePart | None:
    """A big binary attachment as a `_FilePart`, or None for the ordinary way.

    The file is opened here only to learn what it is (and that it can be read); it is
    closed again at once and reopened by whatever writes the message.
    """
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
    except OSError:
        return None  # the ordinary way reports it
    if not stat.S_ISREG(info.st_mode) or info.st_size <= STREAM_AT:
        return None
    import mimetypes

    mime, encoding = mimetypes.guess_type(os.path.basename(path))
    if encoding is not None:
        mime = _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    if mime is None:
        return None  # text or binary is decided from the content: the ordinary way
    maintype, _, subtype = mime.partition("/")
    if maintype in ("text", "message", "multipart") or not subtype:
        return None
    part = _FilePart(path, info)
    # The headers exactly as `set_content` writes them for the bytes themselves; the
    # (empty) payload is never written: `render` encodes the file in its place.
    part.set_content(b"", maintype, subtype, cte="base64", filename=_attachment_name(path))
    return part


class _Rendered(EmailMessage):
    """A message that writes itself with `render` when it holds a `_FilePart`.

    `bytes(msg)`, `as_bytes` and `as_string` (dead.letter, `record`, a `sendmail` program
    as mta, the dry run) so produce the whole message, the big attachments encoded from
    their files, without depending on how the email package's generator reads a payload.
    """

    def as_bytes(self, unixfrom: bool = False, policy: email.policy.Policy | None = None) -> bytes:
        if unixfrom or not has_streamed_parts(self):
            return super().as_bytes(unixfrom, policy)
        from io import BytesIO

        buffer = BytesIO()
        render(self, buffer, policy)
        return buffer.getvalue()

    def as_string(
        self,
        unixfrom: bool = False,
        maxheaderlen: int | None = None,
        policy: email.policy.Policy | None = None,
    ) -> str:
        if unixfrom or not has_streamed_parts(self):
            return super().as_string(unixfrom, maxheaderlen, policy)
        policy = policy or self.policy
        if maxheaderlen is not None:
            policy = policy.clone(max_line_length=maxheaderlen)
        return self.as_bytes(policy=policy).decode("utf-8", "surrogateescape")


class _FilePart(_Rendered):
    """An attachment sent as base64 that is read from its file only when it is written.

    `build` keeps the path and what the file was (device, inode, size); `render`
    reopens it and writes its base64 a block at a time, closing it before it returns.
    Readers of the part get what they would get from an ordinary part: `get_payload()`
    the base64 text and `get_payload(decode=True)` the bytes, read whole from the file.
    """

    def __init__(self, path: str, info: os.stat_result) -> None:
        super().__init__(policy=POLICY)
        self.path = path
        self.size = info.st_size
        self._identity = (info.st_dev, info.st_ino)

    def get_payload(self, i: int | None = None, decode: bool = False) -> Any:
        if i is not None:
            raise TypeError("Expected list, got <class 'str'>")  # what any leaf part says
        if decode:
            with self._open() as handle:
                return b"".join(self._blocks(handle))
        from io import BytesIO

        text = BytesIO()
        self.write_base64(text, b"\n")  # the email package keeps payloads with LF
        return text.getvalue().decode("ascii")

    def write_base64(self, out: Writer, linesep: bytes) -> None:
        """The file as base64 lines of POLICY's length, as `set_content` would cut them,
        each ended by `linesep`."""
        import struct

        width = _B64_LINE // 3 * 4
        # A whole block's base64 is its lines end to end (a line is 54 octets, a multiple
        # of 3); one `unpack` cuts them all in C and one `join` puts the line ends in,
        # instead of a Python loop over every 72-character line (most of the time of a
        # big attachment).
        cut = struct.Struct(f"{width}s" * (_B64_BLOCK // _B64_LINE))
        with self._open() as handle:
            for data in self._blocks(handle):
                text = binascii.b2a_base64(data, newline=False)
                if len(text) == cut.size:
                    lines = cut.unpack(text)
                else:  # the last block
                    view = memoryview(text)
                    lines = tuple(view[at : at + width] for at in range(0, len(view), width))
                out.write(linesep.join((*lines, b"")))  # the last line ended too

    def _open(self) -> BinaryIO:
        """The attachment, checked to be the file `build` saw (the caller closes it)."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 (returned to a with block)
        except OSError as err:
            raise self._unreadable(err.strerror or str(err)) from err
        try:
            info = os.fstat(handle.fileno())
            if (info.st_dev, info.st_ino) != self._identity:
                raise self._unreadable("the file was replaced after mail first read it")
        except BaseException:
            handle.close()
            raise
        return handle

    def _blocks(self, handle: BinaryIO) -> Iterator[bytes]:
        """`size` octets of `handle`, in blocks of whole base64 lines (the last one short)."""
        left = self.size
        while left:
            try:
                # A buffered read returns the whole block unless the file ends first, so
                # every block but the last makes whole lines.
                data = handle.read(min(_B64_BLOCK, left))
            except OSError as err:
                raise self._unreadable(err.strerror or str(err)) from err
            if not data:
                raise self._unreadable("the file shrank after mail first read it")
            left -= len(data)
            yield data

    def _unreadable(self, why: str) -> NoInputError:
        return NoInputError(
            f"cannot read attachment: {why}", path=self.path, hint="check the -a path"
        )


def render(msg: EmailMessage, out: Writer, policy: email.policy.Policy | None = None) -> None:
    """Write `msg` to `out` as `msg.as_bytes(policy=policy)` writes it, byte for byte.

    The multipart framing (RFC 2046 section 5.1) is written here, each part in memory by
    the email package, except a big attachment (`_FilePart`): its headers come from the
    email package, its base64 from the file, a block at a time, so memory stays small
    whatever its size. Line ends are `policy.linesep` (default: the message's policy).

    Raises NoInputError when a big attachment cannot be read again or has changed.
    """
    _render(msg, out, policy or msg.policy)


def has_streamed_parts(msg: EmailMessage) -> bool:
    """Whether `msg` holds an attachment that `render` encodes from its file."""
    return any(isinstance(part, _FilePart) for part in msg.walk())


def _render(msg: EmailMessage, out: Writer, policy: email.policy.Policy) -> None:
    from email.generator import BytesGenerator
    from io import BytesIO

    linesep = policy.linesep.encode("ascii")
    if isinstance(msg, _FilePart):
        out.write(_headers(msg, policy))
        msg.write_base64(out, linesep)
        return
    payload = msg.get_payload()
    subparts = [p for p in payload if isinstance(p, EmailMessage)] if msg.is_multipart() else []
    if (
        msg.get_content_maintype() != "multipart"
        or not isinstance(payload, list)
        or len(subparts) != len(payload)
    ):
        BytesGenerator(out, mangle_from_=False, policy=policy).flatten(msg)
        return
    # Each part as the generator writes it: in memory, or (holding a file) only its
    # headers yet; its body is written when its turn comes.
    pieces: list[tuple[bytes, EmailMessage | None]] = []
    for part in subparts:
        if isinstance(part, _FilePart):
            pieces.append((_headers(part, policy), part))
        elif has_streamed_parts(part):
            pieces.append((b"", part))  # a multipart holding one: framed the same way
        else:
            buffer = BytesIO()
            BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(part)
            pieces.append((buffer.getvalue(), None))
    boundary = msg.get_boundary()
    if boundary is None:
        boundary = _boundary([text for text, _ in pieces])
        msg.set_boundary(boundary)  # as the generator does: the next rendering reuses it
    delimiter = b"--" + boundary.encode("ascii")
    out.write(_headers(msg, policy))
    if msg.preamble is not None:
        out.write(_lines(msg.preamble, linesep) + linesep)
    out.write(delimiter + linesep)
    for index, (text, streamed) in enumerate(pieces):
        if index:
            out.write(linesep + delimiter + linesep)
        out.write(text)
        if isinstance(streamed, _FilePart):
            streamed.write_base64(out, linesep)
        elif streamed is not None:
            _render(streamed, out, policy)
    out.write(linesep + delimiter + b"--" + linesep)
    if msg.epilogue is not None:
        out.write(_lines(msg.epilogue, linesep))


def _headers(msg: EmailMessage, policy: email.policy.Policy) -> bytes:
    """The header block of `msg` and the empty line after it, as the generator folds it."""
    folded = [policy.fold_binary(name, value) for name, value in msg.items()]
    folded.append(policy.linesep.encode("ascii"))
    return b"".join(folded)


def _lines(text: str, linesep: bytes) -> bytes:
    """A preamble or epilogue with its line ends made `linesep`, as the generator does."""
    return linesep.join(re.split(rb"\r\n|\r|\n", text.encode("ascii", "surrogateescape")))


def _boundary(texts: Sequence[bytes]) -> str:
    """A random boundary that no part held in memory contains.

    The parts encoded from a file are not searched: they are base64, whose alphabet
    (A-Z, a-z, 0-9, "+", "/", "=") has neither "-" nor "_", so no line of theirs can
    start with the delimiter "--=_". Quoted-printable cannot hold "=_" either ("=" is
    always followed by two hex digits or the line end), but 7bit text can hold anything,
    hence the search of what is in memory (the headers of every part included).
    """
    while True:
        boundary = "=_" + os.urandom(12).hex()
        delimiter = b"--" + boundary.encode("ascii")
        if not any(delimiter in text for text in texts):
            return boundary
