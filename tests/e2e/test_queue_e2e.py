"""The installed `sendmail` and `mailq`, run as cron and scripts run them, with the queue.

Every config names its own QueueDir under tmp_path: the default for root is the real
/var/spool/mailx-relay, which a test must never touch.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.tools import assert_one_clean_line, command, run
from tests.mailhub import MailHub, MailHubFactory, closed_port, dead_letters
from tests.relayconf import write_config


def configure(tmp_path: Path, hub: MailHub | None, **keys: Any) -> Path:
    keys.setdefault("QueueDir", tmp_path / "queue")
    if hub is None:
        keys.setdefault("mailhub", f"127.0.0.1:{closed_port()}")
    return write_config(tmp_path, hub, **keys)


def message(number: int) -> bytes:
    return f"Subject: n{number}\nMessage-ID: <e2e-{number}@test>\n\nbody {number}\n".encode()


def sendmail(tmp_path: Path, conf: Path, number: int) -> subprocess.CompletedProcess[bytes]:
    return run(
        "sendmail",
        ["-C", str(conf), "-oi", "alice@example.com"],
        home=tmp_path,
        stdin=message(number),
    )


def listing(tmp_path: Path, conf: Path) -> dict[str, Any]:
    done = run("mailq", ["-C", str(conf), "--json"], home=tmp_path)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def received(hub: MailHub) -> collections.Counter[str]:
    return collections.Counter(str(m.message()["Message-ID"]) for m in hub.messages)


def test_hub_down_then_up(tmp_path: Path, mailhub: MailHubFactory) -> None:
    conf = configure(tmp_path, None)
    for number in range(3):
        done = sendmail(tmp_path, conf, number)
        assert done.returncode == 0, done.stderr
        line = assert_one_clean_line(done.stderr)
        assert line.startswith("sendmail: queued as ")
        assert "Connection refused" in line
    entries = listing(tmp_path, conf)["entries"]
    assert [e["message_id"] for e in entries] == [f"<e2e-{n}@test>" for n in range(3)]
    text = run("mailq", [], home=tmp_path, env={"RELAY_CONFIG": str(conf)}).stdout.decode()
    assert text.count("    alice@example.com\n") == 3
    hub = mailhub()
    configure(tmp_path, hub)
    done = run("mailq", ["-C", str(conf), "--flush"], home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"mailq: 3 sent, 0 left in the queue (1 connection)\n"
    assert done.stderr == b""
    assert received(hub) == {f"<e2e-{n}@test>": 1 for n in range(3)}
    assert hub.connections == 1
    assert run("mailq", ["-C", str(conf)], home=tmp_path).stdout == b"Mail queue is empty\n"
    assert not (tmp_path / "dead.letter").exists()


def test_queue_always_is_silent_and_sendmail_q_delivers(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = configure(tmp_path, hub, Queue="always")
    for number in range(4):
        done = sendmail(tmp_path, conf, number)
        assert (done.returncode, done.stderr) == (0, b"")
    assert hub.connections == 0
    done = run("sendmail", ["-C", str(conf), "-q"], home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"sendmail: 4 sent")
    assert hub.connections == 1 and len(received(hub)) == 4


def test_a_5xx_is_not_queued(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub(faults={"MAIL": (550, "5.7.1 relaying denied")})
    conf = configure(tmp_path, hub)
    done = sendmail(tmp_path, conf, 1)
    assert done.returncode == os.EX_UNAVAILABLE
    line = assert_one_clean_line(done.stderr)
    assert "550 5.7.1 relaying denied" in line and "dead.letter" in line
    assert listing(tmp_path, conf)["entries"] == []
    (kept,) = dead_letters(tmp_path)
    assert kept["Message-ID"] == "<e2e-1@test>"


def test_an_unusable_queue_is_73_and_dead_letter(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    conf = configure(tmp_path, None, QueueDir=tmp_path / "file" / "queue")
    done = sendmail(tmp_path, conf, 1)
    assert done.returncode == os.EX_CANTCREAT
    line = assert_one_clean_line(done.stderr)
    assert "queue" in line and "Connection refused" in line
    assert f"kept in {tmp_path / 'dead.letter'}" in line
    (kept,) = dead_letters(tmp_path)
    assert kept["Message-ID"] == "<e2e-1@test>"


def test_a_queue_others_can_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "queue").mkdir(mode=0o777)
    (tmp_path / "queue").chmod(0o777)
    conf = configure(tmp_path, None, Queue="always")
    done = sendmail(tmp_path, conf, 1)
    assert done.returncode == os.EX_CANTCREAT
    assert "chmod 700" in assert_one_clean_line(done.stderr)
    assert len(dead_letters(tmp_path)) == 1
    listed = run("mailq", ["-C", str(conf)], home=tmp_path)
    assert listed.returncode == os.EX_CANTCREAT


def test_concurrent_flushers_send_each_message_once(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = configure(tmp_path, hub, Queue="always")
    for number in range(12):
        assert sendmail(tmp_path, conf, number).returncode == 0
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
    }
    flushers = [
        subprocess.Popen(
            [command("mailq"), "-C", str(conf), "--flush"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for flusher in flushers:
        _, err = flusher.communicate(timeout=60)
        assert flusher.returncode == 0, err
    assert received(hub) == {f"<e2e-{n}@test>": 1 for n in range(12)}
    assert listing(tmp_path, conf)["entries"] == []


def test_delete_moves_an_entry_to_dead_letter(tmp_path: Path) -> None:
    conf = configure(tmp_path, None, Queue="always")
    assert sendmail(tmp_path, conf, 7).returncode == 0
    (entry,) = listing(tmp_path, conf)["entries"]
    done = run("mailq", ["-C", str(conf), "--delete", entry["id"]], home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"mailq: {entry['id']}: moved to {tmp_path / 'dead.letter'}\n"
    (kept,) = dead_letters(tmp_path)
    assert kept["Message-ID"] == "<e2e-7@test>"
    assert listing(tmp_path, conf)["entries"] == []
    again = run("mailq", ["-C", str(conf), "--delete", entry["id"]], home=tmp_path)
    assert again.returncode == os.EX_NOINPUT


def test_permanent_failure_at_flush_names_the_entry(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    conf = configure(tmp_path, None, Queue="always")
    assert sendmail(tmp_path, conf, 3).returncode == 0
    (entry,) = listing(tmp_path, conf)["entries"]
    hub = mailhub(rcpt_faults={"alice@example.com": (550, "5.1.1 no such user")})
    configure(tmp_path, hub, Queue="always")
    done = run("mailq", ["-C", str(conf), "--flush", "--quiet"], home=tmp_path)
    assert done.returncode == os.EX_UNAVAILABLE
    assert done.stdout == b""
    line = assert_one_clean_line(done.stderr)
    assert line.startswith(f"mailq: {entry['id']}: failed permanently: ")
    assert "550 5.1.1 no such user" in line
    (kept,) = dead_letters(tmp_path)
    assert "550 5.1.1 no such user" in kept["X-Mailx-Relay-Failed"]


def test_listing_into_a_closed_pipe_is_quiet_and_74(tmp_path: Path) -> None:
    """`mailq | head` or `sendmail -bp | head`: no traceback, no 'internal error'."""
    conf = write_config(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()}", Queue="always")
    env = {"RELAY_CONFIG": str(conf)}
    queued = run("sendmail", ["a@example.com"], home=tmp_path, env=env, stdin=b"S: x\n\nhi\n")
    assert queued.returncode == 0, queued.stderr
    for argv in (["mailq"], ["mailq", "--json"], ["sendmail", "-bp"]):
        reader, writer = os.pipe()
        os.close(reader)
        try:
            done = subprocess.run(
                [command(argv[0]), *argv[1:]],
                stdout=writer,
                stderr=subprocess.PIPE,
                env={**os.environ, **env, "HOME": str(tmp_path)},
                timeout=30,
                check=False,
            )
        finally:
            os.close(writer)
        assert done.returncode == os.EX_IOERR, argv
        assert done.stderr == b"", argv
    assert run("mailq", [], home=tmp_path, env=env).stdout.count(b"a@example.com") == 1
