"""A stop signal during the first delivery attempt: the message is queued or kept.

systemd stopping a job sends SIGTERM, a closing ssh session SIGHUP, a user ^C SIGINT.
The installed `sendmail` talks to a server that stalls (no greeting, or no reply after
the final dot), the signal arrives while it waits, and the message must end up in the
queue (Queue=fallback: exit 0) or in dead.letter (Queue=no: exit 75), never nowhere.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.queue import Queue
from tests.e2e.tools import command
from tests.mailhub import LOOPBACK, dead_letters
from tests.relayconf import write_config

MESSAGE = b"Subject: nightly\n\nbackup done\n"


class StallingServer:
    """Stalls at `stall` ("greeting": says nothing; "MAIL", "RCPT", "DATA": gives no
    reply to that command; "end of data": reads the whole message, then never answers)
    and sets `reached` when it gets there."""

    def __init__(self, stall: str) -> None:
        self.stall = stall
        self.reached = threading.Event()
        self.done = threading.Event()
        self.listener = socket.socket()
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            if self.stall != "greeting":
                conn.sendall(b"220 stall.test ESMTP\r\n")
                for line in lines:
                    verb = line[:4].upper()
                    if verb.decode() == self.stall[:4]:
                        break  # no reply: the client waits here
                    if verb == b"DATA":
                        conn.sendall(b"354 go ahead\r\n")
                        for data in lines:
                            if data == b".\r\n":
                                break
                        break
                    if verb == b"EHLO":
                        conn.sendall(b"250-stall.test\r\n250 8BITMIME\r\n")
                    else:
                        conn.sendall(b"250 ok\r\n")
            self.reached.set()
            self.done.wait(30)

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def stalling() -> Iterator[type[StallingServer]]:
    made: list[StallingServer] = []

    def make(stall: str) -> StallingServer:
        server = StallingServer(stall)
        made.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in made:
        server.close()


def sendmail_until(
    tmp_path: Path, server: StallingServer, number: int, **keys: object
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
    assert server.reached.wait(20), "sendmail never got to the stalled step"
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
    tmp_path: Path, stalling: type[StallingServer], number: int
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
    tmp_path: Path, stalling: type[StallingServer], step: str
) -> None:
    done = sendmail_until(tmp_path, stalling(step), signal.SIGTERM)
    assert done.returncode == 0, done.stderr
    assert b"delivery stopped by SIGTERM" in done.stderr and b"queued as" in done.stderr
    assert len(queued(tmp_path)) == 1
    assert dead_letters(tmp_path) == []


def test_a_signal_after_the_final_dot_queues_it_saying_it_may_have_arrived(
    tmp_path: Path, stalling: type[StallingServer]
) -> None:
    done = sendmail_until(tmp_path, stalling("end of data"), signal.SIGTERM)
    assert done.returncode == 0, done.stderr
    # "DATA" when the signal came before the client noted the dot as sent.
    assert b"during end of data" in done.stderr or b"during DATA" in done.stderr
    assert b"may have been delivered" in done.stderr
    assert len(queued(tmp_path)) == 1


def test_with_queue_no_the_message_is_kept_and_the_status_is_75(
    tmp_path: Path, stalling: type[StallingServer]
) -> None:
    done = sendmail_until(tmp_path, stalling("greeting"), signal.SIGTERM, Queue="no")
    assert done.returncode == os.EX_TEMPFAIL
    assert f"message kept in {tmp_path / 'dead.letter'}".encode() in done.stderr
    (kept,) = dead_letters(tmp_path)
    assert kept["Subject"] == "nightly"
