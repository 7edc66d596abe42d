"""Flushing the queue: every due entry, in queue order, over one SMTP session.

One session per mailhub (one TLS handshake, one AUTH), each entry locked while it is sent
so concurrent flushers never send the same one. The queue is streamed, not loaded: the
names in new/ in queue order (`Queue.names`), and per name the lock and one read of the
sidecar; entries for a per-user mailhub are set aside by id for a pass of their own, so
memory holds names, never the entries (a flush of 100,000 runs in the memory of 1,000).
Per entry, in this order, so that a crash at any point loses nothing:

1. lock it and read its sidecar (under the lock: another flusher may have just tried it);
2. read the message, checking its recorded size;
3. `relay.delivery.deliver`: the wire form for this session (8BITMIME or not), MAIL,
   RCPT, DATA, the log line, and the verdict;
4. after the server's 250: dead.letter copies first (for recipients refused with 5xx),
   then the queue change (entry removed, or its sidecar rewritten with the 4xx
   recipients left). A crash between the 250 and this step sends the message again on
   the next flush: **the duplicate window**, one message per crash, never a loss. The
   removals' fsyncs are batched (`relay.queue.Removals`): a power cut, not a crash of
   the process, may repeat up to a batch of messages; none is lost.

RSET only after a transaction that did not complete: after the 250 to the end of the
data the session is ready for the next MAIL (RFC 5321 3.3, 4.1.1.5), and an RSET there
would be a round trip of its own per message.

Failures, and what they cost:
- the mailhub cannot be reached, or refuses the greeting, EHLO, STARTTLS or AUTH for
  now: the flush stops at once and no entry is charged an attempt;
- the server closes the session (idle limit, messages-per-connection limit): reconnect
  and go on; if the new session also breaks before a message got through, stop there;
- a 4xx to an entry's MAIL, RCPT or DATA, or the session lost during its DATA: that entry
  is charged an attempt and backs off (`QueueBackoff`); the flush goes on. Lost after
  the final dot, the message may have been delivered: its last error says so, and it is
  not sent again in this flush;
- a 421 (the server closing) at an entry's MAIL, RCPT or DATA: the server did not take
  the message, so the entry is tried once more over a new session, and is not charged
  a back-off;
- a 5xx: the message goes to the submitter's dead.letter with the reply, and leaves;
- a permanent session failure (login rejected, certificate refused): the flush stops,
  entries stay queued, and the exit status says why;
- an entry older than `QueueMaxAge`: to dead.letter with its last error;
- an unreadable entry: moved to `corrupt/`, reported.
"""

from __future__ import annotations

import os
import time

from relay import replies
from relay.config import parse_hostport
from relay.errors import (
    DataError,
    RelayError,
    TempFailError,
    UnavailableError,
    is_temporary,
    status_for,
)
from relay.queue import Corrupt, Queue, Removals, is_entry_name, queue_dir
from relay.records import Record

# Annotations only (`typing` at run time is start-up cost: docs/architecture.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, NoReturn, TextIO

    from relay.config import Config, Mailhub
    from relay.delivery import Verdict
    from relay.message import Message
    from relay.queue import Entry, Locked
    from relay.smtp import Session


class Failure(Record):
    """An entry (or some of its recipients) that left the queue undelivered."""

    __slots__ = ("id", "reason", "saved_to")

    def __init__(self, id: str, reason: str, saved_to: str | None) -> None:
        self.id = id
        self.reason = reason
        self.saved_to = saved_to


class FlushReport(Record):
    """What one flush did; `exit_code` turns it into the command's status.

    The one record filled in as it goes: the flush appends to it, a progress display
    reads it.
    """

    __slots__ = (
        "busy",
        "connections",
        "corrupt",
        "current_error",
        "deferred",
        "due",
        "errors",
        "expired",
        "failed",
        "fatal",
        "handled",
        "left",
        "queued",
        "seen",
        "sent",
        "started",
        "stopped",
        "waiting",
    )

    def __init__(self) -> None:
        #: Entries found due (or all, with force), and those another flusher held.
        self.due = 0
        #: Entries handled so far (sent, deferred, failed, skipped).
        self.handled = 0
        #: Entries in new/ when the flush started, and how many of them it has looked at.
        self.queued = 0
        self.seen = 0
        #: Messages sent (a count: a list of 100,000 ids would be 10 MiB held to the end).
        self.sent = 0
        self.deferred: list[tuple[str, str]] = []
        self.failed: list[Failure] = []
        self.expired: list[Failure] = []
        self.corrupt: list[Corrupt] = []
        #: Entries another flusher held, and entries not yet due.
        self.busy = 0
        self.waiting = 0
        #: Entries in the queue when the flush ended.
        self.left = 0
        self.connections = 0
        #: The temporary, connection-level failure that ended the flush early.
        self.stopped: RelayError | None = None
        #: A permanent session failure (login, certificate): nothing more was tried.
        self.fatal: RelayError | None = None
        #: Local failures: the queue or dead.letter could not be written.
        self.errors: list[RelayError] = []
        #: The last failure seen, for a progress display.
        self.current_error: str | None = None
        self.started = time.monotonic()

    def exit_code(self) -> int:
        """0 when all that was due left or is queued for a temporary reason (mailq(1))."""
        if self.fatal is not None:
            return self.fatal.exit_code
        if self.errors:
            return self.errors[0].exit_code
        if self.failed or self.expired:
            return status_for(UnavailableError)
        if self.corrupt:
            return status_for(DataError)
        return os.EX_OK

    def summary(self) -> str:
        parts = [f"{self.sent} sent"]
        if self.deferred:
            parts.append(f"{len(self.deferred)} deferred")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.expired:
            parts.append(f"{len(self.expired)} expired")
        if self.corrupt:
            parts.append(f"{len(self.corrupt)} corrupt")
        if self.busy:
            parts.append(f"{self.busy} busy in another flush")
        parts.append(f"{self.left} left in the queue")
        text = ", ".join(parts)
        if self.connections:
            text += f" ({self.connections} connection{'s' if self.connections > 1 else ''})"
        if self.stopped is not None:
            text += f"; stopped early: {self.stopped}"
        return text


if TYPE_CHECKING:
    Progress = Callable[[FlushReport], None]
    Password = Callable[[], str | None]


def flush(
    config: Config,
    *,
    password: Password | None = None,
    force: bool = False,
    transcript: TextIO | None = None,
    progress: Progress | None = None,
) -> FlushReport:
    """Deliver the due entries of the configured queue; see the module docstring.

    Raises CantCreateError (73) when the queue directory is unsafe; every other failure
    is recorded in the report. `password` is called only when a session is opened, so
    an `AuthPassCommand` does not run for an empty queue.
    """
    try:
        queue = Queue.open(queue_dir(config.queue_dir), create=False)
    except FileNotFoundError:
        return FlushReport()  # nothing was ever queued here
    if password is None:
        password = _configured_password(config)
    with queue:
        run = _Flush(config, queue, password, force, transcript, progress)
        report = run.run()
        queue.write_status(
            {
                "finished_at": time.time(),
                "sent": report.sent,
                "deferred": len(report.deferred),
                "failed": len(report.failed) + len(report.expired),
                "left": report.left,
                "connections": report.connections,
                "stopped": str(report.stopped) if report.stopped else None,
                "fatal": str(report.fatal) if report.fatal else None,
            }
        )
    return report


def _configured_password(config: Config) -> Password:
    def resolve() -> str | None:
        from relay import credentials

        return credentials.resolve(config) if config.auth_user else None

    return resolve


class _Halt(Exception):
    """Stop the flush: the reason is already in the report."""


class _HubDown(_Halt):
    """Stop sending to this mailhub: it cannot be reached for now (report.stopped)."""


class _Flush:
    def __init__(
        self,
        config: Config,
        queue: Queue,
        password: Password,
        force: bool,
        transcript: TextIO | None,
        progress: Progress | None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.password = password
        self.force = force
        self.transcript = transcript
        self.progress = progress
        self.report = FlushReport()
        self._secret: tuple[str | None] | None = None

    def run(self) -> FlushReport:
        report = self.report
        self.now = time.time()
        queue = self.queue
        queue.sweep_tmp(self.now)
        report.queued = queue.count()
        self.removals = Removals(queue)
        #: Ids of entries for a per-user mailhub, by mailhub: sent in a pass of their own.
        self.aside: dict[str, list[str]] = {}
        try:
            try:
                self._pass(None, queue.names())
                for hub, names in self.aside.items():
                    self._pass(hub, names)
            except _Halt:
                pass
        finally:
            try:
                self.removals.finish()
            except RelayError as err:
                report.errors.append(err)
        report.left = queue.count()
        return report

    # -- one mailhub ----------------------------------------------------------------------

    def _pass(self, hub: str | None, names: Iterable[str]) -> None:
        """Every entry of `names` for this mailhub (None: the configured ones), in order.

        When the mailhub cannot be reached, or the flush must stop, the rest of the
        entries are still looked at, without sending: the expired ones leave, the due
        ones are counted, those for another mailhub are set aside.
        """
        hubs = (parse_hostport(hub),) if hub else self.config.mailhubs
        link = _Link(self, hubs)
        halted: _Halt | None = None
        try:
            for name in names:
                try:
                    self._one(name, hub, link)
                except _HubDown:
                    link.down = True  # the other mailhubs' entries may still go
                except _Halt as stop:
                    halted = stop
                    link.down = True
        finally:
            link.close()
            self.report.connections += link.connections
        if halted is not None:
            raise halted

    def _lock(self, name: str) -> Locked | None:
        """The entry's lock; None (counted) when another flusher has it, or it is bad."""
        if not is_entry_name(name):
            self._quarantine(name, "not a queue entry name")
            return None
        try:
            locked = self.queue.lock(name)
        except ValueError as err:
            self._quarantine(name, str(err))
            return None
        if locked is None:  # held by another flusher, or just removed by one
            self.report.busy += 1
            self.report.due += 1
        return locked

    def _one(self, name: str, hub: str | None, link: _Link) -> None:
        report = self.report
        if hub is None:
            report.seen += 1
        locked = self._lock(name)
        if locked is None:
            return
        with locked:
            entry = locked.entry
            if entry.age(self.now) >= self.config.queue_max_age:
                self._expire(locked)
                return
            if entry.mailhub is not None and entry.mailhub != hub:
                self.aside.setdefault(entry.mailhub, []).append(name)
                report.queued -= 1  # looked at again in its mailhub's pass
                report.seen -= 1
                return
            if not self.force and not entry.due(self.now):
                report.waiting += 1
                return
            report.due += 1
            if link.down:
                return  # stays queued, not charged: the mailhub is out of reach
            self.removals.tick()
            self._deliver(locked, link)
            report.handled += 1
            if self.progress is not None:
                self.progress(report)

    def _deliver(self, locked: Locked, link: _Link) -> None:
        from relay.message import Spooled, parse

        entry = locked.entry
        try:
            raw = locked.open_message()  # a big one stays in its file
        except ValueError as err:
            self._quarantine(entry.id, str(err))
            return
        try:
            try:
                message = parse(raw)
            except (ValueError, RelayError) as err:
                self._quarantine(entry.id, str(err))
                return
            self._send(locked, message, link)
        except RelayError as err:  # the queue or dead.letter could not be written
            self.report.errors.append(err)
            self.report.current_error = str(err)
            raise _Halt() from None
        finally:
            if isinstance(raw, Spooled):
                raw.close()

    def _send(self, locked: Locked, message: Message, link: _Link) -> None:
        from relay.delivery import deliver
        from relay.envelope import Envelope

        entry = locked.entry
        envelope = Envelope(entry.recipients, sender=entry.sender)
        for retry in (False, True):
            session = link.get()  # raises _HubDown when the mailhub is out of reach
            verdict = deliver(
                session, message, envelope, queue_id=entry.id, message_id=entry.message_id
            )
            if verdict.delivered:
                link.delivered()
                self._accepted(locked, verdict)
                return
            err = verdict.error
            assert err is not None
            self.report.current_error = str(err)
            link.failed(err)
            answered = err.code is not None and not replies.closes_session(err.code)
            if answered or link.alive():
                self._refused(locked, err)  # the server's verdict on this message
                return
            if err.step in (replies.DATA, replies.END_OF_DATA) and err.code is None:
                # Lost in this message's data: after the final dot the server may have
                # it (the error says so), and sending it again now could repeat that.
                self._defer(locked, str(err), blame=True)
                return
            if retry:
                self._defer(locked, str(err), blame=False)
                return
            # The server closed the session without taking the message (a 421), or the
            # connection dropped before any of its data went out: not this message's
            # fault, and no duplicate possible; once more, over a new session.

    # -- outcomes -------------------------------------------------------------------------

    def _accepted(self, locked: Locked, verdict: Verdict) -> None:
        entry = locked.entry
        never = verdict.never
        if never:
            reason = "refused by the server: " + "; ".join(
                f"<{r}>: {reply}" for r, reply in never.items()
            )
            saved = locked.to_dead_letter(reason, recipients=list(never))
            self.report.failed.append(Failure(entry.id, reason, saved))
            self.report.current_error = reason
        later = verdict.later
        if later:
            replies_ = "; ".join(f"<{r}>: {verdict.refused[r][1]}" for r in later)
            self._defer(
                locked,
                f"RCPT TO: refused for now: {replies_}",
                blame=True,
                recipients=later,
                delivered=entry.delivered + verdict.accepted,
            )
            return
        locked.remove(self.removals)
        self.report.sent += 1

    def _refused(self, locked: Locked, err: RelayError) -> None:
        """The server answered this message with an error and the session lives on."""
        if is_temporary(err):
            self._defer(locked, str(err), blame=True)
            return
        saved = locked.to_dead_letter(str(err))
        locked.remove(self.removals)
        self.report.failed.append(Failure(locked.entry.id, str(err), saved))

    def _defer(self, locked: Locked, error: str, *, blame: bool, **changes: Any) -> None:
        locked.defer(error, self.config.queue_backoff, blame=blame, **changes)
        self.report.deferred.append((locked.entry.id, error))
        self.report.current_error = error

    def _expire(self, locked: Locked) -> None:
        current = locked.entry
        reason = (
            f"expired after {_duration(self.config.queue_max_age)} in the queue, "
            f"{current.attempts} attempt{'s' if current.attempts != 1 else ''}; "
            f"last error: {current.last_error or 'none (never tried)'}"
        )
        try:
            saved = locked.to_dead_letter(reason)
            locked.remove(self.removals)
        except RelayError as err:
            self.report.errors.append(err)
            return
        self.report.expired.append(Failure(current.id, reason, saved))

    def _quarantine(self, name: str, reason: str) -> None:
        try:
            where = self.queue.quarantine(name)
        except RelayError as err:
            self.report.errors.append(err)
            return
        if where is not None:
            self.report.corrupt.append(Corrupt(name, reason, quarantined=True))
            self.report.current_error = f"{name}: {reason}"

    def secret(self) -> str | None:
        if self._secret is None:
            self._secret = (self.password(),)
        return self._secret[0]


class _Link:
    """The session to one mailhub, reopened when the server closes it.

    Reconnecting is allowed once per stretch without progress: a server that closes
    every session after N messages still gets all of them, one that fails every new
    session gets two tries, and then the flush stops.
    """

    def __init__(self, flush: _Flush, hubs: Sequence[Mailhub]) -> None:
        self.flush = flush
        self.hubs = hubs
        self.session: Session | None = None
        self.connections = 0
        #: A transaction was begun on this session and did not end with the 250 to its
        #: data: RSET before the next one.
        self.dirty = False
        self.reconnects = 0
        self.last_error: RelayError | None = None
        #: The mailhub is out of reach (or the flush must stop): send nothing more.
        self.down = False

    def alive(self) -> bool:
        client = self.session.client if self.session is not None else None
        # relay.smtp_wire closes its socket on every transport failure (EOF, reset,
        # timeout), and relay.smtp drops the client when the server says 421.
        return client is not None and client.sock is not None

    def get(self) -> Session:
        if self.session is not None and self.dirty and self.alive():
            # Only after a transaction that did not complete: after the 250 to the data
            # the server is ready for the next MAIL (RFC 5321 3.3, 4.1.1.5), and an RSET
            # there costs a round trip per message. A server that closed the session
            # after that 250 shows it at the next MAIL, which is then sent again over a
            # new session (nothing of it went through: no duplicate).
            self.session.reset()
            if not self.alive():
                self.last_error = TempFailError(
                    f"{self.session.hub} closed the session between messages", step="RSET"
                )
        if self.session is not None and not self.alive():
            self.session.close()
            self.session = None
            if self.reconnects >= 1:
                self._give_up(self.last_error)
            self.reconnects += 1
        if self.session is None:
            self._open()
        assert self.session is not None
        self.dirty = True
        return self.session

    def _open(self) -> None:
        from relay.smtp import open_session

        report = self.flush.report
        try:
            self.session = open_session(
                self.flush.config,
                hubs=self.hubs,
                password=self.flush.secret(),
                transcript=self.flush.transcript,
            )
        except RelayError as err:
            report.current_error = str(err)
            if is_temporary(err):
                self._give_up(err)
            report.fatal = err
            raise _Halt() from None
        self.connections += 1
        self.dirty = False

    def _give_up(self, err: RelayError | None) -> NoReturn:
        self.flush.report.stopped = err or TempFailError("the mailhub keeps closing the session")
        raise _HubDown()

    def failed(self, err: RelayError) -> None:
        self.last_error = err

    def delivered(self) -> None:
        self.reconnects = 0
        self.dirty = False

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def pending(config: Config) -> list[Entry]:
    """The queued entries (for tests and callers that only look)."""
    try:
        queue = Queue.open(queue_dir(config.queue_dir), create=False)
    except FileNotFoundError:
        return []
    with queue:
        return queue.scan().entries
