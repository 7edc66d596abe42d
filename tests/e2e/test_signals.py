"""A stop signal during the first delivery attempt: the message is queued or kept.

systemd stopping a job sends SIGTERM, a closing ssh session SIGHUP, a user ^C SIGINT.
The installed `sendmail` talks to a server that stalls (no greeting, or no reply after
the final dot), the signal arrives while it waits, and the message must end up in the
queue (Queue=fallback: exit 0) or in dead.letter (Queue=no: exit 75), never nowhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relay.queue import Queue
from tests.e2e.tools import command
from tests.mailhub import LOOPBACK, dead_letters
from tests.relayconf import write_config
from tests.scripted_smtp import STALL, ScriptedSMTP

MESSAGE = b"Subject: nightly\n\nbackup done\n"


@pytest.fixture
def stalling() -> Iterator[Callable[[str], ScriptedSMTP]]:
    """A server that stalls at "greeting" (says nothing), at "MAIL", "RCPT" or "DATA"
    (no reply to that command), or at "end of data" (reads the whole message, then never
    answers)."""
    made: list[ScriptedSMTP] = []

    def make(stall: str) -> ScriptedSMTP:
        step = {"greeting": "GREETING", "end of data": "EOD"}.get(stall, stall)
        server = ScriptedSMTP(replies={step: STALL}, capabilities=("8BITMIME",)).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def sendmail_until(
    tmp_path: Path, server: ScriptedSMTP, number: int, **keys: object
) -> subprocess.CompletedProcess[bytes]:
    conf = write_config(tmp_path, None, mailhub=f"{LOOPBACK}:{server.port}", Timeout=30, **keys)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    proc = subprocess.Popen(
        [command("sendmail"), "-C", str(conf), "alice@example.com"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    proc.stdin.write(MESSAGE)
    proc.stdin.close()
    proc.stdin = None  # communicate() must not flush it again
    assert server.stalled.wait(20), "sendmail never got to the stalled step"
    proc.send_signal(number)
    out, err = proc.communicate(timeout=20)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def queued(tmp_path: Path) -> list[bytes]:
    with Queue.open(str(tmp_path / "queue"), create=False) as queue:
        scan = queue.scan()
        messages = []
        for entry in scan.entries:
            locked = queue.lock(entry.id)
            assert locked is not None
            with locked:
                messages.append(locked.read_message())
        return messages


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_before_the_greeting_queues_the_message(
    tmp_path: Path, stalling: Callable[[str], ScriptedSMTP], number: int
) -> None:
    done = sendmail_until(tmp_path, stalling("greeting"), number)
    name = signal.Signals(number).name
    assert done.returncode == 0, done.stderr
    assert f"delivery stopped by {name} during connect".encode() in done.stderr
    assert b"queued as" in done.stderr
    (message,) = queued(tmp_path)
    assert b"backup done" in message
    assert dead_letters(tmp_path) == []


@pytest.mark.parametrize("step", ["MAIL", "RCPT", "DATA"])
def test_a_signal_at_each_command_of_the_transaction_queues_the_message(
    tmp_path: Path, stalling: Callable[[str], ScriptedSMTP], step: str
) -> None:
    done = sendmail_until(tmp_path, stalling(step), signal.SIGTERM)
    assert done.returncode == 0, done.stderr
    assert b"delivery stopped by SIGTERM" in done.stderr and b"queued as" in done.stderr
    assert len(queued(tmp_path)) == 1
    assert dead_letters(tmp_path) == []


def test_a_signal_after_the_final_dot_queues_it_saying_it_may_have_arrived(
    tmp_path: Path, stalling: Callable[[str], ScriptedSMTP]
) -> None:
    done = sendmail_until(tmp_path, stalling("end of data"), signal.SIGTERM)
    assert done.returncode == 0, done.stderr
    # "DATA" when the signal came before the client noted the dot as sent.
    assert b"during end of data" in done.stderr or b"during DATA" in done.stderr
    assert b"may have been delivered" in done.stderr
    assert len(queued(tmp_path)) == 1


def test_with_queue_no_the_message_is_kept_and_the_status_is_75(
    tmp_path: Path, stalling: Callable[[str], ScriptedSMTP]
) -> None:
    done = sendmail_until(tmp_path, stalling("greeting"), signal.SIGTERM, Queue="no")
    assert done.returncode == os.EX_TEMPFAIL
    assert f"message kept in {tmp_path / 'dead.letter'}".encode() in done.stderr
    (kept,) = dead_letters(tmp_path)
    assert kept["Subject"] == "nightly"


@pytest.mark.parametrize("queue", ["fallback", "no"])
def test_a_signal_while_waiting_for_quit_after_a_delivery_changes_nothing(
    tmp_path: Path, stalling: Callable[[str], ScriptedSMTP], queue: str
) -> None:
    """The server took the message (250 after the dot): a signal while QUIT's reply is
    awaited must not report a failure nor keep a copy (the sender would send it twice)."""
    server = stalling("QUIT")
    done = sendmail_until(tmp_path, server, signal.SIGTERM, Queue=queue)
    assert done.returncode == 0, done.stderr
    assert len(server.messages) == 1
    assert dead_letters(tmp_path) == []
    assert not (tmp_path / "queue" / "new").exists() or queued(tmp_path) == []
