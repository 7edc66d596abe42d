"""Build the message `mail` sends: RFC 5322 headers and a MIME body (DESIGN 3.1).

Everything on the wire is made by the standard library's `email` package: header
folding and RFC 2047 encoded-words, address quoting, RFC 2231 file names, quoted-printable
and base64, multipart assembly. This module only makes the decisions s-nail makes and
validates what it is given. Formats: RFC 5322 (message, header order of s-nail), RFC 2045
and 2046 (MIME, transfer encodings, text/plain), RFC 2047 (non-ASCII header text), RFC 2183
and 2231 (Content-Disposition and its file name), RFC 5321 section 4.5.3.1 (length
limits), RFC 1428 (`unknown-8bit`), RFC 4155 (mbox `From ` lines), RFC 3490 (IDNA).

Decisions, where s-nail leaves room or where we differ from it:

* MIME-Version and Content-Type are always written, even for a plain ASCII body
  (s-nail writes none then). RFC 2045 section 5.2 makes both forms mean the same; one
  code path is simpler and states the charset explicitly.
* Text line ends: LF, CRLF and a lone CR each end a line, and a text body that does not
  end in a newline gets one. RFC 2046 section 4.1.1 allows CR and LF in text only as the
  CRLF pair, and SMTP ends the data with CRLF anyway. s-nail instead keeps a lone CR as
  `=0D` and a missing final newline as a trailing soft break. An empty body stays empty.
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
  A big binary attachment (over `STREAM_AT`) is the exception (DESIGN 8): the file is
  opened once and its base64 made from it when the message is written, a piece at a
  time by `render` (which `mail` uses to deliver), whole for anything else that reads
  the part; the output is the same byte for byte.
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
import getpass
import mimetypes
import os
import re
import stat
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from typing import TYPE_CHECKING, Any, ClassVar

from relay import (
    ConfigError,
    DataError,
    NoInputError,
    Recipient,
    __version__,
    classify_recipient,
    dedupe_recipients,
    recipient_problem,
    split_recipient_list,
)

if TYPE_CHECKING:
    from typing import Protocol

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

#: RFC 5322 section 2.1.1: a line, without its CRLF, is at most 998 octets.
MAX_LINE = 998
#: RFC 5321 section 4.5.3.1.1 and 4.5.3.1.2.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255

_PREAMBLE = "This is a multi-part message in MIME format."

#: Bytes file(1) does not count as text: binary content.
_BINARY = re.compile(rb"[\x00-\x06\x0e-\x1a\x1c-\x1f\x7f]")
#: Control bytes legal in 7bit data but safer encoded (everything but TAB, CR, LF).
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LONG_LINE = re.compile(rb"[^\r\n]{%d}" % (MAX_LINE + 1))
_FROM_LINE = re.compile(rb"(?:\A|[\r\n])From ")
_BARE_CR = re.compile(rb"\r(?!\n)")
#: A quoted-printable line that starts with "From " (the payload uses LF line ends).
_QP_FROM_LINE = re.compile(r"^From ", re.MULTILINE)
#: RFC 5322 section 3.6.8: ftext, printable ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")
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
_COMPRESSED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
}
_CHUNK = 1 << 20
#: Binary attachments larger than this are encoded from the file as the message is
#: written (`_FilePart`), never held whole.
STREAM_AT = 1 << 20
#: Octets per base64 line at POLICY's length (72 characters), as the email package cuts.
_B64_LINE = (POLICY.max_line_length or 78) // 4 * 3


@dataclass(frozen=True)
class Draft:
    """What the user asked to send; `build` turns it into the message.

    Addresses are in header form ("My Name <someone@example.com>", or a bare local name
    such as "bob" in To, Cc and Bcc, which the relay resolves); an entry may hold several,
    separated by commas. Bcc is never written to the headers.
    """

    to: Sequence[str]
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    subject: str | None = None
    #: Raw bytes as read from stdin: any encoding, NUL, lone CR, long lines, no final LF.
    body: bytes = b""
    #: File paths for `-a`.
    attachments: Sequence[str] = ()
    #: From header; None: no From unless `hostname` is set (the relay adds it otherwise).
    from_: str | None = None
    sender: str | None = None
    reply_to: Sequence[str] = ()
    #: "Name: value" strings from `-C`, `customhdr` or `-t`.
    custom_headers: Sequence[str] = ()
    hostname: str | None = None
    sendcharsets: Sequence[str] = ("utf-8",)
    #: The charset the body bytes are in (s-nail's `ttycharset`).
    input_charset: str = "utf-8"
    #: None: `default_user_agent()`; "": no User-Agent header.
    user_agent: str | None = None


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

    msg = EmailMessage(policy=POLICY)
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


def _address(recipient: Recipient) -> Address:
    """The `email` package's Address for the header: local part unquoted (the package
    quotes it again where needed), domain in IDNA A-labels."""
    if recipient.kind == "local":
        return Address(recipient.display_name, recipient.address, "")
    local, _, domain = recipient.header_address().rpartition("@")
    if local.startswith('"') and local.endswith('"'):
        local = _unquote(local[1:-1])
    return Address(recipient.display_name, local, domain)


def _unquote(text: str) -> str:
    """The content of an RFC 5322 quoted string: each `\\x` is `x`."""
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def default_user_agent() -> str:
    """`mailx-relay VERSION`, the User-Agent written unless the draft names another."""
    # relay's constant, not importlib.metadata: reading package metadata costs every
    # `mail` call several milliseconds of start-up.
    return f"mailx-relay {__version__}"


def _recipients(draft: Draft) -> tuple[list[Address], list[Address], list[Address]]:
    """To, Cc and Bcc for the headers, deduplicated together (`_recipient_lists`)."""
    to, cc, bcc = _recipient_lists(draft)
    return [_address(r) for r in to], [_address(r) for r in cc], [_address(r) for r in bcc]


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
    user = login if login is not None else getpass.getuser()
    if not user or _has_control(user) or len(user.encode()) > MAX_LOCAL_PART:
        raise DataError(f"login name {user!r} cannot be used in a From address")
    try:
        return Address(username=user, domain=domain)
    except ValueError as err:
        raise DataError(f"login name {user!r} cannot be used in a From address") from err


def _parse_custom_header(header: str) -> tuple[str, str]:
    name, colon, value = header.partition(":")
    if not colon or not _FIELD_NAME.match(name):
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


def _streamed_attachment(path: str) -> EmailMessage | None:
    """A big binary attachment as a `_FilePart`, or None for the ordinary way."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # the ordinary way reports it
    try:
        info = os.fstat(fd)
        mime, encoding = mimetypes.guess_type(os.path.basename(path))
        if encoding is not None:
            mime = _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
        if not stat.S_ISREG(info.st_mode) or info.st_size <= STREAM_AT or mime is None:
            os.close(fd)
            return None
        maintype, _, subtype = mime.partition("/")
        if maintype in ("text", "message", "multipart") or not subtype:
            os.close(fd)
            return None
    except OSError:
        os.close(fd)
        return None
    part = _FilePart(fd, info.st_size)
    part.set_content(b"", maintype, subtype, cte="base64", filename=_attachment_name(path))
    part.attach_file()
    return part


class _FilePart(EmailMessage):
    """An attachment whose base64 payload is made from an open file when it is read.

    Whatever reads `_payload` (the email package's generator, `get_payload`) gets the
    whole base64 text, as for any part; only `render` sees a one-line token in its place
    and writes the encoded file there a piece at a time.
    """

    #: Set by `render` while it generates.
    streaming: ClassVar[bool] = False

    def __init__(self, fd: int, size: int) -> None:
        self._source: tuple[int, int] | None = None
        super().__init__(policy=POLICY)
        self._fd, self._size = fd, size
        self.token = f"MAILX-RELAY-ATTACHMENT-{fd}-{id(self):x}\n"

    def attach_file(self) -> None:
        self._source = (self._fd, self._size)

    def is_multipart(self) -> bool:
        return False  # without reading the payload, which `walk` would otherwise make

    @property
    def _payload(self) -> Any:
        if self._source is None:
            return self.__dict__.get("_stored")
        if _FilePart.streaming:
            return self.token
        return "".join(chunk.decode("ascii") for chunk in self.base64(b"\n"))

    @_payload.setter
    def _payload(self, value: Any) -> None:
        self.__dict__["_stored"] = value

    def base64(self, linesep: bytes) -> Iterator[bytes]:
        """The file as base64 lines of POLICY's length, each ended by `linesep`."""
        assert self._source is not None
        fd, size = self._source
        block = _B64_LINE * 4096
        offset = 0
        width = _B64_LINE // 3 * 4
        while offset < size:
            data = os.pread(fd, min(block, size - offset), offset)
            if not data:
                raise NoInputError("attachment shrank while it was being sent")
            offset += len(data)
            text = binascii.b2a_base64(data, newline=False)
            yield linesep.join(text[i : i + width] for i in range(0, len(text), width)) + linesep

    def __deepcopy__(self, memo: dict[int, Any]) -> _FilePart:
        import copy

        clone = _FilePart.__new__(_FilePart)
        for key, value in self.__dict__.items():
            clone.__dict__[key] = copy.deepcopy(value, memo)
        return clone


def render(msg: EmailMessage, out: Writer, policy: email.policy.Policy | None = None) -> None:
    """Write `msg` as `msg.as_bytes(policy=policy)` would, to `out`, encoding each big
    attachment from its file in pieces (see `_FilePart`) instead of holding it."""
    from email.generator import BytesGenerator
    from io import BytesIO

    policy = policy or msg.policy
    parts = {p.token.encode("ascii"): p for p in msg.walk() if isinstance(p, _FilePart)}
    buffer = BytesIO()
    _FilePart.streaming = True
    try:
        BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(msg)
    finally:
        _FilePart.streaming = False
    data = buffer.getvalue()
    linesep = policy.linesep.encode("ascii")
    position = 0
    for token, part in parts.items():
        marker = token[:-1] + linesep
        found = data.find(marker, position)
        if found < 0:
            continue
        out.write(data[position:found])
        for chunk in part.base64(linesep):
            out.write(chunk)
        position = found + len(marker)
    out.write(data[position:])


def has_streamed_parts(msg: EmailMessage) -> bool:
    return any(isinstance(part, _FilePart) for part in msg.walk())
