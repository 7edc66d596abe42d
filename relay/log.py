"""One logfmt line per delivery attempt, to `LogFile` or syslog (facility mail).

Fields: time, id (queue id or `-`), msgid, from, to, mailhub, tls, auth, result, reply,
exit, duration. Values come from the envelope, the session and the server's reply, never
from a secret. Logging must not decide a message's fate: a log that cannot be written is
one warning on stderr, and the delivery's outcome stands.
"""

from __future__ import annotations

import os
import sys
import time

from relay.config import Config
from relay.records import Record

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Sequence

    from relay.errors import RelayError
    from relay.smtp import Outcome, Session


class Attempt(Record):
    """One delivery attempt, as one log line shows it."""

    __slots__ = (
        "auth",
        "duration",
        "mailhub",
        "message_id",
        "queue_id",
        "recipients",
        "reply",
        "result",
        "sender",
        "status",
        "tls",
    )

    def __init__(
        self,
        queue_id: str | None,
        message_id: str | None,
        sender: str,
        recipients: Sequence[str],
        mailhub: str,
        tls: bool,
        auth: str | None,
        result: str,
        reply: str,
        status: int,
        duration: float,
    ) -> None:
        self.queue_id = queue_id
        self.message_id = message_id
        self.sender = sender
        self.recipients = recipients
        self.mailhub = mailhub
        self.tls = tls
        self.auth = auth
        #: delivered | partial | deferred | failed
        self.result = result
        self.reply = reply
        self.status = status
        self.duration = duration


def attempt_for(
    config: Config,
    *,
    session: Session | None,
    queue_id: str | None,
    message_id: str | None,
    sender: str,
    recipients: Sequence[str],
    started: float,
    outcome: Outcome | None = None,
    error: RelayError | None = None,
) -> None:
    """Log one attempt from what the SMTP layer returned or raised; a no-op without a log."""
    if not config.log_file and not config.syslog:
        return
    if error is not None:
        from relay.errors import is_temporary

        result = "deferred" if is_temporary(error) else "failed"
        reply, code = error.reply or str(error), error.exit_code
    else:
        assert outcome is not None
        result = "partial" if outcome.refused else "delivered"
        reply, code = outcome.reply, 0
    hub = str(session.hub) if session is not None else ",".join(map(str, config.mailhubs))
    record(
        config,
        Attempt(
            queue_id=queue_id,
            message_id=message_id,
            sender=sender,
            recipients=recipients,
            mailhub=hub,
            tls=session.tls if session is not None else False,
            auth=session.auth_method if session is not None else None,
            result=result,
            reply=reply,
            status=code,
            duration=time.monotonic() - started,
        ),
    )


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\\') and value.isprintable():
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else repr(c)[1:-1] for c in escaped) + '"'


def format_attempt(attempt: Attempt, now: float | None = None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now))
    fields = [
        ("time", stamp),
        ("id", attempt.queue_id or "-"),
        ("msgid", attempt.message_id or "-"),
        ("from", attempt.sender),
        ("to", ",".join(attempt.recipients)),
        ("mailhub", attempt.mailhub),
        ("tls", "yes" if attempt.tls else "no"),
        ("auth", attempt.auth or "-"),
        ("result", attempt.result),
        ("reply", attempt.reply or "-"),
        ("exit", str(attempt.status)),
        ("duration", f"{attempt.duration:.3f}"),
    ]
    return " ".join(f"{key}={_quote(value)}" for key, value in fields)


def record(config: Config, attempt: Attempt) -> None:
    """Write the attempt where the config says; nothing when it names no log."""
    if not config.log_file and not config.syslog:
        return
    line = format_attempt(attempt)
    if config.log_file:
        try:
            fd = os.open(
                config.log_file,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
            try:
                os.write(fd, (line + "\n").encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError as err:
            sys.stderr.write(
                f"sendmail: warning: cannot write LogFile {config.log_file}: "
                f"{err.strerror or err}\n"
            )
    if config.syslog:
        import syslog

        syslog.openlog("mailx-relay", syslog.LOG_PID, syslog.LOG_MAIL)
        level = syslog.LOG_INFO if attempt.status == 0 else syslog.LOG_WARNING
        syslog.syslog(level, line)
