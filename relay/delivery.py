"""One message over one open session, and the verdict: the relay's only delivery step.

`deliver` is what the immediate send (`relay.submission`), the queue flush
(`relay.flush`) and any other sender share: it makes the wire form for this session
(8BITMIME or not), runs MAIL, RCPT and DATA (`relay.smtp.Session.send`), logs the
attempt (`relay.log`) and sorts what happened into a `Verdict`:

- DELIVERED: every recipient accepted, the server answered the final dot with 250;
- PARTIAL: the message went to `accepted`; `refused` holds each other recipient with
  its code and reply (`later`: 4xx, worth trying again; `never`: 5xx);
- TEMPORARY: nothing delivered, worth trying again (4xx, 421, connection lost, timeout,
  garbled reply); `error` says at which step and, when the connection was lost after
  the final dot, that the message may have been delivered;
- PERMANENT: nothing delivered, and trying again will not help (5xx, or the message
  cannot be sent to this server at all).

Opening the session, and what to do with a verdict (queue it, keep it in dead.letter,
retry over a new connection) are the caller's policy.
"""

from __future__ import annotations

import time

from relay import replies
from relay.errors import RelayError, is_temporary
from relay.interrupt import settle
from relay.records import ReadOnlyMapping, Record

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from relay.envelope import Envelope
    from relay.message import Message
    from relay.smtp import Session

DELIVERED = "delivered"
PARTIAL = "partial"
TEMPORARY = "temporary"
PERMANENT = "permanent"

_NOTHING: Mapping[str, tuple[int, str]] = ReadOnlyMapping({})


class Verdict(Record):
    """What became of one message sent over one session (module docstring)."""

    __slots__ = ("accepted", "error", "kind", "mailhub", "refused", "reply")

    def __init__(
        self,
        kind: str,
        *,
        accepted: tuple[str, ...] = (),
        refused: Mapping[str, tuple[int, str]] = _NOTHING,
        reply: str = "",
        error: RelayError | None = None,
        mailhub: str = "",
    ) -> None:
        self.kind = kind
        #: Recipients the server accepted: the message is theirs now.
        self.accepted = accepted
        #: recipient -> (code, reply) for each recipient refused in a partial delivery.
        self.refused = refused
        #: The server's reply to the final dot, or the failure's reply.
        self.reply = reply
        #: Why nothing was delivered (TEMPORARY, PERMANENT): step, reply and code.
        self.error = error
        self.mailhub = mailhub

    @property
    def delivered(self) -> bool:
        """True when the server took the message for at least one recipient."""
        return self.kind in (DELIVERED, PARTIAL)

    @property
    def later(self) -> tuple[str, ...]:
        """Recipients refused for now (4xx): worth another try."""
        return tuple(r for r, (code, _) in self.refused.items() if replies.is_temporary(code))

    @property
    def never(self) -> dict[str, str]:
        """Recipients refused for good, with the reply: no retry will help them."""
        return {r: text for r, (code, text) in self.refused.items() if r not in self.later}

    @property
    def duplicate_risk(self) -> bool:
        """The connection was lost after the final dot: the server may have the message."""
        err = self.error
        return err is not None and err.step == replies.END_OF_DATA and err.code is None


def deliver(
    session: Session,
    message: Message,
    envelope: Envelope,
    *,
    queue_id: str | None = None,
    message_id: str | None = None,
) -> Verdict:
    """Send `message` to the resolved `envelope` over the open `session`; never raises a
    `RelayError` (the verdict carries it). The session stays open unless the server
    closed it: `session.client is None` then, and the caller opens a new one."""
    from relay.message import wire

    if message_id is None:
        found = message.values("message-id")
        message_id = found[0] if found else None
    started = time.monotonic()
    hub = str(session.hub)

    def log(**result: Any) -> None:
        if not session.config.log_file and not session.config.syslog:
            return  # no log configured (the common case): relay.log is not even imported
        from relay.log import attempt_for

        attempt_for(
            session.config,
            session=session,
            queue_id=queue_id,
            message_id=message_id,
            sender=envelope.mail_from,
            recipients=envelope.recipients,
            started=started,
            **result,
        )

    try:
        if session.client is None:
            raise RelayError("deliver needs an open session", step=replies.CONNECT)
        data = wire(message, eight_bit_ok=session.client.has_extn("8bitmime"))
        outcome = session.send(envelope.mail_from, envelope.recipients, data)
    except RelayError as err:
        log(error=err)
        kind = TEMPORARY if is_temporary(err) else PERMANENT
        return Verdict(kind, error=err, reply=err.reply or "", mailhub=hub)
    settle()  # the server has answered for the message: a signal must not undo that
    log(outcome=outcome)
    return Verdict(
        PARTIAL if outcome.refused else DELIVERED,
        accepted=tuple(outcome.accepted),
        refused=ReadOnlyMapping(dict(outcome.refused)) if outcome.refused else _NOTHING,
        reply=outcome.reply,
        mailhub=hub,
    )
