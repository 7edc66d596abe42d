"""SMTP reply codes sorted by what the relay does about them: the one place that decides.

- 2xx/3xx: the step went on;
- 421: the server is closing the session (RFC 5321 3.8): temporary, nothing more can
  be sent on this connection, and it says nothing against the message itself;
- any other 4xx: temporary, worth trying again later;
- 5xx: permanent, trying again will not help;
- anything else: the server broke the protocol.

`relay.smtp` turns replies into errors with these, `relay.delivery` into verdicts, and
`relay.queue` decides back-off with them. No imports: `mailq` on an empty queue loads it.
"""

from __future__ import annotations

OK = "ok"
TEMPORARY = "temporary"
PERMANENT = "permanent"
CLOSING = "closing"
UNEXPECTED = "unexpected"


def kind(code: int) -> str:
    """OK, TEMPORARY, CLOSING (421), PERMANENT or UNEXPECTED."""
    if 200 <= code < 400:
        return OK
    if code == 421:
        return CLOSING
    if 400 <= code < 500:
        return TEMPORARY
    if 500 <= code < 600:
        return PERMANENT
    return UNEXPECTED


def is_temporary(code: int | None) -> bool:
    """A 4xx, 421 included: the same message may go through later."""
    return code is not None and kind(code) in (TEMPORARY, CLOSING)


def is_permanent(code: int | None) -> bool:
    return code is not None and kind(code) == PERMANENT


def closes_session(code: int | None) -> bool:
    """421: the server is going away, whatever was sent; the connection is finished."""
    return code is not None and kind(code) == CLOSING


# The steps a delivery error names (`RelayError.step`), shared by the SMTP layer, the
# queue's back-off and the flush.
CONNECT = "connect"
STARTTLS = "STARTTLS"
AUTH = "AUTH"
MAIL = "MAIL FROM"
RCPT = "RCPT TO"
DATA = "DATA"
#: After the final dot, waiting for the server's verdict on the message: a connection
#: lost here may have delivered it (the duplicate window of mailq(1)).
END_OF_DATA = "end of data"
#: The steps of one message's own transaction.
MESSAGE_STEPS = frozenset({MAIL, RCPT, DATA, END_OF_DATA})
#: The steps before the final dot: the server cannot have taken the message yet.
BEFORE_DATA_SENT = frozenset({MAIL, RCPT, DATA})
