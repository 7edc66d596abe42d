"""Growth: what a big queue costs `sendmail`, `mailq` and `mailq --flush` (part of `make bench`).

A queue of N entries is filled without sending anything: one entry is written through
`relay.queue.Queue.enqueue` by the candidate's own interpreter (the real commit protocol,
so the sidecar is what the relay writes), then copied N - 1 times straight into `new/`
with fresh, sorted ids (the sidecar's `id`, `queued_at` and `next_try` rewritten; no
fsync, which is what makes 100,000 entries take seconds instead of minutes). For each N,
against the empty queue of the same run:

- one more `sendmail` (Queue=fallback, the immediate-ACK server up, so nothing is queued):
  its wall time, target at most 1.5 x the empty queue's, measured in turns with it (so
  a change of load during the run moves both);
- `mailq` listing the queue, whose messages are large (BENCH_GROWTH_KIB, 100 KiB by
  default; the message file is hard-linked between entries, 50,000 to a file, ext4's
  limit being 65,000: 100,000 of them cost two files' blocks), and the same listing
  of a queue of small messages: time and peak RSS, which must not depend on the
  messages' size;
- `mailq --flush` of a queue of N small messages: wall time, messages/s, the connections
  the server counted (target: one), peak RSS.

Environment: BENCH_GROWTH (the sizes, default "1000,10000,100000"), BENCH_GROWTH_KIB,
BENCH_GROWTH_ROUNDS (rounds of the `mailq` listing, default 3; `sendmail` uses BENCH_N).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from run import Bench, Run

SIZES = [
    int(n) for n in os.environ.get("BENCH_GROWTH", "1000,10000,100000").split(",") if n.strip()
]
KIB = int(os.environ.get("BENCH_GROWTH_KIB", "100"))
LIST_ROUNDS = int(os.environ.get("BENCH_GROWTH_ROUNDS", "3"))
#: One more `sendmail` on a full queue costs at most this much the empty queue's time.
SENDMAIL_LIMIT = 1.5
#: "Flat" peak RSS: at the largest N at most this many MiB above the smallest N's.
FLAT_MIB = 4.0

#: Entries sharing one message file in the listing queue (ext4's limit is 65,000 links).
_LINKS_PER_FILE = 50_000

_TEMPLATE = """\
import sys
from relay.queue import Queue
with Queue.open(sys.argv[1]) as queue:
    queue.enqueue(open(sys.argv[2], 'rb').read(), sender='bench@example.org',
                  recipients=['someone@example.com'])
"""


def say(text: str) -> None:
    import sys

    print(f"bench: {text}", file=sys.stderr, flush=True)


def fill(python: Path, queue: Path, message: Path, count: int, *, link: bool) -> None:
    """A queue of `count` committed entries holding `message` (see the module docstring)."""
    shutil.rmtree(queue, ignore_errors=True)
    subprocess.run([str(python), "-c", _TEMPLATE, str(queue), str(message)], check=True)
    new = queue / "new"
    (first,) = os.listdir(new)
    meta = json.loads((new / first / "meta.json").read_bytes())
    body = (new / first / "message").read_bytes()
    base = time.time() - 600  # due now, far from QueueMaxAge
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(int(base)))
    # The sidecar as the relay wrote it, its three per-entry fields replaced by text:
    # one json.dumps for all the entries instead of one each (checked on the first).
    meta.update(id="@ID@", queued_at=111.125, next_try=222.375)
    shape = json.dumps(meta, indent=1) + "\n"
    source = str(new / first / "message")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for i in range(1, count):
        # Ten minutes before the template's id, in the order written: ids sort by time.
        name = f"{stamp}.{i % 1_000_000:06d}.{1 + i // 1_000_000}.{i & 0xFFFFFF:06x}"
        entry = f"{new}/{name}"
        os.mkdir(entry, 0o700)
        when = repr(base + i * 1e-6)
        text = shape.replace("@ID@", name).replace("111.125", when).replace("222.375", when)
        if i == 1:
            meta.update(id=name, queued_at=float(when), next_try=float(when))
            assert text == json.dumps(meta, indent=1) + "\n"
        _write(f"{entry}/meta.json", text.encode("ascii"), flags)
        if link and i % _LINKS_PER_FILE:
            os.link(source, f"{entry}/message")
        elif link:  # ext4 allows 65,000 links to a file: a fresh one now and then
            _write(f"{entry}/message", (new / first / "message").read_bytes(), flags)
            source = f"{entry}/message"
        else:
            _write(f"{entry}/message", body, flags)


def _write(path: str, data: bytes, flags: int) -> None:
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def big_message(work: Path, small: Path) -> Path:
    """The small message with its body grown to BENCH_GROWTH_KIB."""
    path = work / "growth-big.eml"
    head = small.read_bytes()
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\n"
    path.write_bytes(head + line * (KIB * 1024 // len(line)))
    return path


@dataclass
class Point:
    count: int
    sendmail: float
    sendmail_span: str
    #: The same send on the empty queue, in turns with the one above (the load moves).
    sendmail_empty: float
    listing: float
    listing_rss: int
    listing_small_rss: int
    flush: float
    flush_rss: int
    connections: int


def _median(fn: Callable[[bool], Run], rounds: int) -> tuple[float, str, int]:
    runs = [fn(index == 0) for index in range(rounds)]
    walls = [r.wall for r in runs]
    span = f"{min(walls) * 1000:.1f}-{max(walls) * 1000:.1f}"
    return statistics.median(walls), span, runs[0].rss_kib


def run_growth(bench: Bench, rounds: int, run_once: Callable[..., Run]) -> list[Point]:
    work = bench.work
    python = bench.bin / "python"
    big = big_message(work, bench.small)
    base_conf = (work / "relay-quickack.conf").read_text()
    queue_big, queue_small = work / "growth-big", work / "growth-small"

    def conf(name: str, queue: Path) -> Path:
        path = work / f"relay-growth-{name}.conf"
        path.write_text(base_conf.replace(str(work / "queue-quickack"), str(queue)))
        path.chmod(0o600)
        return path

    conf_big, conf_small = conf("big", queue_big), conf("small", queue_small)
    conf_empty = conf("empty", work / "growth-empty")
    sendmail = [str(bench.bin / "sendmail"), "-C", str(conf_big), "someone@example.com"]
    sendmail_empty = [str(bench.bin / "sendmail"), "-C", str(conf_empty), "someone@example.com"]
    mailq_big = [str(bench.bin / "mailq"), "-C", str(conf_big)]
    mailq_small = [str(bench.bin / "mailq"), "-C", str(conf_small)]
    flush = [str(bench.bin / "mailq"), "--flush", "--quiet", "-C", str(conf_small)]

    def one_send(argv: Sequence[str]) -> float:
        before = bench.server.stats()["messages"]
        result = run_once(argv, stdin=bench.small, env=bench.env)
        if bench.server.stats()["messages"] - before != 1:
            raise SystemExit("bench: growth: sendmail did not deliver its message")
        return float(result.wall)

    def sends() -> tuple[float, str, float]:
        """Medians of the send on this queue and on the empty one, taken in turns."""
        full, empty = [], []
        for index in range(rounds):
            if index % 2:
                empty.append(one_send(sendmail_empty))
                full.append(one_send(sendmail))
            else:
                full.append(one_send(sendmail))
                empty.append(one_send(sendmail_empty))
        span = f"{min(full) * 1000:.1f}-{max(full) * 1000:.1f}"
        return statistics.median(full), span, statistics.median(empty)

    def listing(argv: Sequence[str]) -> Callable[[bool], Run]:
        return lambda rss: run_once(argv, stdin=None, env=bench.env, rss=rss)

    points = []
    for count in [0, *SIZES]:
        label = f"{count:,}" if count else "empty"
        say(f"growth: {label} queue")
        if count:
            started = time.perf_counter()
            fill(python, queue_big, big, count, link=True)
            fill(python, queue_small, bench.small, count, link=False)
            say(f"growth: filled 2 x {count:,} entries in {time.perf_counter() - started:.1f} s")
        else:
            for queue in (queue_big, queue_small):
                shutil.rmtree(queue, ignore_errors=True)
        one_send(sendmail)  # warm-up (page cache)
        send_wall, send_span, send_empty = sends()
        list_wall, _, list_rss = _median(listing(mailq_big), LIST_ROUNDS)
        _, _, small_rss = _median(listing(mailq_small), 1)
        flush_wall, flush_rss, connections = 0.0, 0, 0
        if count:
            before = bench.server.stats()
            result = run_once(flush, stdin=None, env=bench.env, rss=True)
            after = bench.server.stats()
            got = int(after["messages"] - before["messages"])
            left = len(os.listdir(queue_small / "new"))
            if got != count or left:
                raise SystemExit(
                    f"bench: growth: --flush of {count} sent {got}, left {left} in the queue"
                )
            flush_wall, flush_rss = result.wall, result.rss_kib
            connections = int(after["connections"] - before["connections"])
        points.append(
            Point(count, send_wall, send_span, send_empty, list_wall, list_rss, small_rss,
                  flush_wall, flush_rss, connections)
        )  # fmt: skip
    for queue in (queue_big, queue_small):
        shutil.rmtree(queue, ignore_errors=True)
    return points


def verdicts(points: Sequence[Point]) -> list[str]:
    """What was missed (empty: every growth target met)."""
    full = points[1:]
    missed = []
    for p in full:
        ratio = p.sendmail / p.sendmail_empty
        if ratio > SENDMAIL_LIMIT:
            missed.append(f"sendmail on {p.count:,} queued: {ratio:.2f} x > {SENDMAIL_LIMIT} x")
        if p.connections != 1:
            missed.append(f"--flush of {p.count:,} used {p.connections} connections")
        if (p.listing_rss - p.listing_small_rss) / 1024 > FLAT_MIB:
            missed.append(f"mailq RSS grows with message size at {p.count:,}")
    if len(full) > 1:
        for what, key in (("mailq", "listing_rss"), ("--flush", "flush_rss")):
            low, high = getattr(full[0], key) / 1024, getattr(full[-1], key) / 1024
            if high - low > FLAT_MIB:
                missed.append(
                    f"{what} peak RSS {low:.0f} MiB at {full[0].count:,}, "
                    f"{high:.0f} MiB at {full[-1].count:,}"
                )
    return missed


def table(points: Sequence[Point]) -> str:
    empty = points[0]
    head = (
        f"{'queued':>8} {'sendmail ms':>22} {'x empty':>7} {'mailq ms':>9} {'x empty':>7} "
        f"{'RSS big/small':>13} {'flush s':>8} {'msg/s':>7} {'conns':>5} {'flush RSS':>9}"
    )
    lines = [head, "-" * len(head)]
    for p in points:
        send = f"{p.sendmail * 1000:.1f} ({p.sendmail_span})"
        rss = f"{p.listing_rss / 1024:.0f}/{p.listing_small_rss / 1024:.0f}"
        if p.count:
            flush = (
                f"{p.flush:>8.2f} {p.count / p.flush:>7.0f} {p.connections:>5} "
                f"{p.flush_rss / 1024:>9.0f}"
            )
        else:
            flush = f"{'-':>8} {'-':>7} {'-':>5} {'-':>9}"
        lines.append(
            f"{(f'{p.count:,}' if p.count else 'empty'):>8} {send:>22} "
            f"{p.sendmail / p.sendmail_empty:>7.2f} {p.listing * 1000:>9.1f} "
            f"{p.listing / empty.listing:>7.1f} {rss:>13} {flush}"
        )
    full = points[1:]
    for low, high in itertools.pairwise(full):
        times = high.count / low.count
        lines.append(
            f"growth {low.count:,} -> {high.count:,} (x{times:g} entries): "
            f"mailq time x{high.listing / low.listing:.1f}, "
            f"RSS {(high.listing_rss - low.listing_rss) / 1024:+.1f} MiB; "
            f"--flush time x{high.flush / low.flush:.1f}, "
            f"msg/s {low.count / low.flush:.0f} -> {high.count / high.flush:.0f}, "
            f"RSS {(high.flush_rss - low.flush_rss) / 1024:+.1f} MiB"
        )
    missed = verdicts(points)
    lines.append(
        f"targets: one more sendmail <= {SENDMAIL_LIMIT} x empty; mailq RSS the same for "
        f"{KIB} KiB and small messages; --flush over 1 connection; peak RSS flat "
        f"(<= +{FLAT_MIB:g} MiB from the smallest to the largest queue)"
    )
    lines.append("verdict: " + ("met" if not missed else "missed: " + "; ".join(missed)))
    return "\n".join(lines)
