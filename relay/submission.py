"""Submission policy: from a raw message and its envelope to delivered, queued, or kept.

The order follows dma's `main`: config, sender, recipients (every one resolved before
anything is sent), header fix-ups, then delivery or the queue. From the moment the
message is read, every failure ends with the message kept: the `RelayError` raised
carries `saved_to`, the dead.letter path the whole original message was appended to.

The queue policy (DESIGN 7, `Queue=`) lives here so that `sendmail` and the `mail` front
end, which calls `submit` in-process, behave the same:
- `fallback` (default): deliver now; on a temporary failure (4xx, unreachable, timeout,
  TLS handshake cut) queue the message for the recipients not yet served, and return a
  `Result` whose `queued_id` says so;
- `always`: queue without trying;
- `no`: a temporary failure raises (EX_TEMPFAIL) and the message goes to dead.letter.
A permanent failure (5xx) is never queued. When the queue itself cannot take the
message, the error is 73 or 74 and the message is in dead.letter: exit 0 always means
delivered or durably queued (`relay.queue` commits before it returns).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple, TextIO

from relay import deadletter
from relay.config import Config, Mailhub
from relay.envelope import Identity, Resolver, Sender, current_identity, split_address
from relay.errors import NoUserError, RelayError, TempFailError, UsageError, is_temporary
from relay.message import Fixups, Message, Spooled

if TYPE_CHECKING:
    from email.message import EmailMessage


class Prepared(NamedTuple):
    """A message ready for delivery: fixed-up headers, resolved envelope."""

    message: Message
    sender: Sender
    recipients: tuple[str, ...]
    fixups: Fixups
    #: The submitter's uid, recorded in a queue entry (who queued what, for root's mailq).
    uid: int | None = None

    @property
    def message_id(self) -> str | None:
        found = self.message.values("message-id")
        return found[0] if found else None


class Result(NamedTuple):
    """A message delivered, or durably queued (`queued_id`), or some of each."""

    sender: str
    #: Recipients the server accepted now (empty when the message was only queued).
    recipients: tuple[str, ...]
    message_id: str | None
    mailhub: str
    reply: str
    #: recipient -> SMTP reply, for a delivery some recipients refused (raised, see submit).
    refused: Mapping[str, str] = MappingProxyType({})
    #: The queue entry holding the message for the recipients not delivered yet.
    queued_id: str | None = None
    #: Why it was queued: the temporary failure, or that `Queue=always` is set.
    queued_reason: str | None = None
    #: The recipients the queue entry is for.
    queued_for: tuple[str, ...] = ()


def as_input(message: bytes | Spooled | EmailMessage) -> bytes | Spooled:
    """Raw input as `relay.message.parse` takes it; a built message is generated here."""
    if isinstance(message, bytes | Spooled):
        return message
    from email.policy import SMTP

    return message.as_bytes(policy=SMTP)


def prepare(
    raw: bytes | Spooled,
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
    return Prepared(parsed, sender, tuple(final), fixups, who.uid)


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
    result, refused = _send_now(prepared, config, password=password, verbose=verbose)
    if refused:
        raise _partial_error(result, refused)
    return result


def _send_now(
    prepared: Prepared,
    config: Config,
    *,
    password: str | None,
    verbose: TextIO | None,
) -> tuple[Result, dict[str, tuple[int, str]]]:
    """One delivery; returns what was accepted and what was refused (code, reply)."""
    from relay.message import wire
    from relay.smtp import open_session

    hubs: Sequence[Mailhub] = (
        (prepared.sender.mailhub,) if prepared.sender.mailhub else config.mailhubs
    )
    from functools import partial

    from relay.log import attempt_for

    session = None
    log = partial(
        attempt_for,
        config,
        queue_id=None,
        message_id=prepared.message_id,
        sender=prepared.sender.envelope,
        recipients=prepared.recipients,
        started=time.monotonic(),
    )
    try:
        with open_session(config, hubs=hubs, password=password, transcript=verbose) as session:
            assert session.client is not None
            data = wire(prepared.message, eight_bit_ok=session.client.has_extn("8bitmime"))
            outcome = session.send(prepared.sender.envelope, prepared.recipients, data)
            hub = str(session.hub)
    except RelayError as err:
        log(session=session, error=err)
        raise
    log(session=session, outcome=outcome)
    result = Result(
        sender=prepared.sender.envelope,
        recipients=tuple(outcome.accepted),
        message_id=prepared.message_id,
        mailhub=hub,
        reply=outcome.reply,
        refused={rcpt: reply for rcpt, (_code, reply) in outcome.refused.items()},
    )
    return result, outcome.refused


def _partial_error(
    result: Result, refused: dict[str, tuple[int, str]], queued: str = ""
) -> RelayError:
    listed = "; ".join(f"<{r}>: {reply}" for r, (_code, reply) in refused.items())
    text = f"delivered to {', '.join(result.recipients)} only; refused: {listed}{queued}"
    temporary = all(400 <= code < 500 for code, _ in refused.values())
    err: RelayError = (
        TempFailError(text, step="RCPT TO") if temporary else NoUserError(text, step="RCPT TO")
    )
    err.result = result
    return err


def submit(
    message: bytes | Spooled | EmailMessage,
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
    keep_on_failure: bool = True,
) -> Result:
    """Deliver a message now, queue it, or keep it, as `config.queue` says (module doc).

    `keep_on_failure=False` is the submission service's: its client keeps the message in
    its own dead.letter, and the service must never write into a user's home.

    Returns a `Result`: delivered (`recipients`), queued (`queued_id`, `queued_reason`),
    or both after a partial delivery whose refusals were all temporary.
    Raises a `RelayError` whose `exit_code` is the sysexits status and whose `saved_to`
    attribute names the dead.letter file (None only when even that could not be written,
    in which case the error says so and its exit code is 73 or 74). The password is
    used for this delivery only; the queue never stores it.
    """
    raw = as_input(message)
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
        if config.queue == "always":
            return enqueue(prepared, config, dead_letter=dead_letter, reason=ALWAYS_REASON)
        return _deliver_or_queue(prepared, config, password, verbose, dead_letter)
    except RelayError as err:
        if keep_on_failure:
            keep(err, raw, who, config, dead_letter)
        raise


ALWAYS_REASON = "Queue=always: not tried now; mailq --flush (or sendmail -q) delivers it"


def _deliver_or_queue(
    prepared: Prepared,
    config: Config,
    password: str | None,
    verbose: TextIO | None,
    dead_letter: str | None,
) -> Result:
    fallback = config.queue == "fallback"
    try:
        result, refused = _send_now(prepared, config, password=password, verbose=verbose)
    except RelayError as err:
        if not (fallback and is_temporary(err)):
            raise
        return enqueue(prepared, config, dead_letter=dead_letter, reason=str(err), failure=err)
    if not refused:
        return result
    # A partial delivery (DESIGN V22): accepted recipients are done; 4xx ones are queued
    # when the policy allows; 5xx ones make the whole call fail, message kept.
    later = tuple(r for r, (code, _) in refused.items() if 400 <= code < 500)
    note = ""
    if fallback and later:
        replies = "; ".join(f"<{r}>: {refused[r][1]}" for r in later)
        queued = enqueue(
            prepared,
            config,
            dead_letter=dead_letter,
            reason=f"refused for now: {replies}",
            recipients=later,
            failure=TempFailError(replies, step="RCPT TO"),
        )
        result = result._replace(
            queued_id=queued.queued_id,
            queued_reason=queued.queued_reason,
            queued_for=later,
        )
        if len(later) == len(refused):
            return result
        note = f"; {', '.join(later)} queued as {queued.queued_id} for a retry"
    raise _partial_error(result, refused, note)


def stored_form(prepared: Prepared) -> bytes:
    """What the queue keeps: the message after fix-ups, line ends as received.

    Converted to wire form only when sent, since that depends on the session (8BITMIME).
    `relay.message.parse` reads it back unchanged.
    """
    return prepared.message.header_bytes() + b"\r\n" + prepared.message.body_bytes()


def enqueue(
    prepared: Prepared,
    config: Config,
    *,
    dead_letter: str | None,
    reason: str,
    recipients: Sequence[str] | None = None,
    failure: RelayError | None = None,
) -> Result:
    """Commit the prepared message to the queue; returns a Result saying queued.

    `failure` is the temporary error of a try just made: the entry records it as its
    first attempt, backing off only when the failure was the message's own.
    Raises 73/74 (the caller keeps the message in dead.letter) naming both problems.
    """
    import time

    from relay import queue

    now = time.time()
    wanted = tuple(recipients if recipients is not None else prepared.recipients)
    hub = prepared.sender.mailhub
    blame = failure is not None and queue.blames_message(failure)
    try:
        with queue.Queue.open(queue.queue_dir(config.queue_dir)) as spool:
            entry = spool.enqueue(
                stored_form(prepared),
                sender=prepared.sender.envelope,
                recipients=wanted,
                message_id=prepared.message_id,
                mailhub=_hostport(hub) if hub else None,
                dead_letter=dead_letter or deadletter.default_path(),
                attempts=1 if failure is not None else 0,
                last_error=str(failure) if failure is not None else None,
                next_try=now + (queue.backoff_delay(1, config.queue_backoff) if blame else 0),
                now=now,
                uid=prepared.uid,
            )
    except RelayError as err:
        if failure is not None:
            err.message += f"; and delivering it now failed too: {failure}"
        raise
    return Result(
        sender=prepared.sender.envelope,
        recipients=(),
        message_id=prepared.message_id,
        mailhub="",
        reply="",
        queued_id=entry.id,
        queued_reason=reason,
        queued_for=wanted,
    )


def _hostport(hub: Mailhub) -> str:
    """`host:port` as `relay.config.parse_hostport` reads it back (IPv6 in brackets)."""
    return f"[{hub.host}]:{hub.port}" if ":" in hub.host else f"{hub.host}:{hub.port}"


def keep(
    err: RelayError, raw: bytes | Spooled, who: Identity, config: Config, path: str | None
) -> None:
    """Append the original message to dead.letter and record where on the error."""
    from relay.envelope import default_sender_address

    sender, _why = default_sender_address(config, who)
    try:
        whole = raw.read_all() if isinstance(raw, Spooled) else raw
        err.saved_to = deadletter.save(whole, sender, path)
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
