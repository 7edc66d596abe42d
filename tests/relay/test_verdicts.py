"""relay.delivery.deliver and relay.replies: the one delivery step and its verdicts.

Against real servers: aiosmtpd (tests/mailhub.py) for replies it can give, and a small
raw-socket server (tests/scripted_smtp.py) for a 421 at RCPT and a connection closed
after the final dot. The same two failures are checked through the immediate send
(`submit`) and the queue flush, since both go through `deliver`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import config as config_module
from relay import replies
from relay.config import Config
from relay.delivery import DELIVERED, PARTIAL, PERMANENT, TEMPORARY, Verdict, deliver
from relay.envelope import Envelope, Identity
from relay.errors import RelayError, TempFailError
from relay.flush import flush, pending
from relay.message import parse
from relay.smtp import open_session
from relay.submission import submit
from tests.mailhub import MailHub, MailHubFactory
from tests.relayconf import write_config
from tests.scripted_smtp import HANG_UP, ScriptedSMTP

ME = Identity("bob", 1000, "Bob Builder")
MESSAGE = b"From: bob@example.org\r\nSubject: hi\r\nMessage-ID: <v@test>\r\n\r\nbody\r\n"
CLOSING = "421 4.3.2 shutting down for maintenance"


def configure(tmp_path: Path, server: MailHub | ScriptedSMTP, **keys: Any) -> Config:
    keys.setdefault("mailhub", f"{server.host}:{server.port}")
    return config_module.load(str(write_config(tmp_path, None, **keys)))


def send_one(
    tmp_path: Path,
    server: MailHub | ScriptedSMTP,
    recipients: tuple[str, ...] = ("alice@example.com",),
    **keys: Any,
) -> Verdict:
    config = configure(tmp_path, server, **keys)
    envelope = Envelope(recipients, sender="bob@example.org")
    with open_session(config) as session:
        return deliver(session, parse(MESSAGE), envelope)


@pytest.fixture
def scripted() -> Iterator[Any]:
    servers: list[ScriptedSMTP] = []

    def start(**options: Any) -> ScriptedSMTP:
        server = ScriptedSMTP(**options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class TestReplies:
    @pytest.mark.parametrize(
        ("code", "kind"),
        [
            (250, replies.OK),
            (354, replies.OK),
            (421, replies.CLOSING),
            (450, replies.TEMPORARY),
            (452, replies.TEMPORARY),
            (550, replies.PERMANENT),
            (554, replies.PERMANENT),
            (199, replies.UNEXPECTED),
            (600, replies.UNEXPECTED),
        ],
    )
    def test_kind(self, code: int, kind: str) -> None:
        assert replies.kind(code) == kind

    def test_421_is_temporary_and_closes(self) -> None:
        assert replies.is_temporary(421) and replies.closes_session(421)
        assert replies.is_temporary(451) and not replies.closes_session(451)
        assert replies.is_permanent(550) and not replies.is_temporary(550)
        assert not replies.is_temporary(None) and not replies.closes_session(None)


class TestVerdicts:
    def test_delivered(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        hub = mailhub()
        verdict = send_one(tmp_path, hub, ("alice@example.com", "carol@example.com"))
        assert verdict.kind == DELIVERED and verdict.delivered
        assert verdict.accepted == ("alice@example.com", "carol@example.com")
        assert verdict.reply.startswith("250")
        assert (verdict.error, dict(verdict.refused)) == (None, {})
        assert verdict.mailhub == f"{hub.host}:{hub.port}"
        (received,) = hub.wait_for(1)
        assert received.mail_from == "bob@example.org"

    def test_partial_splits_refusals_by_reply(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        hub = mailhub(
            rcpt_faults={
                "later@example.com": (451, "4.2.0 greylisted"),
                "never@example.com": (550, "5.1.1 unknown"),
            }
        )
        rcpts = ("ok@example.com", "later@example.com", "never@example.com")
        verdict = send_one(tmp_path, hub, rcpts)
        assert verdict.kind == PARTIAL and verdict.delivered
        assert verdict.accepted == ("ok@example.com",)
        assert verdict.later == ("later@example.com",)
        assert verdict.never == {"never@example.com": "550 5.1.1 unknown"}
        assert verdict.refused["later@example.com"] == (451, "451 4.2.0 greylisted")
        assert [m.rcpt_tos for m in hub.wait_for(1)] == [["ok@example.com"]]

    @pytest.mark.parametrize(
        ("faults", "kind", "step", "code"),
        [
            ({"MAIL": (451, "4.3.0 later")}, TEMPORARY, "MAIL FROM", 451),
            ({"MAIL": (550, "5.7.1 not you")}, PERMANENT, "MAIL FROM", 550),
            ({"DATA": (554, "5.3.0 no")}, PERMANENT, "DATA", 554),
            ({"EOD": (452, "4.3.1 full")}, TEMPORARY, "end of data", 452),
            ({"EOD": (552, "5.3.4 too big")}, PERMANENT, "end of data", 552),
        ],
    )
    def test_refusals_carry_step_reply_and_code(
        self,
        tmp_path: Path,
        mailhub: MailHubFactory,
        faults: dict[str, tuple[int, str]],
        kind: str,
        step: str,
        code: int,
    ) -> None:
        hub = mailhub(faults=faults)
        verdict = send_one(tmp_path, hub)
        assert (verdict.kind, verdict.delivered, verdict.accepted) == (kind, False, ())
        err = verdict.error
        assert err is not None
        assert (err.step, err.code) == (step, code)
        assert err.reply is not None and err.reply.startswith(str(code))
        assert not verdict.duplicate_risk
        assert hub.messages == []

    @pytest.mark.parametrize("pipelining", [True, False])
    def test_421_at_rcpt_closes_the_session_and_says_no_data_was_sent(
        self, tmp_path: Path, scripted: Any, pipelining: bool
    ) -> None:
        caps = ["PIPELINING", "8BITMIME"] if pipelining else ["8BITMIME"]
        server = scripted(replies={"RCPT": CLOSING}, capabilities=caps)
        config = configure(tmp_path, server)
        envelope = Envelope(["alice@example.com"], sender="bob@example.org")
        with open_session(config) as session:
            verdict = deliver(session, parse(MESSAGE), envelope)
            assert session.client is None  # 421: the server is gone, nothing more sent
        assert verdict.kind == TEMPORARY and not verdict.duplicate_risk
        err = verdict.error
        assert isinstance(err, TempFailError)
        assert (err.step, err.code, err.reply) == ("RCPT TO", 421, CLOSING)
        text = str(err)
        assert "closed the session at RCPT TO" in text
        assert "no message data was sent" in text
        assert CLOSING in text
        assert "DATA" not in text.replace("no message data", "")
        assert server.messages == []

    @pytest.mark.parametrize(
        ("verb", "step", "said"),
        [
            ("MAIL", "MAIL FROM", "no message data was sent"),
            ("DATA", "DATA", "no message data was sent"),
            ("EOD", "end of data", "it did not take the message"),
        ],
    )
    def test_421_at_any_step_closes_the_session(
        self, tmp_path: Path, scripted: Any, verb: str, step: str, said: str
    ) -> None:
        server = scripted(replies={verb: CLOSING})
        config = configure(tmp_path, server)
        envelope = Envelope(["alice@example.com"], sender="bob@example.org")
        with open_session(config) as session:
            verdict = deliver(session, parse(MESSAGE), envelope)
            assert session.client is None
        err = verdict.error
        assert verdict.kind == TEMPORARY and not verdict.duplicate_risk
        assert err is not None and (err.step, err.code, err.reply) == (step, 421, CLOSING)
        assert f"closed the session at {step}" in str(err) and said in str(err)

    def test_closed_after_the_final_dot_may_have_delivered(
        self, tmp_path: Path, scripted: Any
    ) -> None:
        server = scripted(replies={"EOD": HANG_UP})
        verdict = send_one(tmp_path, server)
        assert verdict.kind == TEMPORARY and verdict.duplicate_risk
        err = verdict.error
        assert err is not None and (err.step, err.code) == ("end of data", None)
        assert "may have been delivered" in str(err)
        assert "deliver it twice" in str(err)
        assert len(server.messages) == 1  # the server did get the whole message

    def test_the_attempt_is_logged(self, tmp_path: Path, scripted: Any) -> None:
        server = scripted(replies={"RCPT": CLOSING})
        log = tmp_path / "relay.log"
        send_one(tmp_path, server, LogFile=log)
        (line,) = log.read_text().splitlines()
        assert "result=deferred" in line and "421 4.3.2" in line
        assert "msgid=<v@test>" in line


def submit_now(tmp_path: Path, server: ScriptedSMTP, queue: str) -> Any:
    config = configure(tmp_path, server, Queue=queue, QueueDir=tmp_path / "queue")
    return submit(
        MESSAGE,
        Envelope(["alice@example.com"], identity=ME),
        config=config,
        dead_letter=str(tmp_path / "dead.letter"),
    )


class TestImmediateSend:
    def test_421_at_rcpt(self, tmp_path: Path, scripted: Any) -> None:
        server = scripted(replies={"RCPT": CLOSING})
        with pytest.raises(RelayError) as caught:
            submit_now(tmp_path, server, "no")
        err = caught.value
        assert err.exit_code == os.EX_TEMPFAIL
        assert "closed the session at RCPT TO" in str(err)
        assert CLOSING in str(err)
        assert "no message data was sent" in str(err)
        assert "lost after" not in str(err) and "during DATA" not in str(err)
        assert err.saved_to == str(tmp_path / "dead.letter")
        assert server.messages == []

    def test_421_at_rcpt_queues_without_back_off(self, tmp_path: Path, scripted: Any) -> None:
        server = scripted(replies={"RCPT": CLOSING})
        result = submit_now(tmp_path, server, "fallback")
        assert result.queued_id is not None
        assert "closed the session at RCPT TO" in (result.queued_reason or "")
        (entry,) = pending(configure(tmp_path, server, QueueDir=tmp_path / "queue"))
        assert entry.next_try == entry.queued_at  # the server's going down, not the message

    def test_closed_after_the_final_dot(self, tmp_path: Path, scripted: Any) -> None:
        server = scripted(replies={"EOD": HANG_UP})
        with pytest.raises(RelayError) as caught:
            submit_now(tmp_path, server, "no")
        err = caught.value
        assert err.exit_code == os.EX_TEMPFAIL
        assert err.step == "end of data"
        assert "may have been delivered" in str(err)
        assert len(server.messages) == 1


class TestFlush:
    def queue_one(self, tmp_path: Path) -> None:
        config = config_module.load(
            str(write_config(tmp_path, None, Queue="always", mailhub="127.0.0.1:1"))
        )
        submit(MESSAGE, Envelope(["alice@example.com"], identity=ME), config=config)

    def test_421_at_rcpt_is_retried_once_and_not_blamed(
        self, tmp_path: Path, scripted: Any
    ) -> None:
        self.queue_one(tmp_path)
        server = scripted(replies={"RCPT": CLOSING})
        config = configure(tmp_path, server)
        report = flush(config)
        assert server.connections == 2  # closed before any data: one reconnect
        assert server.messages == []
        assert report.exit_code() == 0 and report.sent == 0
        (entry,) = pending(config)
        assert entry.attempts == 1
        assert entry.next_try == pytest.approx(entry.queued_at, abs=120)  # no back-off
        error = entry.last_error or ""
        assert "closed the session at RCPT TO" in error
        assert CLOSING in error
        assert "no message data was sent" in error
        assert "lost after" not in error

    def test_closed_after_the_final_dot_is_not_resent_and_says_so(
        self, tmp_path: Path, scripted: Any
    ) -> None:
        self.queue_one(tmp_path)
        server = scripted(replies={"EOD": HANG_UP})
        config = configure(tmp_path, server, QueueBackoff="60,3600")
        report = flush(config)
        assert len(server.messages) == 1  # sent once; no second copy in this flush
        (entry,) = pending(config)
        assert entry.attempts == 1
        assert entry.next_try - entry.queued_at >= 55  # its own failure: backs off
        assert "may have been delivered" in (entry.last_error or "")
        assert "deliver it twice" in (entry.last_error or "")
        assert report.deferred and "may have been delivered" in report.deferred[0][1]


class TestEnvelopeAndRecords:
    def test_envelope_as_asked_then_resolved(self) -> None:
        asked = Envelope(["ops", "a@x.org"], envelope_from="me@x.org", identity=ME)
        assert (asked.sender, asked.recipients) == (None, ("ops", "a@x.org"))
        with pytest.raises(ValueError, match="not resolved"):
            _ = asked.mail_from
        final = asked.resolved("me@x.org", ["b@x.org", "a@x.org"])
        assert (final.mail_from, final.recipients) == ("me@x.org", ("b@x.org", "a@x.org"))
        assert final.identity == ME and final.envelope_from == "me@x.org"
        assert final.only(["a@x.org"]).recipients == ("a@x.org",)
        assert asked.recipients == ("ops", "a@x.org")  # a value: copies, never changed
        assert Envelope("a@x.org").recipients == ("a@x.org",)  # one address, not letters
        assert Envelope([], sender="").mail_from == ""  # the null sender is a sender

    def test_records_compare_by_value_and_replace_checks_names(self) -> None:
        one = Envelope(["a@x.org"], sender="s@x.org")
        assert one == Envelope(["a@x.org"], sender="s@x.org")
        assert one != one.replace(sender="t@x.org")
        assert "sender='s@x.org'" in repr(one)
        with pytest.raises(TypeError, match="no field"):
            one.replace(sendr="t@x.org")

    def test_submit_takes_an_envelope_or_keywords_not_both(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        hub = mailhub()
        config = configure(tmp_path, hub, Queue="no")
        result = submit(MESSAGE, Envelope(["alice@example.com"], identity=ME), config=config)
        assert result.recipients == ("alice@example.com",)
        again = submit(MESSAGE, config=config, recipients=["carol@example.com"], identity=ME)
        assert again.recipients == ("carol@example.com",)
        assert [m.rcpt_tos for m in hub.wait_for(2)] == [
            ["alice@example.com"],
            ["carol@example.com"],
        ]
        with pytest.raises(TypeError, match="not both"):
            submit(MESSAGE, Envelope(["a@x.org"]), config=config, recipients=["b@x.org"])
