"""Submission policy: from a raw message and its envelope to delivered, queued, or kept.

The order follows dma's `main`: config, sender, recipients (every one resolved before
anything is sent), header fix-ups, then delivery (`relay.delivery.deliver`, the step
the queue flush shares) or the queue. From the moment the
message is read, every failure ends with the message kept: the `RelayError` raised
carries `saved_to`, the dead.letter path the whole original message was appended to.

The queue policy (`Queue=`, relay.conf(5)) lives here so that `sendmail` and the `mail` front
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

from relay.config import Config, Mailhub
from relay.envelope import Envelope, Identity, Resolver, Sender, current_identity, split_address
from relay.errors import NoUserError, RelayError, TempFailError, UsageError, is_temporary
from relay.message import Fixups, Message, Spooled
from relay.records import ReadOnlyMapping, Record

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from email.message import EmailMessage
    from typing import TextIO

    from relay.delivery import Verdict
    from relay.interrupt import Stopped


class Prepared(Record):
    """A message ready for delivery: fixed-up headers, resolved envelope."""

    __slots__ = ("envelope", "fixups", "message", "sender", "uid")

    def __init__(
        self,
        message: Message,
        sender: Sender,
        envelope: Envelope,
        fixups: Fixups,
        uid: int | None = None,
    ):
        self.message = message
        #: How the sender was chosen: From header, per-user mailhub, explanation for -v.
        self.sender = sender
        #: The resolved envelope: `sender.envelope` and the final recipients.
        self.envelope = envelope
        self.fixups = fixups
        #: The submitter's uid, recorded in a queue entry (who queued what, for mailq).
        self.uid = uid

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.envelope.recipients

    @property
    def message_id(self) -> str | None:
        found = self.message.values("message-id")
        return found[0] if found else None


_NO_REFUSALS: Mapping[str, str] = ReadOnlyMapping({})


class Result(Record):
    """A message delivered, or durably queued (`queued_id`), or some of each."""

    __slots__ = (
        "mailhub",
        "message_id",
        "queued_for",
        "queued_id",
        "queued_reason",
        "recipients",
        "refused",
        "reply",
        "sender",
    )

    def __init__(
        self,
        *,
        sender: str,
        recipients: tuple[str, ...],
        message_id: str | None,
        mailhub: str,
        reply: str,
        refused: Mapping[str, str] = _NO_REFUSALS,
        queued_id: str | None = None,
        queued_reason: str | None = None,
        queued_for: tuple[str, ...] = (),
    ) -> None:
        self.sender = sender
        #: Recipients the server accepted now (empty when the message was only queued).
        self.recipients = recipients
        self.message_id = message_id
        self.mailhub = mailhub
        self.reply = reply
        #: recipient -> SMTP reply, for a delivery some recipients refused (raised, see submit).
        self.refused = refused
        #: The queue entry holding the message for the recipients not delivered yet.
        self.queued_id = queued_id
        #: Why it was queued: the temporary failure, or that `Queue=always` is set.
        self.queued_reason = queued_reason
        #: The recipients the queue entry is for.
        self.queued_for = queued_for


def as_input(message: bytes | Spooled | EmailMessage) -> bytes | Spooled:
    """Raw input as `relay.message.parse` takes it; a built message is generated here."""
    if isinstance(message, bytes | Spooled):
        return message
    from email.policy import SMTP

    return message.as_bytes(policy=SMTP)


def prepare(
    raw: bytes | Spooled,
    config: Config,
    envelope: Envelope,
    *,
    resolver: Resolver | None = None,
) -> Prepared:
    """Parse, resolve sender and recipients (relay.envelope), fix headers (relay.message).

    `envelope` is as the caller asked; the returned `Prepared.envelope` is resolved.
    """
    from relay import envelope as addressing
    from relay import message

    parsed = message.parse(raw)
    wanted = addressing.parse_recipient_args(envelope.recipients)
    if envelope.read_recipients:
        wanted += [r for r in parsed.header_recipients() if r not in wanted]
    if not wanted:
        raise UsageError("no recipients: give them as arguments, or use -t with To/Cc/Bcc headers")
    who = envelope.identity or current_identity()
    sender = addressing.resolve_sender(
        config,
        who,
        envelope_from=envelope.envelope_from,
        full_name=envelope.full_name,
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
    return Prepared(parsed, sender, envelope.resolved(sender.envelope, final), fixups, who.uid)


def make_resolver(config: Config) -> Resolver:
    from relay.aliases import read_alias_file

    aliases = read_alias_file(config.aliases) if config.aliases else None
    return Resolver(config, aliases)


def _send_now(
    prepared: Prepared,
    config: Config,
    *,
    password: str | None = None,
    verbose: TextIO | None = None,
) -> Verdict:
    """Open a session (the sender's own mailhub, else the configured ones, in order) and
    deliver the message over it (`relay.delivery.deliver`); a session that cannot be
    opened is a TEMPORARY or PERMANENT verdict too, and is logged."""
    import time

    from relay.delivery import PERMANENT, TEMPORARY, Verdict, deliver
    from relay.interrupt import Stopped, wait_interruptibly
    from relay.smtp import open_session

    hubs: Sequence[Mailhub] = (
        (prepared.sender.mailhub,) if prepared.sender.mailhub else config.mailhubs
    )
    started = time.monotonic()
    try:
        session = open_session(config, hubs=hubs, password=password, transcript=verbose)
    except Stopped as stop:
        return Verdict(TEMPORARY, error=_interrupted(stop, "connect"))
    except RelayError as err:
        from relay.log import attempt_for

        attempt_for(
            config,
            session=None,
            queue_id=None,
            message_id=prepared.message_id,
            sender=prepared.envelope.mail_from,
            recipients=prepared.recipients,
            started=started,
            error=err,
        )
        return Verdict(
            TEMPORARY if is_temporary(err) else PERMANENT, error=err, reply=err.reply or ""
        )
    try:
        try:
            verdict = deliver(
                session, prepared.message, prepared.envelope, message_id=prepared.message_id
            )
        except Stopped as stop:
            session.drop()  # no QUIT: its reply could take the whole Timeout
            return Verdict(TEMPORARY, error=_interrupted(stop, session.step))
        # The verdict is final (deliver settled the guard): QUIT cannot change it, and a
        # stop signal only cuts the wait for its reply short.
        try:
            with wait_interruptibly():
                session.close()
        except Stopped:
            session.drop()
        return verdict
    finally:
        session.drop()  # after an unexpected error; nothing to do once closed


def _interrupted(stop: Stopped, step: str) -> TempFailError:
    """A delivery stopped by a signal: a temporary failure (queued, or kept), which says
    whether the message may have arrived (stopped while waiting for the final reply)."""
    from relay import replies
    from relay.smtp import DUPLICATE_RISK

    text = f"delivery stopped by {stop.name} during {step}"
    # In DATA the final dot may have left already (a signal is handled between two
    # bytecodes, not between two packets): say so rather than promise no duplicate.
    if step in (replies.DATA, replies.END_OF_DATA):
        text += f"; {DUPLICATE_RISK}"
    return TempFailError(text, step=step)


def _delivered(prepared: Prepared, verdict: Verdict) -> Result:
    return Result(
        sender=prepared.envelope.mail_from,
        recipients=verdict.accepted,
        message_id=prepared.message_id,
        mailhub=verdict.mailhub,
        reply=verdict.reply,
        refused=ReadOnlyMapping({r: reply for r, (_code, reply) in verdict.refused.items()}),
    )


def _partial_error(result: Result, verdict: Verdict, queued: str = "") -> RelayError:
    listed = "; ".join(f"<{r}>: {reply}" for r, (_code, reply) in verdict.refused.items())
    text = f"delivered to {', '.join(result.recipients)} only; refused: {listed}{queued}"
    err: RelayError = (
        TempFailError(text, step="RCPT TO")
        if not verdict.never
        else NoUserError(text, step="RCPT TO")
    )
    err.result = result
    return err


def submit(
    message: bytes | Spooled | EmailMessage,
    envelope: Envelope | None = None,
    *,
    config: Config,
    password: str | None = None,
    verbose: TextIO | None = None,
    dead_letter: str | None = None,
    resolver: Resolver | None = None,
    recipients: Sequence[str] | None = None,
    read_recipients: bool | None = None,
    envelope_from: str | None = None,
    full_name: str | None = None,
    identity: Identity | None = None,
    keep_on_failure: bool = True,
) -> Result:
    """Deliver a message now, queue it, or keep it, as `config.queue` says (module doc).

    `envelope` says who it is from and for, as asked (`relay.envelope.Envelope`). The
    same can be given as keywords instead (`recipients`, `read_recipients`,
    `envelope_from`, `full_name`, `identity`), as `mail` does.
    `keep_on_failure=False` is the submission service's: its client keeps the message in
    its own dead.letter, and the service must never write into a user's home.

    Returns a `Result`: delivered (`recipients`), queued (`queued_id`, `queued_reason`),
    or both after a partial delivery whose refusals were all temporary.
    Raises a `RelayError` whose `exit_code` is the sysexits status and whose `saved_to`
    attribute names the dead.letter file (None only when even that could not be written,
    in which case the error says so and its exit code is 73 or 74). The password is
    used for this delivery only; the queue never stores it.
    """
    loose = (recipients, read_recipients, envelope_from, full_name, identity)
    if envelope is None:
        envelope = Envelope(
            recipients or (),
            read_recipients=bool(read_recipients),
            envelope_from=envelope_from,
            full_name=full_name,
            identity=identity,
        )
    elif any(value is not None for value in loose):
        raise TypeError("submit: give an Envelope or its fields as keywords, not both")
    from relay.interrupt import Stopped, guard, settle

    raw = as_input(message)
    who = envelope.identity or current_identity()
    with guard():  # a stop signal: the message is queued or kept, then we end
        try:
            _check_size(raw, config)
            prepared = prepare(raw, config, envelope.replace(identity=who), resolver=resolver)
            if verbose is not None:
                _explain(prepared, verbose)
            if config.queue == "always":
                return enqueue(prepared, config, dead_letter=dead_letter, reason=ALWAYS_REASON)
            return _deliver_or_queue(prepared, config, password, verbose, dead_letter)
        except RelayError as err:
            settle()  # keeping it must not be cut short
            if keep_on_failure:
                keep(err, raw, who, config, dead_letter)
            raise
        except Stopped as stop:  # before or after the delivery attempt: keep it
            from relay.errors import Interrupted

            settle()
            stopped = Interrupted(f"stopped by {stop.name}", signal_number=stop.signal_number)
            keep(stopped, raw, who, config, dead_letter)
            raise stopped from None


def _check_size(raw: bytes | Spooled, config: Config) -> None:
    """MaxMessageSize for a message read by someone else (`mail`, the service): whole,
    so it is kept whole. `sendmail` stops reading at the limit already (`read_input`)."""
    limit = config.max_message_size
    size = raw.size if isinstance(raw, Spooled) else len(raw)
    if limit is not None and size > limit:
        from relay.errors import TooBigError

        raise TooBigError(
            f"the message ({size} bytes) is larger than MaxMessageSize ({limit} bytes); "
            "nothing was sent: raise MaxMessageSize in relay.conf, or send it smaller",
            limit=limit,
        )


ALWAYS_REASON = "Queue=always: not tried now; mailq --flush (or sendmail -q) delivers it"


def _deliver_or_queue(
    prepared: Prepared,
    config: Config,
    password: str | None,
    verbose: TextIO | None,
    dead_letter: str | None,
) -> Result:
    fallback = config.queue == "fallback"
    verdict = _send_now(prepared, config, password=password, verbose=verbose)
    if verdict.error is not None:
        if not (fallback and is_temporary(verdict.error)):
            raise verdict.error
        return enqueue(
            prepared,
            config,
            dead_letter=dead_letter,
            reason=str(verdict.error),
            failure=verdict.error,
        )
    result = _delivered(prepared, verdict)
    if not verdict.refused:
        return result
    # A partial delivery: accepted recipients are done; 4xx ones are queued when the
    # policy allows; 5xx ones make the whole call fail, message kept.
    later = verdict.later
    note = ""
    if fallback and later:
        replies = "; ".join(f"<{r}>: {verdict.refused[r][1]}" for r in later)
        try:
            queued = enqueue(
                prepared,
                config,
                dead_letter=dead_letter,
                reason=f"refused for now: {replies}",
                envelope=prepared.envelope.only(later),
                failure=TempFailError(replies, step="RCPT TO"),
            )
        except RelayError as failed:
            # Say who has it already: a resend from dead.letter must not go to them.
            note = f"; and the rest could not be queued: {failed}"
            raise _partial_error(result, verdict, note) from None
        result = result.replace(
            queued_id=queued.queued_id,
            queued_reason=queued.queued_reason,
            queued_for=later,
        )
        if not verdict.never:
            return result
        note = f"; {', '.join(later)} queued as {queued.queued_id} for a retry"
    raise _partial_error(result, verdict, note)


def stored_form(prepared: Prepared) -> bytes:
    """What the queue keeps: the message after fix-ups, line ends as received.

    Converted to wire form only when sent, since that depends on the session (8BITMIME).
    `relay.message.parse` reads it back unchanged.
    """
    return b"".join(stored_pieces(prepared))


def stored_pieces(prepared: Prepared) -> Iterator[bytes]:
    """`stored_form` in pieces: a spooled body is read in blocks, never held whole."""
    message = prepared.message
    yield message.header_bytes() + b"\r\n"
    if message.spool is None:
        yield message.body
    else:
        yield from message.spool.blocks(message.body_offset)


def enqueue(
    prepared: Prepared,
    config: Config,
    *,
    dead_letter: str | None,
    reason: str,
    envelope: Envelope | None = None,
    failure: RelayError | None = None,
) -> Result:
    """Commit the prepared message to the queue; returns a Result saying queued.

    `envelope` narrows the recipients (the rest of a partial delivery); by default the
    entry is for all of `prepared.envelope`. `failure` is the temporary error of a try
    just made: the entry records it as its first attempt, backing off only when the
    failure was the message's own.
    Raises 73/74 (the caller keeps the message in dead.letter) naming both problems.
    """
    import time

    from relay import queue
    from relay.interrupt import settle

    settle()  # a signal during the commit would report a queued message as failed

    now = time.time()
    from relay.deadletter import default_path as default_dead_letter

    wanted = envelope or prepared.envelope
    hub = prepared.sender.mailhub
    blame = failure is not None and queue.blames_message(failure)
    try:
        with queue.Queue.open(queue.queue_dir(config.queue_dir)) as spool:
            entry = spool.enqueue(
                stored_pieces(prepared),
                sender=wanted.mail_from,
                recipients=wanted.recipients,
                message_id=prepared.message_id,
                mailhub=hostport(hub) if hub else None,
                dead_letter=dead_letter or default_dead_letter(),
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
        sender=wanted.mail_from,
        recipients=(),
        message_id=prepared.message_id,
        mailhub="",
        reply="",
        queued_id=entry.id,
        queued_reason=reason,
        queued_for=wanted.recipients,
    )


def hostport(hub: Mailhub) -> str:
    """`host:port` as `relay.config.parse_hostport` reads it back (IPv6 in brackets)."""
    return f"[{hub.host}]:{hub.port}" if ":" in hub.host else f"{hub.host}:{hub.port}"


def keep(
    err: RelayError, raw: bytes | Spooled, who: Identity, config: Config, path: str | None
) -> None:
    """Append the original message to dead.letter and record where on the error."""
    from relay import deadletter
    from relay.envelope import default_sender_address

    sender, _why = default_sender_address(config, who)
    try:
        err.saved_to = deadletter.save(raw, sender, path, spool=_spool(config))
    except RelayError as failed:
        err.saved_to = None
        err.keep_error = failed  # describe() says so; the status becomes failed's


def _spool(config: Config) -> str:
    """The queue directory whose dead area keeps what root cannot put in a dead.letter."""
    from relay.queue import queue_dir

    return queue_dir(config.queue_dir)


def _explain(prepared: Prepared, out: TextIO) -> None:
    sender = prepared.sender
    out.write(f"sender: {sender.envelope} ({sender.explanation})\n")
    out.write(f"recipients: {', '.join(prepared.recipients)}\n")
    if prepared.fixups.added:
        out.write(f"headers added: {', '.join(prepared.fixups.added)}\n")
    if prepared.fixups.removed:
        out.write(f"headers removed: {', '.join(prepared.fixups.removed)}\n")
    out.flush()
