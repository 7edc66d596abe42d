"""Submission policy: from a raw message and its envelope to "delivered" or a kept message.

The order follows dma's `main`: config, sender, recipients (every one resolved before
anything is sent), header fix-ups, then delivery. From the moment the message is read,
every failure ends with the message kept: the `RelayError` raised carries `saved_to`, the
dead.letter path the whole original message was appended to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from relay import deadletter
from relay.config import Config, Mailhub
from relay.envelope import Identity, Resolver, Sender, current_identity, split_address
from relay.errors import NoUserError, RelayError, TempFailError, UsageError
from relay.message import Fixups, Message

if TYPE_CHECKING:
    from email.message import EmailMessage


@dataclass(frozen=True)
class Prepared:
    """A message ready for delivery: fixed-up headers, resolved envelope."""

    message: Message
    sender: Sender
    recipients: tuple[str, ...]
    fixups: Fixups

    @property
    def message_id(self) -> str | None:
        found = self.message.values("message-id")
        return found[0] if found else None


@dataclass(frozen=True)
class Result:
    """A delivered message."""

    sender: str
    recipients: tuple[str, ...]
    message_id: str | None
    mailhub: str
    reply: str
    #: recipient -> SMTP reply, for a delivery some recipients refused (raised, see submit).
    refused: dict[str, str] = field(default_factory=dict)


def as_bytes(message: bytes | EmailMessage) -> bytes:
    if isinstance(message, bytes):
        return message
    from email.policy import SMTP

    return message.as_bytes(policy=SMTP)


def prepare(
    raw: bytes,
    config: Config,
    *,
    recipients: Sequence[str] = (),
    read_recipients: bool = False,
    envelope_from: str | None = None,
    full_name: str | None = None,
    identity: Identity | None = None,
    resolver: Resolver | None = None,
) -> Prepared:
    """Parse, resolve sender and recipients (DESIGN 5), fix headers (DESIGN 3.2)."""
    from relay import envelope, message

    parsed = message.parse(raw)
    wanted = envelope.parse_recipient_args(recipients)
    if read_recipients:
        wanted += [r for r in parsed.header_recipients() if r not in wanted]
    if not wanted:
        raise UsageError("no recipients: give them as arguments, or use -t with To/Cc/Bcc headers")
    who = identity or current_identity()
    sender = envelope.resolve_sender(
        config,
        who,
        envelope_from=envelope_from,
        full_name=full_name,
        header_from=parsed.from_address(),
    )
    resolver = resolver or make_resolver(config)
    final = resolver.resolve_all(wanted)
    _local, domain = split_address(sender.envelope)
    fixups = message.fix_headers(
        parsed,
        from_header=sender.from_header,
        replace_from=sender.replace_from,
        msgid_domain=domain or config.hostname or "localhost",
    )
    return Prepared(parsed, sender, tuple(final), fixups)


def make_resolver(config: Config) -> Resolver:
    from relay.aliases import read_alias_file

    aliases = read_alias_file(config.aliases) if config.aliases else None
    return Resolver(config, aliases)


def deliver(
    prepared: Prepared,
    config: Config,
    *,
    password: str | None = None,
    verbose: TextIO | None = None,
) -> Result:
    """Send one prepared message now; raises a classified RelayError if it was not."""
    from relay.message import to_wire
    from relay.smtp import open_session

    hubs: Sequence[Mailhub] = (
        (prepared.sender.mailhub,) if prepared.sender.mailhub else config.mailhubs
    )
    with open_session(config, hubs=hubs, password=password, transcript=verbose) as session:
        assert session.client is not None
        data = to_wire(prepared.message, eight_bit_ok=session.client.has_extn("8bitmime"))
        outcome = session.send(prepared.sender.envelope, prepared.recipients, data)
        hub = str(session.hub)
    result = Result(
        sender=prepared.sender.envelope,
        recipients=tuple(outcome.accepted),
        message_id=prepared.message_id,
        mailhub=hub,
        reply=outcome.reply,
        refused={rcpt: reply for rcpt, (_code, reply) in outcome.refused.items()},
    )
    if outcome.refused:
        listed = "; ".join(f"<{r}>: {reply}" for r, reply in result.refused.items())
        accepted = ", ".join(outcome.accepted)
        text = f"delivered to {accepted} only; refused: {listed}"
        temporary = all(400 <= code < 500 for code, _ in outcome.refused.values())
        err: RelayError = (
            TempFailError(text, step="RCPT TO") if temporary else NoUserError(text, step="RCPT TO")
        )
        err.result = result
        raise err
    return result


def submit(
    message: bytes | EmailMessage,
    *,
    config: Config,
    recipients: Sequence[str] = (),
    read_recipients: bool = False,
    envelope_from: str | None = None,
    full_name: str | None = None,
    identity: Identity | None = None,
    password: str | None = None,
    verbose: TextIO | None = None,
    dead_letter: str | None = None,
    resolver: Resolver | None = None,
) -> Result:
    """Deliver a message now, or keep it: on failure the original goes to dead.letter.

    Raises a `RelayError` whose `exit_code` is the sysexits status and whose `saved_to`
    attribute names the dead.letter file (None only when even that could not be written,
    in which case the error says so and its exit code is 73 or 74).
    """
    raw = as_bytes(message)
    who = identity or current_identity()
    try:
        prepared = prepare(
            raw,
            config,
            recipients=recipients,
            read_recipients=read_recipients,
            envelope_from=envelope_from,
            full_name=full_name,
            identity=who,
            resolver=resolver,
        )
        if verbose is not None:
            _explain(prepared, verbose)
        return deliver(prepared, config, password=password, verbose=verbose)
    except RelayError as err:
        keep(err, raw, who, config, dead_letter)
        raise


def keep(err: RelayError, raw: bytes, who: Identity, config: Config, path: str | None) -> None:
    """Append the original message to dead.letter and record where on the error."""
    from relay.envelope import default_sender_address

    sender, _why = default_sender_address(config, who)
    try:
        err.saved_to = deadletter.save(raw, sender, path)
    except RelayError as failed:
        err.saved_to = None
        err.message += f"; and the message could not be kept: {failed}"
        err.exit_code = failed.exit_code


def _explain(prepared: Prepared, out: TextIO) -> None:
    sender = prepared.sender
    out.write(f"sender: {sender.envelope} ({sender.explanation})\n")
    out.write(f"recipients: {', '.join(prepared.recipients)}\n")
    if prepared.fixups.added:
        out.write(f"headers added: {', '.join(prepared.fixups.added)}\n")
    if prepared.fixups.removed:
        out.write(f"headers removed: {', '.join(prepared.fixups.removed)}\n")
    out.flush()
