"""Who the message is from and where it goes: docs/architecture.md, "Sender", "Recipients".

Sender: `user@rewriteDomain` (or `@hostname`), display name from GECOS (`-F` beats it),
`revaliases` per user; `FromLineOverride=yes` keeps the message's From header and lets it,
or `-f`, name the envelope sender.

Recipients, in order: a remote address is used as is (IDNA for non-ASCII domains); a local
name (bare, `@localhost`, `@<this host>`) goes through the `Aliases` file (recursive,
`default:` catch-all); a system account (UID < 1000) left over goes to `root=`; any other
local name is refused with EX_NOUSER. `rewriteDomain` is never appended to a recipient:
that is ssmtp's trap of sending mail for local users to strangers.
"""

from __future__ import annotations

# `_socket`, not `socket`: gethostname is the C module's own, and `socket`'s import (its
# IntEnum conversion of every AF_ and SOCK_ constant) costs every `sendmail` ~10 ms.
import _socket
import os

from relay.aliases import AliasFile, expand
from relay.config import Config, Mailhub
from relay.errors import DataError, NoUserError, RelayError
from relay.plain import PLAIN_ADDRESS, PLAIN_NAME
from relay.recipients import dedupe, dedupe_key, envelope_address
from relay.records import Record, TupleValue

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

#: ssmtp's MAXSYSUID + 1: accounts below this are system accounts, mail for them goes to root=.
FIRST_USER_UID = 1000


class Identity(TupleValue):
    """The invoking user, as the operating system knows them (a value; it was a NamedTuple)."""

    __slots__ = ("full_name", "login", "uid")
    _order = ("login", "uid", "full_name")

    def __init__(self, login: str, uid: int, full_name: str | None) -> None:
        self.login = login
        self.uid = uid
        self.full_name = full_name


def current_identity() -> Identity:
    """The real user: passwd entry of the real UID, `$LOGNAME`/`$USER` when it has none."""
    uid = os.getuid()
    return identity_of(uid, os.environ.get("LOGNAME") or os.environ.get("USER"))


def identity_of(uid: int, login: str | None = None) -> Identity:
    """The user `uid` (as the kernel reported it to the service or the pickup): its passwd
    entry (login, GECOS full name), else `login`, else the bare number."""
    import pwd

    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return Identity(login or str(uid), uid, None)
    full_name = entry.pw_gecos.split(",", 1)[0].strip() or None
    return Identity(entry.pw_name, uid, full_name)


def validate_address(address: str, what: str = "address") -> str:
    """Return `address` if it is a bare addr-spec or local name we can put in an SMTP
    path, else raise DataError (exit 65). `relay.recipients.classify` decides: CR, LF,
    NUL and other controls (header and SMTP command injection), a leading `-` (option
    injection into a downstream sendmail), comments, and anything that is not an
    addr-spec are refused; a UTF-8 local part passes (it needs SMTPUTF8, see smtp.py).
    """
    from relay.recipients import ADDRESS, LOCAL, classify

    if not address:
        raise DataError(f"empty {what}")
    found = classify(address, what)
    if found.kind == LOCAL and found.address == address:
        return address
    if found.kind == ADDRESS and found.address == address and not found.display_name:
        return address
    shown = address.encode("unicode_escape").decode("ascii")
    raise DataError(f"malformed {what}: '{shown}' (expected a bare address, local@domain)")


def split_address(address: str) -> tuple[str, str | None]:
    """`local@domain` -> (local, domain); a bare name -> (name, None)."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address, None
    return local, domain


def parse_recipient_args(args: Iterable[str]) -> list[str]:
    """Command-line recipients: each may be a comma list and may use `Name <addr>`; the
    envelope forms, deduplicated (`relay.recipients.dedupe`). Refused (DataError): what
    `relay.recipients.classify` refuses, and file and pipe targets."""
    from relay.recipients import LOCAL, argument, split_list

    out: list[str] = []
    for arg in args:
        if PLAIN_ADDRESS.fullmatch(arg) and not arg.startswith("-"):
            out.append(arg)  # the common case, as `classify` would return it
            continue
        for item in split_list(arg) or [arg]:
            found = argument(item)
            out.append(found.address if found.kind == LOCAL else as_path(found.envelope))
    return dedupe(out, dedupe_key)


def as_path(address: str) -> str:
    """An envelope address whose local part starts with `-` stays in its RFC 5321 path
    form, `<-odd@example.org>`, the only form in which it was accepted (`classify`
    refuses it bare: a leading `-` in an argument is an option injected into a
    downstream sendmail). The brackets tell `Resolver.resolve` that it was meant, and
    no program reads the word as an option. Any other address is returned as is."""
    return f"<{address}>" if address.startswith("-") else address


def explicit_path(recipient: str) -> str | None:
    """The address inside `<-odd@example.org>` (`as_path`), validated as a bare
    addr-spec but for its leading `-`; None when `recipient` is not in that form."""
    if not (recipient.startswith("<-") and recipient.endswith(">")):
        return None
    from relay.recipients import ADDRESS, classify

    found = classify(recipient, "recipient")
    if found.kind != ADDRESS or found.display_name or f"<{found.address}>" != recipient:
        shown = recipient.encode("unicode_escape").decode("ascii")
        raise DataError(f"malformed recipient: '{shown}' (expected <local@domain>)")
    return found.address


def idna_address(address: str) -> str:
    """The envelope form of an address (`relay.recipients.envelope_address`): the domain
    in IDNA A-labels and lower case; the local part is left as written (SMTPUTF8)."""
    return envelope_address(address)


def local_domains(config: Config) -> frozenset[str]:
    """The domains that mean "this host": localhost, `hostname=`, the kernel's host name."""
    names = {"localhost", "localhost.localdomain", _socket.gethostname().lower()}
    if config.hostname:
        names.add(config.hostname.lower())
    return frozenset(names)


# --- sender -------------------------------------------------------------------------


class Sender(Record):
    """The envelope sender and what to do with the From header."""

    __slots__ = ("envelope", "explanation", "from_header", "mailhub", "replace_from")

    def __init__(
        self,
        envelope: str,
        from_header: str | None,
        replace_from: bool,
        mailhub: Mailhub | None,
        explanation: str,
    ) -> None:
        self.envelope = envelope
        #: The From header to write: added when the message has none, or replacing the
        #: message's own when `replace_from`. None: keep the message's From as it is.
        self.from_header = from_header
        self.replace_from = replace_from
        self.mailhub = mailhub
        self.explanation = explanation


def sender_domain(config: Config) -> str:
    """The domain of sender addresses: rewriteDomain, else hostname, else the host name."""
    return config.rewrite_domain or config.hostname or _socket.gethostname()


def qualify_sender(address: str, config: Config) -> str:
    """A bare sender name (`-f root`, cron's `From: <root>`) gets the sender domain, as
    ssmtp's append_domain does: RFC 5321 4.1.2 wants a domain in MAIL FROM. Applies to
    the sender only; recipients are never qualified (docs/architecture.md, "Recipients")."""
    return address if "@" in address else f"{address}@{sender_domain(config)}"


def default_sender_address(config: Config, identity: Identity) -> tuple[str, str]:
    """(address, why): revaliases entry, else login@rewriteDomain, else login@hostname."""
    entry = config.revaliases.get(identity.login)
    if entry is not None:
        return entry.address, f"revaliases {config.revaliases_path}:{entry.line}"
    why = (
        "rewriteDomain"
        if config.rewrite_domain
        else ("hostname" if config.hostname else "host name")
    )
    return f"{identity.login}@{sender_domain(config)}", why


def format_from(display: str | None, address: str) -> str:
    if not display:
        return address
    if PLAIN_NAME.fullmatch(display) and PLAIN_ADDRESS.fullmatch(address):
        return f"{display} <{address}>"
    from email.headerregistry import Address

    username, _, domain = address.rpartition("@")
    return str(Address(display_name=display, username=username, domain=domain))


def resolve_sender(
    config: Config,
    identity: Identity,
    *,
    envelope_from: str | None = None,
    full_name: str | None = None,
    header_from: str | None = None,
) -> Sender:
    """Apply the sender rules (docs/architecture.md, "Sender"); `header_from`: the From address."""
    if envelope_from is not None:
        validate_address(envelope_from, "sender (-f)")
        envelope_from = qualify_sender(envelope_from, config)
    if header_from is not None:
        header_from = qualify_sender(header_from, config)
    if full_name is not None and any(ord(c) < 32 for c in full_name):
        raise DataError("full name (-F) contains a control character")
    display = full_name if full_name is not None else identity.full_name
    default, why = default_sender_address(config, identity)
    validate_address(default, "sender")
    entry = config.revaliases.get(identity.login)
    hub = entry.mailhub if entry is not None else None
    if config.from_line_override:
        if envelope_from:
            return Sender(
                envelope_from,
                None if header_from else format_from(display, envelope_from),
                False,
                hub,
                "from -f (FromLineOverride=yes)",
            )
        if header_from:
            validate_address(header_from, "From header address")
            return Sender(
                header_from, None, False, hub, "from the From header (FromLineOverride=yes)"
            )
        return Sender(default, format_from(display, default), False, hub, why)
    shown = envelope_from or default
    note = why
    if envelope_from:
        note += "; -f names only the From header (FromLineOverride=no)"
    if header_from:
        note += "; the message's From header is replaced (FromLineOverride=no)"
    return Sender(default, format_from(display, shown), True, hub, note)


# --- recipients -------------------------------------------------------------------------


class Resolved(Record):
    """One recipient as given, the final addresses, and how they were reached (for -bv)."""

    __slots__ = ("addresses", "given", "how")

    def __init__(self, given: str, addresses: tuple[str, ...], how: str) -> None:
        self.given = given
        self.addresses = addresses
        self.how = how


if TYPE_CHECKING:
    GetPwNam = Callable[[str], Any]


class Resolver:
    """Resolve recipients (docs/architecture.md, "Recipients"); one instance per submission."""

    def __init__(
        self,
        config: Config,
        aliases: AliasFile | None = None,
        getpwnam: GetPwNam | None = None,
        domains: frozenset[str] | None = None,
    ) -> None:
        import pwd

        self.config = config
        self.aliases = aliases
        self.getpwnam: GetPwNam = getpwnam or pwd.getpwnam
        self.domains = domains if domains is not None else local_domains(config)

    def local_part(self, address: str) -> str | None:
        """The local name if `address` means a user of this host, else None."""
        local, domain = split_address(address)
        if domain is None or domain.lower() in self.domains:
            return local
        return None

    def _lookup(self, name: str) -> Sequence[str] | None:
        local = self.local_part(name)
        if local is None or self.aliases is None:
            return None
        found = self.aliases.lookup(local)
        if found is None and self.aliases.default is not None:
            return self.aliases.default
        return found

    def resolve(self, recipient: str) -> Resolved:
        path = explicit_path(recipient)
        if path is not None:
            # `<-odd@example.org>`, as `mail -. -odd@example.org` passes it: it goes
            # only into RCPT TO:<...>, never onto a command line. Not a local name:
            # no account or alias starts with '-'.
            if self.local_part(path) is not None:
                raise NoUserError(
                    f"recipient '{recipient}' is a local name starting with '-': "
                    "no account or alias is named so, refused"
                )
            return Resolved(recipient, (idna_address(path),), "remote address")
        validate_address(recipient, "recipient")
        if self.local_part(recipient) is None:
            return Resolved(recipient, (idna_address(recipient),), "remote address")
        steps: list[str] = []
        addresses: list[str] = []
        for item in expand([recipient], self._lookup):
            where = f"alias file {self.aliases.path}" if self.aliases and item.via else ""
            address = item.address
            validate_address(address, f"address in {where or 'recipient'}")
            local = self.local_part(address)
            if local is None:
                addresses.append(idna_address(address))
                steps.append(f"{' -> '.join(item.via)} in {where}" if where else "remote address")
                continue
            addresses.append(self._system_account(recipient, local, item.via))
            chain = " -> ".join((*item.via, local)) if item.via else ""
            steps.append(f"{chain + ', ' if chain else ''}system account: root=")
        return Resolved(recipient, tuple(addresses), "; ".join(dict.fromkeys(steps)))

    def _system_account(self, recipient: str, local: str, via: tuple[str, ...]) -> str:
        try:
            uid: int | None = self.getpwnam(local).pw_uid
        except KeyError:
            uid = None
        chain = " -> ".join((*via, local)) if via else local
        if uid is not None and uid < FIRST_USER_UID and self.config.root:
            if self.local_part(self.config.root) is not None:
                raise NoUserError(
                    f"root={self.config.root} is itself a local name; set it to a full address",
                    path=self.config.sources.get("root"),
                )
            return validate_address(self.config.root, "root= address")
        what = (
            "a system account"
            if uid is not None and uid < FIRST_USER_UID
            else ("a local user" if uid is not None else "not a local user")
        )
        # mail(1) reads the mail.rc alias book, sendmail only the relay's Aliases file:
        # name both, so the hint works whichever command the user typed.
        where = (
            f"the Aliases file {self.config.aliases}"
            if self.config.aliases
            else f"an Aliases= file named in {self.config.path}"
        )
        fix = (
            f"add one with: mail-alias add {local} ADDRESS (for mail), or a line "
            f"'{local}: ADDRESS' in {where} (for sendmail)"
            + ("; or set root= for system accounts" if not self.config.root else "")
        )
        raise NoUserError(
            f"recipient '{chain}' is a local name ({what}) with no alias, refused "
            "(never rewritten to another domain)",
            hint=fix,
        )

    def resolve_all(self, recipients: Iterable[str]) -> list[str]:
        """Final envelope recipients, deduplicated; every failure named before any is sent."""
        final: list[str] = []
        failures: list[RelayError] = []
        for recipient in recipients:
            try:
                resolved = self.resolve(recipient)
            except (NoUserError, DataError) as err:
                failures.append(err)
                continue
            final.extend(resolved.addresses)
        if failures:
            first = failures[0]
            if len(failures) > 1:
                first.message += f" (and {len(failures) - 1} more refused)"
            raise first
        return dedupe(final, dedupe_key)


# --- the envelope as a value ------------------------------------------------------------


class Envelope(Record):
    """Who a message is from and for: as the caller asks, then as resolved.

    As asked (what `relay.submit` takes): `recipients` as given (addresses, local names,
    aliases, "a, b" lists), `read_recipients` (-t: add the To, Cc and Bcc headers),
    `envelope_from` (-f), `full_name` (-F) and `identity`, the submitting user (None: the
    user running this process; a service submitting for a peer passes the peer's).

    Resolved (`Prepared.envelope`, what the queue and `relay.delivery.deliver` use):
    `sender` is the MAIL FROM address ("" is the null sender) and `recipients` the final
    addresses. `sender` is None until `relay.submission.prepare` has resolved it.
    """

    __slots__ = (
        "envelope_from",
        "full_name",
        "identity",
        "read_recipients",
        "recipients",
        "sender",
    )

    def __init__(
        self,
        recipients: Iterable[str] = (),
        *,
        sender: str | None = None,
        read_recipients: bool = False,
        envelope_from: str | None = None,
        full_name: str | None = None,
        identity: Identity | None = None,
    ) -> None:
        if isinstance(recipients, str):
            recipients = (recipients,)  # one address, not its characters
        self.recipients: tuple[str, ...] = tuple(recipients)
        self.sender = sender
        self.read_recipients = read_recipients
        self.envelope_from = envelope_from
        self.full_name = full_name
        self.identity = identity

    @property
    def mail_from(self) -> str:
        """The resolved sender; a ValueError (a bug) before `prepare` resolved it."""
        if self.sender is None:
            raise ValueError("the envelope sender is not resolved yet (relay.submission.prepare)")
        return self.sender

    def resolved(self, sender: str, recipients: Sequence[str]) -> Envelope:
        """This envelope with its final sender and recipients."""
        return self.replace(sender=sender, recipients=tuple(recipients), read_recipients=False)

    def only(self, recipients: Sequence[str]) -> Envelope:
        """The same sender, for some of the recipients (a partial delivery's rest)."""
        return self.replace(recipients=tuple(recipients))
