"""SIGKILL in a flush bigger than one batch of removals (relay.queue.Removals): at a
batch's fsync, between two of them, in the deletion of the removed entries after the
session, and at the very end. After each kill every message is delivered or still
queued (or both: the one in flight), nothing is corrupt, and the next flush sends the
rest, repeating at most one message (the documented window).

The harness is tests/e2e/test_queue_crash.py's: the `mailq --flush` entry point with
its mutating system calls counted, killing itself before the chosen one.
"""

from __future__ import annotations

import collections
import shutil
import signal
from pathlib import Path

from relay import config as config_module
from relay.flush import flush
from relay.queue import Queue, Removals
from tests.e2e.test_queue_crash import delivered, harness, scan
from tests.mailhub import MailHubFactory
from tests.relayconf import write_config

COUNT = Removals.EVERY * 2 + 30


def test_flush_killed_across_batches(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    template = tmp_path / "template"
    with Queue.open(str(template)) as spool:
        for number in range(COUNT):
            spool.enqueue(
                f"Subject: b{number}\r\nMessage-ID: <b{number}@test>\r\n\r\nhi\r\n".encode(),
                sender="bob@example.org",
                recipients=["alice@example.com"],
                message_id=f"<b{number}@test>",
            )
    conf = write_config(tmp_path, hub, QueueDir=tmp_path / "queue")
    config = config_module.load(str(conf))
    queue = tmp_path / "queue"
    args = ["-C", str(conf), "--flush"]
    everything = {f"<b{n}@test>" for n in range(COUNT)}

    shutil.copytree(template, queue)
    status, steps = harness(tmp_path, 0, "mailq", args)
    assert status == 0 and steps.count("rename") == COUNT, collections.Counter(steps)
    renames = [i + 1 for i, step in enumerate(steps) if step == "rename"]
    fsyncs = [i + 1 for i, step in enumerate(steps) if step == "fsync"]
    after_renames = renames[-1]
    points = {
        "first batch's fsync": next(f for f in fsyncs if f > renames[Removals.EVERY - 1]),
        "mid-batch rename": renames[Removals.EVERY + Removals.EVERY // 2],
        "deleting after the session": next(
            i + 1 for i, step in enumerate(steps) if step == "rmdir" and i + 1 > after_renames
        ),
        "last step": len(steps),
    }
    for where, kill_at in points.items():
        shutil.rmtree(queue)
        shutil.copytree(template, queue)
        before = len(hub.messages)
        status, _ = harness(tmp_path, kill_at, "mailq", args)
        assert status == -signal.SIGKILL, where
        queued, corrupt = scan(queue)
        assert corrupt == [], where
        sent = delivered(hub, before)
        assert set(sent) | set(queued) == everything, where  # delivered or still queued
        report = flush(config, force=True)  # the next run picks up the pieces
        assert (report.exit_code(), report.corrupt) == (0, []), where
        assert scan(queue) == ([], []), where
        assert list((queue / "tmp").iterdir()) == [], where
        sent = delivered(hub, before)
        assert set(sent) == everything, where
        assert sum(sent.values()) - COUNT <= 1, (where, sent.most_common(3))
