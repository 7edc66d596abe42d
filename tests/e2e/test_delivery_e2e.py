"""The installed `sendmail` and `mailq` when the server fails at the two moments whose
reports matter most: a 421 at RCPT (nothing sent, safe to retry) and the connection
closed after the final dot (the message may have been delivered: mailq(1))."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.tools import assert_one_clean_line, run
from tests.relayconf import write_config
from tests.scripted_smtp import HANG_UP, ScriptedSMTP

MESSAGE = b"Subject: e2e\nMessage-ID: <delivery-e2e@test>\n\nbody\n"
CLOSING = "421 4.3.2 shutting down for maintenance"


@pytest.fixture
def hang_up_after_dot() -> Iterator[ScriptedSMTP]:
    with ScriptedSMTP(replies={"EOD": HANG_UP}) as server:
        yield server


@pytest.fixture
def closing_at_rcpt() -> Iterator[ScriptedSMTP]:
    with ScriptedSMTP(replies={"RCPT": CLOSING}) as server:
        yield server


def configure(tmp_path: Path, server: ScriptedSMTP, queue: str) -> Path:
    return write_config(tmp_path, None, mailhub=f"{server.host}:{server.port}", Queue=queue)


def test_closed_after_the_dot_is_queued_and_mailq_says_it_may_be_there(
    tmp_path: Path, hang_up_after_dot: ScriptedSMTP
) -> None:
    conf = configure(tmp_path, hang_up_after_dot, "fallback")
    done = run("sendmail", ["-C", str(conf), "alice@example.com"], home=tmp_path, stdin=MESSAGE)
    assert done.returncode == os.EX_OK, done.stderr
    line = assert_one_clean_line(done.stderr)
    assert line.startswith("sendmail: queued as ")
    assert "may have been delivered, and a retry may deliver it twice" in line
    assert len(hang_up_after_dot.messages) == 1
    listed = run("mailq", ["-C", str(conf)], home=tmp_path).stdout.decode()
    assert "(last error: " in listed
    assert "may have been delivered, and a retry may deliver it twice" in listed


def test_421_at_rcpt_is_reported_as_the_server_closing_before_any_data(
    tmp_path: Path, closing_at_rcpt: ScriptedSMTP
) -> None:
    conf = configure(tmp_path, closing_at_rcpt, "no")
    done = run("sendmail", ["-C", str(conf), "alice@example.com"], home=tmp_path, stdin=MESSAGE)
    assert done.returncode == os.EX_TEMPFAIL
    line = assert_one_clean_line(done.stderr)
    assert "closed the session at RCPT TO" in line
    assert CLOSING in line
    assert "no message data was sent" in line
    assert "during DATA" not in line and "lost after" not in line
    assert closing_at_rcpt.messages == []
    assert b"Subject: e2e" in (tmp_path / "dead.letter").read_bytes()
