"""relay.flush against real aiosmtpd servers: one session for many, faults at each step,
partial refusals, reconnects, concurrent flushers, corruption, back-off and expiry.

Entries are queued with `Queue=always` through relay.submission.submit, then flushed
with a config that may point at another (or no) server: the queue does not care which
mailhub was configured when a message was queued.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from relay import config as config_module
from relay.config import Config
from relay.envelope import Identity
from relay.errors import NoPermError
from relay.flush import FlushReport, flush, pending
from relay.queue import Entry, Locked, Queue
from relay.submission import submit
from tests.mailhub import MailHub, MailHubFactory, closed_port, dead_letters
from tests.relayconf import PASSWORD, write_config
from tests.scripted_smtp import ScriptedSMTP

# The submitter is the user running the flush (their own queue): its dead.letter is
# theirs to write. Another uid's entries go to the spool's dead area (test_system_queue).
ME = Identity("bob", os.getuid(), "Bob Builder")


def configure(tmp_path: Path, hub: MailHub | None, **keys: Any) -> Config:
    keys.setdefault("QueueDir", tmp_path / "queue")
    if hub is None:
        keys.setdefault("mailhub", f"127.0.0.1:{closed_port()}")
    return config_module.load(str(write_config(tmp_path, hub, **keys)))


def enqueue(
    tmp_path: Path, count: int, recipients: tuple[str, ...] = ("alice@example.com",), **kw: Any
) -> list[str]:
    """Queue `count` messages (Queue=always); returns their Message-IDs in queue order."""
    config = configure(tmp_path, None, Queue="always")
    ids = []
    for number in range(count):
        body = kw.get("body", f"Subject: n{number}\n\nmessage {number}\n".encode())
        result = submit(
            body,
            config=config,
            recipients=recipients,
            identity=ME,
            dead_letter=str(tmp_path / "dead.letter"),
        )
        ids.append(result.message_id)
    return ids


def received_ids(hub: MailHub) -> list[str]:
    return [str(m.message()["Message-ID"]) for m in hub.messages]


def verbs(hub: MailHub) -> collections.Counter[str]:
    return collections.Counter(command.split()[0] for command in hub.commands)


#: The reply to the data after which `_OneMessagePerConnection` closes the connection.
_LAST = "250 2.0.0 queued; one message per connection, goodbye"


class _OneMessagePerConnection(ScriptedSMTP):
    """Takes one message per connection (the 250 to its data), then closes it."""

    def _answer(self, sock: Any, reply: str) -> bool:
        return super()._answer(sock, reply) and reply != _LAST


def by_id(config: Config) -> dict[str, Entry]:
    return {entry.message_id or "": entry for entry in pending(config)}


class TestOneSession:
    def test_many_messages_one_handshake_one_login(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca_file: Path,
    ) -> None:
        ids = enqueue(tmp_path, 6)
        hub = tls_hub(auth=True)
        config = configure(
            tmp_path, hub, AuthUser="alice", AuthPass=f'"{PASSWORD}"', TLS_CA_File=ca_file
        )
        report = flush(config)
        assert received_ids(hub) == ids  # in queue order, each once
        assert hub.connections == 1
        counted = verbs(hub)
        assert (counted["STARTTLS"], counted["AUTH"], counted["MAIL"]) == (1, 1, 6)
        assert counted["RSET"] == 0  # after a 250 to the data the next MAIL follows (RFC 5321 3.3)
        assert all(m.tls and m.auth_user == "alice" for m in hub.messages)
        assert (report.sent, report.left, report.connections) == (6, 0, 1)
        assert report.exit_code() == 0
        assert pending(config) == []

    def test_empty_queue_opens_no_connection_and_asks_no_secret(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        hub = mailhub()
        asked: list[bool] = []

        def password() -> str:
            asked.append(True)
            return "x"

        report = flush(configure(tmp_path, hub, AuthUser="alice"), password=password)
        assert (report.due, report.exit_code(), hub.connections, asked) == (0, 0, 0, [])

    def test_hub_down_then_up(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        down = configure(tmp_path, None)
        for number in range(3):
            result = submit(
                f"Subject: {number}\n\nx\n".encode(),
                config=down,
                recipients=["alice@example.com"],
                identity=ME,
                dead_letter=str(tmp_path / "dead.letter"),
            )
            assert result.queued_id is not None
        report = flush(down)
        assert report.stopped is not None and "Connection refused" in str(report.stopped)
        assert (report.exit_code(), report.left) == (0, 3)
        # Not charged: the hub was down, not the entries at fault.
        assert [e.attempts for e in pending(down)] == [1, 1, 1]
        hub = mailhub()
        up = configure(tmp_path, hub)
        assert flush(up).sent == 3
        assert flush(up).sent == 0
        assert len(hub.messages) == 3
        assert len(set(received_ids(hub))) == 3
        assert dead_letters(tmp_path) == []


class TestTemporaryFailures:
    @pytest.mark.parametrize(
        "options",
        [
            {"faults": {"CONNECT": (421, "4.3.2 busy")}},
            {"faults": {"EHLO": (421, "4.3.2 busy"), "HELO": (421, "4.3.2 busy")}},
            {"faults": {"AUTH": (454, "4.7.0 try later")}, "auth": True},
        ],
    )
    def test_session_level_4xx_stops_without_charging(
        self, tmp_path: Path, mailhub: MailHubFactory, options: dict[str, Any]
    ) -> None:
        enqueue(tmp_path, 3)
        hub = mailhub(auth_require_tls=False, **options)
        keys: dict[str, Any] = {}
        if options.get("auth"):
            keys = {"AuthUser": "alice", "AuthPass": f'"{PASSWORD}"', "AuthOverPlaintext": "yes"}
        config = configure(tmp_path, hub, **keys)
        report = flush(config)
        assert report.stopped is not None
        assert (report.exit_code(), report.left, report.connections) == (0, 3, 0)
        assert [(e.attempts, e.last_error) for e in pending(config)] == [(0, None)] * 3

    def test_starttls_refused_for_now_stops_without_charging(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca_file: Path,
    ) -> None:
        enqueue(tmp_path, 2)
        hub = tls_hub(faults={"STARTTLS": (454, "4.7.0 later")})
        config = configure(tmp_path, hub, TLS_CA_File=ca_file)
        report = flush(config)
        assert report.stopped is not None and "454 4.7.0 later" in str(report.stopped)
        assert (report.exit_code(), report.left) == (0, 2)
        assert [e.attempts for e in pending(config)] == [0, 0]
        assert verbs(hub)["MAIL"] == 0  # nothing in clear text

    @pytest.mark.parametrize(
        ("step", "shown"),
        [("MAIL", "MAIL FROM"), ("RCPT", "RCPT TO"), ("DATA", "DATA"), ("EOD", "end of data")],
    )
    def test_message_level_4xx_backs_off_and_goes_on(
        self, tmp_path: Path, mailhub: MailHubFactory, step: str, shown: str
    ) -> None:
        enqueue(tmp_path, 3)
        hub = mailhub(faults={step: (451, "4.3.0 try later")})
        config = configure(tmp_path, hub, QueueBackoff="60,3600")
        report = flush(config)
        assert (len(report.deferred), report.exit_code(), hub.connections) == (3, 0, 1)
        assert verbs(hub)["MAIL"] == 3  # every entry tried over the one session
        for entry in pending(config):
            assert entry.attempts == 1
            assert entry.next_try - entry.queued_at == pytest.approx(60, abs=5)
            assert shown in (entry.last_error or "")
            assert "451 4.3.0 try later" in (entry.last_error or "")
        assert hub.messages == []


class TestPermanentFailures:
    def test_a_5xx_goes_to_dead_letter_and_leaves(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        (msgid,) = enqueue(tmp_path, 1)
        hub = mailhub(faults={"MAIL": (550, "5.7.1 not you")})
        config = configure(tmp_path, hub)
        report = flush(config)
        (failure,) = report.failed
        assert "550 5.7.1 not you" in failure.reason
        assert failure.saved_to == str(tmp_path / "dead.letter")
        assert report.exit_code() == os.EX_UNAVAILABLE
        assert pending(config) == []
        (kept,) = dead_letters(tmp_path)
        assert kept["Message-ID"] == msgid
        assert "550 5.7.1 not you" in kept["X-Mailx-Relay-Failed"]

    def test_partial_refusal(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        rcpts = ("ok@example.com", "later@example.com", "never@example.com")
        (msgid,) = enqueue(tmp_path, 1, recipients=rcpts)
        faults = {
            "later@example.com": (451, "4.2.0 greylisted"),
            "never@example.com": (550, "5.1.1 unknown"),
        }
        hub = mailhub(rcpt_faults=faults)
        config = configure(tmp_path, hub)
        report = flush(config)
        assert [m.rcpt_tos for m in hub.messages] == [["ok@example.com"]]
        assert report.exit_code() == os.EX_UNAVAILABLE
        (failure,) = report.failed
        assert "<never@example.com>: 550 5.1.1 unknown" in failure.reason
        (kept,) = dead_letters(tmp_path)
        assert "never@example.com" in kept["X-Mailx-Relay-Failed"]
        assert "later@example.com" not in kept["X-Mailx-Relay-Failed"]
        (entry,) = pending(config)
        assert entry.recipients == ("later@example.com",)
        assert entry.delivered == ("ok@example.com",)
        # Greylisting over: only the one left gets it; ok@ never receives it twice.
        hub2 = mailhub()
        report = flush(configure(tmp_path, hub2), force=True)
        assert [m.rcpt_tos for m in hub2.messages] == [["later@example.com"]]
        assert received_ids(hub2) == [msgid]
        assert report.exit_code() == 0 and pending(config) == []

    def test_login_rejected_stops_and_keeps_everything(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        enqueue(tmp_path, 2)
        hub = mailhub(auth=True, auth_require_tls=False)
        config = configure(
            tmp_path, hub, AuthUser="alice", AuthPass="wrong", AuthOverPlaintext="yes"
        )
        report = flush(config)
        assert isinstance(report.fatal, NoPermError)
        assert report.exit_code() == os.EX_NOPERM
        assert [e.attempts for e in pending(config)] == [0, 0]
        assert dead_letters(tmp_path) == []


class TestConnectionLoss:
    def test_lost_in_data_charges_that_entry_and_reconnects_once(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        ids = enqueue(tmp_path, 3)
        hub = mailhub(disconnect_in_data=True)
        config = configure(tmp_path, hub)
        report = flush(config)
        assert hub.connections == 2  # the first session, then one reconnect
        assert report.stopped is not None and report.exit_code() == 0
        left = by_id(config)
        assert [left[i].attempts for i in ids] == [1, 1, 0]  # the third was never tried
        assert "may" not in (left[ids[2]].last_error or "")
        # The whole message went out before the connection was lost: it may be there.
        assert "may have been delivered" in (left[ids[0]].last_error or "")
        assert "deliver it twice" in (left[ids[0]].last_error or "")
        assert left[ids[0]].next_try > left[ids[0]].queued_at  # backs off
        hub2 = mailhub()
        assert flush(configure(tmp_path, hub2), force=True).sent == 3
        assert sorted(received_ids(hub2)) == sorted(ids)

    def test_server_closing_between_messages_costs_a_reconnect_each(self, tmp_path: Path) -> None:
        # A server with a one-message-per-connection limit: the 250 to the data, then it
        # closes. No RSET follows a completed transaction, so the flush finds out at the
        # next MAIL, and sends that message again over a new session (nothing of it went
        # through the closed one: no duplicate).
        enqueue(tmp_path, 3)
        with _OneMessagePerConnection(replies={"EOD": _LAST}) as server:
            report = flush(configure(tmp_path, None, mailhub=f"127.0.0.1:{server.port}"))
            assert len(server.messages) == 3
            assert (server.connections, report.connections, report.stopped) == (3, 3, None)
            assert (report.sent, report.left) == (3, 0)

    def test_rset_only_after_a_transaction_that_did_not_complete(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        enqueue(tmp_path, 1, recipients=("alice@example.com",))
        enqueue(tmp_path, 1, recipients=("nobody@example.com",))
        enqueue(tmp_path, 2, recipients=("alice@example.com",))
        hub = mailhub(rcpt_faults={"nobody@example.com": (550, "5.1.1 no such user")})
        report = flush(configure(tmp_path, hub))
        assert (report.sent, len(report.failed), report.connections) == (3, 1, 1)
        order = [c.split()[0] for c in hub.commands if c.split()[0] in ("MAIL", "RSET")]
        # The refused one is reset (by the session, and again by the flush before the
        # next message, as before); the accepted ones are followed by the next MAIL.
        assert order[:2] == ["MAIL", "MAIL"]
        assert order[2] == "RSET" and order[-2:] == ["MAIL", "MAIL"]
        assert order.count("MAIL") == 4

    def test_closed_before_data_retries_the_same_entry_once(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        ids = enqueue(tmp_path, 3)
        hub = mailhub(disconnect_after="MAIL")
        config = configure(tmp_path, hub)
        report = flush(config)
        assert hub.connections == 2
        assert report.stopped is not None and report.exit_code() == 0
        left = by_id(config)
        first = left[ids[0]]
        assert first.attempts == 1
        assert first.next_try == pytest.approx(first.queued_at, abs=5)  # not its fault
        assert [left[i].attempts for i in ids[1:]] == [0, 0]


class TestSchedule:
    def test_backoff_is_honoured_unless_forced(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        with freeze_time("2027-03-01 12:00:00") as clock:
            enqueue(tmp_path, 1)
            busy = mailhub(faults={"MAIL": (451, "4.3.0 later")})
            flush(configure(tmp_path, busy, QueueBackoff="60,3600"))
            clock.tick(30)
            hub = mailhub()
            config = configure(tmp_path, hub, QueueBackoff="60,3600")
            report = flush(config)
            assert (report.due, report.waiting, hub.connections) == (0, 1, 0)
            clock.tick(31)
            assert flush(config).sent == 1

    def test_backoff_doubles(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        with freeze_time("2027-03-01 12:00:00") as clock:
            enqueue(tmp_path, 1)
            busy = mailhub(faults={"RCPT": (451, "4.2.0 greylisted")})
            config = configure(tmp_path, busy, QueueBackoff="10,25")
            waits = []
            for _ in range(4):
                report = flush(config, force=True)
                assert len(report.deferred) == 1
                (entry,) = pending(config)
                waits.append(entry.next_try - clock().timestamp())
                clock.tick(1)
            assert waits == [10, 20, 25, 25]

    def test_entries_expire_to_dead_letter_with_the_last_error(self, tmp_path: Path) -> None:
        with freeze_time("2027-03-01 12:00:00") as clock:
            (msgid,) = enqueue(tmp_path, 1)
            config = configure(tmp_path, None, QueueMaxAge="2d")
            flush(config)
            clock.tick(2 * 86400 - 60)
            assert flush(config).expired == []
            with hold(config) as locked:
                locked.defer("451 4.3.0 mailbox busy", (60, 3600), blame=True)
            clock.tick(120)
            report = flush(config)
        (expired,) = report.expired
        assert "expired after 2d in the queue, 1 attempt" in expired.reason
        assert "451 4.3.0 mailbox busy" in expired.reason
        assert report.exit_code() == os.EX_UNAVAILABLE
        assert pending(config) == []
        (kept,) = dead_letters(tmp_path)
        assert kept["Message-ID"] == msgid
        assert "mailbox busy" in kept["X-Mailx-Relay-Failed"]


@contextlib.contextmanager
def hold(config: Config, first: bool = False) -> Iterator[Locked]:
    """The lock of the only (or the first) entry, as a flusher would hold it."""
    with Queue.open(str(config.queue_dir)) as queue:
        found = queue.scan().entries
        if not first:
            assert len(found) == 1
        locked = queue.lock(found[0].id)
        assert locked is not None
        with locked:
            yield locked


class TestConcurrency:
    def test_two_flushers_send_each_message_once(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        ids = enqueue(tmp_path, 30)
        hub = mailhub()
        config = configure(tmp_path, hub)
        reports: list[FlushReport] = []
        start = threading.Barrier(3)

        def run() -> None:
            start.wait()
            reports.append(flush(config))

        threads = [threading.Thread(target=run) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        counted = collections.Counter(received_ids(hub))
        assert sorted(counted) == sorted(ids)
        assert set(counted.values()) == {1}
        assert sum(r.sent for r in reports) == 30
        assert pending(config) == []


class TestStoredForm:
    def test_corrupt_entry_is_quarantined_and_the_rest_sent(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        ids = enqueue(tmp_path, 3)
        hub = mailhub()
        config = configure(tmp_path, hub)
        second = sorted((tmp_path / "queue" / "new").iterdir())[1]
        (second / "message").write_bytes(b"Subject: trunc")
        report = flush(config)
        assert received_ids(hub) == [ids[0], ids[2]]
        (bad,) = report.corrupt
        assert bad.id == second.name and "truncated" in bad.reason
        assert report.exit_code() == os.EX_DATAERR
        assert (tmp_path / "queue" / "corrupt" / second.name / "meta.json").exists()
        again = flush(config)  # reported once; it stays in corrupt/ for a human
        assert (again.exit_code(), again.corrupt) == (0, [])

    def test_wire_form_is_made_per_session(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        body = "Subject: 8\n\nGrüße\n".encode()
        enqueue(tmp_path, 2, body=body)
        plain = mailhub(eightbitmime=False)
        config = configure(tmp_path, plain)
        with hold(config, first=True):  # hold one back for the other hub
            flush(config)
        (received,) = plain.messages
        assert received.data.isascii()  # re-encoded for a server without 8BITMIME
        assert "Grüße" in received.message().get_content()
        modern = mailhub()
        flush(configure(tmp_path, modern))
        (received,) = modern.messages
        assert "BODY=8BITMIME" in received.mail_options
        assert "Grüße".encode() in received.data

    def test_a_per_user_mailhub_is_kept_with_the_entry(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        hub = mailhub()
        (tmp_path / "revaliases").write_text(f"bob:bob@example.org:{hub.host}:{hub.port}\n")
        (msgid,) = enqueue(tmp_path, 1)  # config's own mailhub is down
        config = configure(tmp_path, None)
        (entry,) = pending(config)
        assert entry.mailhub == f"{hub.host}:{hub.port}"
        assert flush(config).sent == 1
        assert received_ids(hub) == [msgid]

    def test_status_records_how_the_flush_ended(self, tmp_path: Path) -> None:
        enqueue(tmp_path, 1)
        flush(configure(tmp_path, None))
        status = json.loads((tmp_path / "queue" / "flush.json").read_text())
        assert "Connection refused" in status["stopped"]
        assert (status["sent"], status["left"]) == (0, 1)
