"""SIGKILL at any point of an enqueue or a flush: nothing accepted is lost, and a message
is sent twice only inside the documented window (a crash between the server's 250 and
the removal of the entry: at most one message per killed flush).

Two ways of killing:
- step by step: every mutating system call (mkdir, open for writing, write, fsync,
  rename, replace, unlink, rmdir) of one `sendmail` enqueue and of one `mailq --flush`
  becomes, in turn, the point where the process SIGKILLs itself just before that call:
  qmail's "what if it is killed partway through?", asked of every step. The programs
  run through a small harness that wraps those `os` functions, then calls the same
  entry points as the installed console scripts.
- at random: the installed `sendmail` and `mailq --flush` run concurrently and are
  SIGKILLed after random delays; then one last flush, and an audit by Message-ID at the
  server.

Sizes: modest by default (the whole file runs in a few seconds on 2 cores); MAILX_FULL=1
runs the random test with 300 senders and 60 flushers.
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from relay import config as config_module
from relay.envelope import Identity
from relay.flush import flush
from relay.queue import Queue
from relay.submission import submit
from tests.e2e.tools import command
from tests.mailhub import MailHub, MailHubFactory
from tests.relayconf import write_config

FULL = os.environ.get("MAILX_FULL") == "1"
ME = Identity("bob", 1000, "Bob Builder")

# Runs `sendmail` or `mailq` with the mutating `os` calls counted; KILL_AT=n SIGKILLs the
# process just before the n-th one; the names of all steps taken go to STEPS_FILE.
HARNESS = """
import json, os, signal, sys
kill_at = int(os.environ["KILL_AT"])
steps = []
WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC

def counted(name, real):
    def call(*args, **kwargs):
        if name == "open" and not (args[1] & WRITING):
            return real(*args, **kwargs)
        steps.append(name)
        if len(steps) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call

for name in ("mkdir", "open", "write", "fsync", "rename", "replace", "unlink", "rmdir"):
    setattr(os, name, counted(name, getattr(os, name)))

program = sys.argv[1]
if program == "sendmail":
    from relay.cli import sendmail_main as main
else:
    from relay.mailq import main
status = main(sys.argv[2:])
with open(os.environ["STEPS_FILE"], "w") as out:
    json.dump(steps, out)
sys.exit(status)
"""


def environment(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "XDG_STATE_HOME": str(home / "state"),
    }


def harness(
    home: Path, kill_at: int, program: str, args: list[str], stdin: bytes = b""
) -> tuple[int, list[str]]:
    """Run the harness; returns the exit status (-9 when killed) and the steps taken."""
    steps_file = home / "steps.json"
    steps_file.unlink(missing_ok=True)
    env = environment(home) | {"KILL_AT": str(kill_at), "STEPS_FILE": str(steps_file)}
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, program, *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    steps: list[str] = json.loads(steps_file.read_text()) if steps_file.exists() else []
    return done.returncode, steps


def scan(path: Path) -> tuple[list[str], list[str]]:
    """(message ids of whole entries, names of corrupt ones) in the queue at `path`."""
    with Queue.open(str(path)) as queue:
        found = queue.scan()
        return [e.message_id or "" for e in found.entries], [c.id for c in found.corrupt]


def delivered(hub: MailHub, start: int = 0) -> collections.Counter[str]:
    return collections.Counter(str(m.message()["Message-ID"]) for m in hub.messages[start:])


def body(tag: str) -> bytes:
    # The payload repeats the tag, so a truncated message would be seen at the server.
    return f"Subject: {tag}\nMessage-ID: <{tag}@test>\n\n".encode() + (
        f"{tag} line\n".encode() * 40
    )


def intact(hub: MailHub) -> bool:
    for received in hub.messages:
        tag = str(received.message()["Message-ID"]).strip("<>").split("@")[0]
        if received.data.count(f"{tag} line\r\n".encode()) != 40:
            return False
    return True


def test_enqueue_killed_before_each_step(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub, Queue="always", QueueDir=tmp_path / "queue")
    args = ["-C", str(conf), "alice@example.com"]
    harness(tmp_path, 0, "sendmail", args, body("first"))  # makes the queue directory
    status, steps = harness(tmp_path, 0, "sendmail", args, body("dry"))
    assert status == 0 and "rename" in steps
    commit = steps.index("rename") + 1  # the step number of the commit point
    for kill_at in range(1, len(steps) + 1):
        status, _ = harness(tmp_path, kill_at, "sendmail", args, body(f"k{kill_at}"))
        assert status == -signal.SIGKILL
        whole, corrupt = scan(tmp_path / "queue")
        assert corrupt == []
        # Killed before the rename: no entry; from the rename on: the whole entry.
        assert (f"<k{kill_at}@test>" in whole) == (kill_at > commit), (kill_at, steps)
    assert list((tmp_path / "queue" / "tmp").iterdir())  # junk of the killed writers
    config = config_module.load(str(conf))
    report = flush(config)
    assert report.exit_code() == 0
    expected = {f"<k{k}@test>" for k in range(commit + 1, len(steps) + 1)}
    expected |= {"<first@test>", "<dry@test>"}
    assert delivered(hub) == dict.fromkeys(expected, 1)
    assert intact(hub)
    # The flush removed it at once: its writers are dead (their pid is in the name).
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []


def test_flush_killed_before_each_step(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    template = tmp_path / "template"
    conf = write_config(tmp_path, hub, QueueDir=tmp_path / "queue")
    (tmp_path / "fill").mkdir()
    fill = write_config(tmp_path / "fill", hub, Queue="always", QueueDir=template)
    filling = config_module.load(str(fill))
    tags = ["m1", "m2", "m3"]
    for tag in tags:
        submit(body(tag), config=filling, recipients=["alice@example.com"], identity=ME)
    config = config_module.load(str(conf))
    queue = tmp_path / "queue"
    args = ["-C", str(conf), "--flush"]

    shutil.copytree(template, queue)
    status, steps = harness(tmp_path, 0, "mailq", args)
    assert status == 0 and steps.count("rename") == 3, steps
    assert delivered(hub) == {f"<{t}@test>": 1 for t in tags}

    for kill_at in range(1, len(steps) + 1):
        shutil.rmtree(queue)
        shutil.copytree(template, queue)
        before = len(hub.messages)
        status, _ = harness(tmp_path, kill_at, "mailq", args)
        assert status == -signal.SIGKILL
        report = flush(config, force=True)  # the next run picks up the pieces
        assert (report.exit_code(), report.corrupt) == (0, [])
        assert scan(queue) == ([], [])
        counted = delivered(hub, before)
        assert set(counted) == {f"<{t}@test>" for t in tags}, kill_at
        # The documented window: one crash, at most one message sent twice.
        assert sum(counted.values()) - len(tags) <= 1, (kill_at, counted)
    assert intact(hub)


def test_random_sigkill(tmp_path: Path, mailhub: MailHubFactory) -> None:
    senders, flushers = (300, 60) if FULL else (36, 10)
    hub = mailhub()
    conf = write_config(tmp_path, hub, Queue="always", QueueDir=tmp_path / "queue")
    env = environment(tmp_path)
    seed = int(os.environ.get("MAILX_SEED", time.time_ns()))
    print(f"MAILX_SEED={seed}")  # shown on failure: rerun with it to replay the choices
    rng = random.Random(seed)
    jobs: list[tuple[str, int]] = [("sendmail", n) for n in range(senders)]
    jobs += [("mailq", n) for n in range(flushers)]
    rng.shuffle(jobs)

    def one(job: tuple[str, int]) -> tuple[str, int, int, bool]:
        kind, number = job
        args = ["-C", str(conf)] + (["alice@example.com"] if kind == "sendmail" else ["--flush"])
        process = subprocess.Popen(
            [command(kind), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        kill = rng.random() < 0.5
        delay = rng.uniform(0.0, 0.25)
        assert process.stdin is not None
        try:
            if kind == "sendmail":
                process.stdin.write(body(f"r{number}"))
            process.stdin.close()
        except BrokenPipeError:
            pass
        if kill:
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
        return kind, number, process.wait(timeout=60), kill

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, jobs))
    for kind, _number, status, killed in results:
        if not killed:
            assert status == 0, (kind, status)
    accepted = {
        f"<r{n}@test>" for kind, n, status, _ in results if kind == "sendmail" and status == 0
    }
    killed_flushers = sum(1 for kind, _, status, _ in results if kind == "mailq" and status < 0)

    report = flush(config_module.load(str(conf)), force=True)
    assert (report.exit_code(), report.corrupt) == (0, [])
    assert scan(tmp_path / "queue") == ([], [])
    counted = delivered(hub)
    assert accepted <= set(counted)  # every exit 0 delivered at least once
    assert set(counted) <= {f"<r{n}@test>" for n in range(senders)}
    assert intact(hub)  # nothing half-written ever went out
    duplicates = sum(counted.values()) - len(counted)
    assert duplicates <= killed_flushers, (duplicates, killed_flushers)
