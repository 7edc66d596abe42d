"""Recipients: the one model, classifier, IDNA encoder and duplicate key of the project.

Every place that reads a recipient (`sendmail` arguments, `-t` headers, the Aliases
file, `mail` arguments, mail.rc alias members, `~t`, `mail-alias add`, the To/Cc/Bcc
builder) asks this module what it is, so they all accept and refuse the same things and
agree on when two recipients are one:

- `classify(text)` -> `Recipient`, or `DataError` (exit 65) saying what is wrong and
  what to write instead. Forms: `local@domain` (UTF-8 local parts included: they need
  SMTPUTF8, which the SMTP layer asks for or refuses), `Name <local@domain>`,
  `"Doe, John" <j@x>`, `local@domain (Name)`, s-nail's `Name<addr>`, a bare local name,
  `\\name` (not expanded further), and `/file` and `|pipe` targets (classified so that
  callers can refuse them by name).
- A comment or display part that would change the envelope address is refused, never
  reinterpreted: `$(touch x)@example.org` reads, for RFC 5322, as `$@example.org` with
  a comment, and `a@b.org <c@d.org>` as two addresses.
- `idna_domain(domain)`: the one IDNA encoder; the envelope always carries A-labels.
- `dedupe_key(address)`: local part exactly as written (RFC 5321 2.4 leaves its case to
  the receiving host), domain case-folded and IDNA-encoded; `dedupe()` applies it.

Start-up cost matters (every cron job's `sendmail` classifies its recipients), so this
module uses str methods only: no `re`, `typing`, `dataclasses` or `email` at run time.
Only an unusual display name (quotes, comments, non-ASCII text) is handed to the `email`
package, lazily, to be written as a header.
"""

from __future__ import annotations

from relay.errors import DataError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import TypeVar

    T = TypeVar("T")

#: What a recipient is.
ADDRESS = "address"  # local@domain, delivered through the mailhub (or resolved as local)
LOCAL = "local"  # a bare name: an alias, or a user of this host
FILE = "file"  # /path: s-nail would append to a file; refused by every command here
PIPE = "pipe"  # |command: s-nail would run it; refused by every command here

# RFC 5321 4.5.3.1: local part 64 octets, domain 255, a whole path 256.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

# RFC 5322 3.2.3 atext; RFC 6531 adds every non-ASCII character (checked separately).
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
)
# Display-name words written bare in a header (the email package writes them unchanged).
_PLAIN_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_'+- ")
_STRIP = " \t"


class Recipient:
    """One recipient, as written and as it goes into the envelope.

    `written`: the text it came from; `display_name`: the name for the header, or "";
    `address`: the addr-spec as written (or the local name, file, pipe); `kind`: one of
    ADDRESS, LOCAL, FILE, PIPE; `envelope`: what goes into RCPT TO (IDNA domain, folded
    to lower case) or, for a local name, the name the relay resolves; `via`: the alias
    chain that led here (outermost first), set by alias expansion.
    """

    __slots__ = ("_header", "address", "display_name", "envelope", "kind", "via", "written")

    def __init__(
        self,
        written: str,
        address: str,
        kind: str = ADDRESS,
        *,
        display_name: str = "",
        envelope: str | None = None,
        via: tuple[str, ...] = (),
    ) -> None:
        self.written = written
        self.address = address
        self.kind = kind
        self.display_name = display_name
        self.envelope = address if envelope is None else envelope
        self.via = via
        self._header: str | None = None

    def __repr__(self) -> str:
        return (
            f"Recipient({self.written!r}, {self.address!r}, {self.kind!r}, "
            f"display_name={self.display_name!r}, envelope={self.envelope!r}, via={self.via!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Recipient):
            return NotImplemented
        return (self.written, self.address, self.kind, self.display_name, self.envelope) == (
            other.written,
            other.address,
            other.kind,
            other.display_name,
            other.envelope,
        ) and self.via == other.via

    def __hash__(self) -> int:
        return hash((self.address, self.kind, self.envelope))

    @property
    def key(self) -> str:
        """The duplicate key (`dedupe_key`): equal keys are one recipient."""
        return self.envelope if self.kind == ADDRESS else self.address

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0] if self.kind == ADDRESS else self.address

    @property
    def domain(self) -> str | None:
        """The domain as written; None for anything but an address."""
        return self.address.rpartition("@")[2] if self.kind == ADDRESS else None

    @property
    def needs_smtputf8(self) -> bool:
        """A UTF-8 local part: deliverable only through a server offering SMTPUTF8."""
        return not self.envelope.isascii()

    @property
    def header(self) -> str:
        """The To/Cc form: `Name <local@a-label.domain>`, `local@domain`, or the name."""
        if self._header is None:
            self._header = self._make_header()
        return self._header

    def header_address(self) -> str:
        """The addr-spec for a header: local part as written, domain in A-labels."""
        if self.kind != ADDRESS:
            return self.address
        local, _, domain = self.address.rpartition("@")
        return f"{local}@{idna_domain(domain)}"

    def with_via(self, via: tuple[str, ...]) -> Recipient:
        copy = Recipient(
            self.written,
            self.address,
            self.kind,
            display_name=self.display_name,
            envelope=self.envelope,
            via=via,
        )
        copy._header = self._header
        return copy

    def _make_header(self) -> str:
        address = self.header_address()
        name = self.display_name
        if not name:
            return address
        if all(c in _PLAIN_NAME for c in name) and name.strip() == name and "  " not in name:
            return f"{name} <{address}>"
        from email.headerregistry import Address

        local, _, domain = address.rpartition("@")
        return str(Address(display_name=name, username=local, domain=domain))


# --- the IDNA encoder and the duplicate key -------------------------------------------


def idna_domain(domain: str) -> str:
    """`domain` in ASCII: A-labels for non-ASCII labels (IDNA 2003, Python's codec, the
    same the stdlib SMTP tools use). Raises DataError when it cannot be encoded."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as err:
        raise DataError(
            f"domain cannot be encoded with IDNA: '{_shown(domain)}' ({err}); "
            "check the spelling of the domain"
        ) from None


def idna_address(address: str) -> str:
    """`local@domain` with the domain in A-labels; the local part is left as written."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii() or domain.startswith("["):
        return address
    return f"{local}@{idna_domain(domain)}"


def dedupe_key(address: str) -> str:
    """The duplicate key of an envelope address or local name: the local part exactly as
    written, the domain IDNA-encoded and folded to lower case. `Bob@Example.org` and
    `Bob@example.ORG` are one recipient; `bob@example.org` is another (RFC 5321 2.4)."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    try:
        ascii_domain = idna_domain(domain)
    except DataError:
        ascii_domain = domain  # not deliverable anyway; still folded, still comparable
    return f"{local}@{ascii_domain.lower()}"


def key_of(item: Recipient | str) -> str:
    """The duplicate key of a Recipient, or of a string as `classify` reads it."""
    if isinstance(item, Recipient):
        return item.key
    try:
        return classify(item).key
    except DataError:
        return item


def dedupe(
    items: Iterable[T],
    key: Callable[[T], str] | None = None,
    *,
    seen: set[str] | None = None,
) -> list[T]:
    """`items` without duplicates, first one wins, in order. `key` defaults to `key_of`
    (items are Recipients or strings); pass the same `seen` set to dedupe several lists
    against each other (To, then Cc, then Bcc)."""
    get = key or key_of
    found: set[str] = set() if seen is None else seen
    out: list[T] = []
    for item in items:
        k = get(item)  # type: ignore[arg-type]
        if k not in found:
            found.add(k)
            out.append(item)
    return out


# --- the classifier -------------------------------------------------------------------


def _shown(text: str) -> str:
    """`text` for a one-line message: control characters and stray bytes escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Refused(Exception):
    """Why a text names no recipient, and (optionally) what to write instead."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


def classify(text: str, what: str = "recipient") -> Recipient:
    """The recipient `text` names, or DataError (exit 65): `invalid WHAT 'TEXT': PROBLEM`
    and, where one helps, `; FIX`."""
    try:
        return _classify(text)
    except _Refused as refused:
        message = f"invalid {what} '{_shown(text)}': {refused.problem}"
        raise DataError(message + (f"; {refused.fix}" if refused.fix else "")) from None


def problem(text: str) -> str | None:
    """Why `text` names no recipient (the problem part of `classify`'s error), or None."""
    try:
        _classify(text)
    except _Refused as refused:
        return refused.problem
    return None


def is_local_name(name: str) -> bool:
    """s-nail's rule for a user or alias name as a recipient (measured against s-nail
    v14.9): `[A-Za-z0-9_]` first, then also `-#@!.` and printable non-ASCII characters,
    and `$` as the last character. Login names, `www-data`, `first.last` pass."""
    if not name or not (name[0].isascii() and (name[0].isalnum() or name[0] == "_")):
        return False
    last = len(name) - 1
    for position, char in enumerate(name):
        if not char.isascii():
            if not char.isprintable() or "\udc80" <= char <= "\udcff":
                return False
            continue
        if char.isalnum() or char in "_-#@!.":
            continue
        if char == "$" and position == last and position > 0:
            continue
        return False
    return True


def _classify(text: str) -> Recipient:
    value = text.strip(_STRIP)
    if not value:
        raise _Refused("empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _Refused("contains a control character (CR, LF, NUL...)", "refused as an injection")
    if any("\udc80" <= c <= "\udcff" for c in value):
        raise _Refused("contains bytes that are not UTF-8")
    if value.startswith("-"):
        raise _Refused(
            "starts with '-' (looks like an option)", "options must come before the recipients"
        )
    if value.startswith("|") and not _is_addr_spec(value):
        return Recipient(text, value, PIPE)
    if value.startswith("\\"):
        if not is_local_name(value[1:]):
            raise _Refused("not a valid local name")
        return Recipient(text, value[1:], LOCAL)
    bare = _outside_quotes(value)
    if "<" in bare or ">" in bare:
        return _angle(text, value)
    if "(" in bare or ")" in bare:
        return _commented(text, value)
    if "@" in value:
        if "," in bare:
            raise _Refused("a list of addresses, not one", "give each address separately")
        address = _addr_spec(value)
        return Recipient(text, address, ADDRESS, envelope=envelope_address(address))
    if value.startswith(("/", "+", "./")) or "/" in value:
        return Recipient(text, value, FILE)
    if not is_local_name(value):
        raise _Refused("not a valid address or local name")
    return Recipient(text, value, LOCAL)


def envelope_address(address: str) -> str:
    """The envelope form of `local@domain`: the local part as written, the domain in
    IDNA A-labels and lower case (equal to its `dedupe_key`). A name without `@` and an
    address literal are returned unchanged."""
    local, at, domain = address.rpartition("@")
    if not at or domain.startswith("["):
        return address
    return f"{local}@{idna_domain(domain).lower()}"


def _angle(text: str, value: str) -> Recipient:
    """`Name <addr>`, `"Doe, John" <addr>`, `<addr>` and s-nail's `Name<addr>`."""
    opened = value.rfind("<")
    if not value.endswith(">") or opened < 0 or ">" in value[opened + 1 : -1]:
        raise _Refused("expected 'Name <address>'")
    phrase = value[:opened].strip(_STRIP)
    if not phrase.startswith('"') and ("<" in phrase or ">" in phrase):
        raise _Refused("more than one '<address>'", "give each address separately, comma-separated")
    name = _display_name(phrase)
    address = _addr_spec(value[opened + 1 : -1].strip(_STRIP))
    return Recipient(text, address, ADDRESS, display_name=name, envelope=envelope_address(address))


def _display_name(phrase: str) -> str:
    """The display name of `phrase` (before `<addr>`), quotes removed, comments dropped.

    A quoted name may hold anything but a control character; a bare one may not hold what
    RFC 5322 makes a separator (`@`, `<`, `>`, `"`, `\\`), since a reader could take it
    for another address."""
    if not phrase:
        return ""
    if phrase.startswith('"'):
        end = _quoted_end(phrase, 0)
        if end != len(phrase):
            raise _Refused("unbalanced quotes in the display name", 'quote the whole name: "Name"')
        return " ".join(unquote(phrase[1:-1]).split())
    if '"' in phrase or "\\" in phrase:
        raise _Refused("unbalanced quotes in the display name", 'quote the whole name: "Name"')
    if "@" in phrase:
        raise _Refused(
            "the display name holds an '@' (it reads as a second address)",
            'quote the name ("a@b" <address>) or give the addresses comma-separated',
        )
    if "(" in phrase or ")" in phrase:
        phrase = _drop_comments(phrase)
    return " ".join(phrase.split())


def unquote(text: str) -> str:
    """The content of an RFC 5322 quoted string (without its quotes): each `\\x` is `x`."""
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def _outside_quotes(value: str) -> str:
    """`value` without its quoted strings, to look for syntax characters."""
    if '"' not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == '"':
            end = _quoted_end(value, i)
            if end < 0:
                return value
            i = end
            continue
        out.append(value[i])
        i += 1
    return "".join(out)


def _drop_comments(phrase: str) -> str:
    """`phrase` without its RFC 5322 comments (nesting allowed); unbalanced: refused."""
    out: list[str] = []
    depth = 0
    for char in phrase:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise _Refused("unbalanced parentheses")
        elif depth == 0:
            out.append(char)
    if depth:
        raise _Refused("unbalanced parentheses")
    return "".join(out)


def _commented(text: str, value: str) -> Recipient:
    """`addr (Name)`: the comment may only follow a complete address, where it is an
    old-style display name; anywhere else it would change the address, so it is refused."""
    opened = value.find("(")
    head = value[:opened].rstrip(_STRIP)
    comment = value[opened:]
    whole_tail = (
        opened > 0 and value.endswith(")") and "@" in head and _comment_end(comment) == len(comment)
    )
    if not whole_tail and opened > 0 and _drop_comments_safely(value) == "".join(head.split()):
        raise _Refused(
            "more than one comment after the address",
            "give the name once: 'address (Name)' or 'Name <address>'",
        )
    if not whole_tail:
        raise _Refused(
            "a comment '( )' inside the address would change where the mail goes "
            f"(RFC 5322 reads it as '{_shown(_drop_comments_safely(value))}')",
            "write the address without parentheses, or as 'Name <address>'",
        )
    address = _addr_spec(head)
    name = " ".join(comment[1:-1].split())
    return Recipient(text, address, ADDRESS, display_name=name, envelope=envelope_address(address))


def _drop_comments_safely(value: str) -> str:
    try:
        return "".join(_drop_comments(value).split())
    except _Refused:
        return value


def _comment_end(text: str) -> int:
    """The index after the comment starting at text[0] == '(' (nesting, `\\` escapes)."""
    depth = 0
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def _quoted_end(text: str, start: int) -> int:
    """The index after the quoted string starting at text[start] == '"', or -1."""
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == '"':
            return i + 1
        i += 1
    return -1


def _addr_spec(value: str) -> str:
    """`value` if it is an addr-spec we can put in an SMTP path (local part a dot-atom,
    UTF-8 allowed, or a quoted string; domain a dot-atom of letters, digits and hyphens,
    UTF-8 allowed, or an address literal), else _Refused saying why."""
    if not value:
        raise _Refused("no address")
    if value.startswith('"'):
        end = _quoted_end(value, 0)
        if end < 0:
            raise _Refused("unbalanced quotes in the local part")
        local, at, domain = value[:end], value[end : end + 1], value[end + 1 :]
        if at != "@":
            raise _Refused("not a valid address (expected '@' after the quoted local part)")
    else:
        local, at, domain = value.rpartition("@")
        if not at:
            raise _Refused("not a valid address (no '@')")
        if not local:
            raise _Refused("not a valid address (nothing before the '@')")
        if not _dot_atom(local):
            bad = "@" if "@" in local else next((c for c in local if not _atext(c)), ".")
            raise _Refused(
                f"not a valid address ('{_shown(bad)}' in the local part)",
                'quote a local part with special characters: "a b"@example.org',
            )
    if not domain:
        raise _Refused("not a valid address (nothing after the '@')")
    if domain.startswith("["):
        if not domain.endswith("]") or any(c in "[]\\ " for c in domain[1:-1]):
            raise _Refused("not a valid address (malformed address literal)")
    elif not _domain(domain):
        raise _Refused(f"not a valid address (malformed domain '{_shown(domain)}')")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise _Refused(f"local part longer than {MAX_LOCAL_PART} octets")
    if len(idna_domain(domain) if not domain.startswith("[") else domain) > MAX_DOMAIN:
        raise _Refused(f"domain longer than {MAX_DOMAIN} octets")
    if len(value.encode("utf-8")) > MAX_PATH:
        raise _Refused(f"address longer than {MAX_PATH} octets")
    return value


def _is_addr_spec(value: str) -> bool:
    try:
        _addr_spec(value)
    except _Refused:
        return False
    return True


def _atext(char: str) -> bool:
    if char.isascii():
        return char in _ATEXT
    return char.isprintable() and not ("\udc80" <= char <= "\udcff") and not char.isspace()


def _dot_atom(text: str) -> bool:
    return all(part and all(_atext(c) for c in part) for part in text.split("."))


def _domain(domain: str) -> bool:
    for label in domain.split("."):
        if not label:
            return False
        for char in label:
            if char.isascii():
                if char not in _ATEXT:  # RFC 5322 dot-atom, as s-nail and the stdlib read
                    return False
            elif not char.isalnum():
                return False
    try:
        idna_domain(domain)
    except DataError:
        return False
    return True


def argument(text: str, what: str = "recipient") -> Recipient:
    """A recipient given on a command line (`sendmail`, `mail`): `classify`, and file and
    pipe targets refused (DataError, 65): mail goes to addresses and aliases only."""
    found = classify(text, what)
    if found.kind in (FILE, PIPE):
        raise DataError(
            f"{found.kind} {what} refused: '{_shown(found.address)}'; "
            "mail is delivered to addresses and aliases only"
        )
    return found


# --- lists ----------------------------------------------------------------------------


def split_list(text: str, *, keep_empty: bool = False) -> list[str]:
    """Split a comma-separated recipient list (a header value, a `sendmail` argument) at
    the commas outside quotes, angle brackets and comments. An RFC 5322 group
    (`team: a@x, b@y;`) gives its members. Empty items are dropped, or with
    `keep_empty` kept as "" (`a@x,,b@y` is then a mistake the caller can name)."""
    if "," not in text and ":" not in text and ";" not in text:
        return [text.strip(_STRIP)] if text.strip(_STRIP) or keep_empty else []
    items: list[str] = []
    current: list[str] = []
    i, depth, angle = 0, 0, False
    while i < len(text):
        char = text[i]
        if char == '"' and depth == 0:
            end = _quoted_end(text, i)
            stop = len(text) if end < 0 else end
            current.append(text[i:stop])
            i = stop
            continue
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif char == "<" and depth == 0:
            angle = True
        elif char == ">" and depth == 0:
            angle = False
        elif depth == 0 and not angle and char in ",;":
            if char == "," or "".join(current).strip(_STRIP):  # `;` closes a group
                items.append("".join(current))
            current = []
            i += 1
            continue
        elif depth == 0 and not angle and char == ":" and "@" not in "".join(current):
            current = []  # `group-name:` opens a group; its members follow
            i += 1
            continue
        current.append(char)
        i += 1
    items.append("".join(current))
    stripped = [item.strip(_STRIP) for item in items]
    return stripped if keep_empty else [item for item in stripped if item]


def parse_list(text: str, what: str = "recipient") -> list[Recipient]:
    """Every recipient of a comma-separated list (`split_list`), classified."""
    return [classify(item, what) for item in split_list(text)]
