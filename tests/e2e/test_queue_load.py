"""A burst while the mailhub is down, then one flush: every message exactly once, over one
connection, counted by Message-ID at the server.

Size: MAILX_FULL=1 runs 20 concurrent senders x 50 messages (1,000 `sendmail`
processes; about a minute on 2 cores). By default 4 senders x 10 messages, so `make test`
stays quick; the code paths are the same.
"""

from __future__ import annotations

import collections
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.tools import run
from tests.mailhub import MailHubFactory, closed_port
from tests.relayconf import write_config

FULL = os.environ.get("MAILX_FULL") == "1"
SENDERS, EACH = (20, 50) if FULL else (4, 10)


@pytest.mark.slow
def test_burst_while_down_then_one_flush(tmp_path: Path, mailhub: MailHubFactory) -> None:
    queue = tmp_path / "queue"
    conf = write_config(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()}", QueueDir=queue)

    def sender(number: int) -> list[int]:
        statuses = []
        for index in range(EACH):
            tag = f"load-{number}-{index}"
            done = run(
                "sendmail",
                ["-C", str(conf), "-oi", "alice@example.com"],
                home=tmp_path,
                stdin=f"Subject: {tag}\nMessage-ID: <{tag}@test>\n\n{tag}\n".encode(),
            )
            assert b"queued as" in done.stderr, done.stderr
            statuses.append(done.returncode)
        return statuses

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        statuses = [s for batch in pool.map(sender, range(SENDERS)) for s in batch]
    queued_in = time.monotonic() - started
    assert statuses == [0] * (SENDERS * EACH)
    listed = run("mailq", ["-C", str(conf), "--json"], home=tmp_path)
    assert len(json.loads(listed.stdout)["entries"]) == SENDERS * EACH

    hub = mailhub()
    write_config(tmp_path, hub, QueueDir=queue)
    started = time.monotonic()
    done = run("mailq", ["-C", str(conf), "--flush"], home=tmp_path, timeout=300)
    flushed_in = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    counted = collections.Counter(str(m.message()["Message-ID"]) for m in hub.messages)
    expected = {f"<load-{s}-{i}@test>" for s in range(SENDERS) for i in range(EACH)}
    assert set(counted) == expected
    assert set(counted.values()) == {1}
    assert hub.connections == 1
    print(
        f"\n{SENDERS}x{EACH}: queued in {queued_in:.1f}s, flushed in {flushed_in:.1f}s "
        f"({SENDERS * EACH / flushed_in:.0f} messages/s, 1 connection)"
    )
