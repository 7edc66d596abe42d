"""Memory flat in the message size on every path of the installed `sendmail`: refused
with 552 (before and after its data was sent) and kept in dead.letter, queued while the
hub is down, and cut off by MaxMessageSize.

Size: 30 MiB by default; MAILX_FULL=1 sends 100 MiB. The bound is the same for both: a
`sendmail` that held the message (or a copy of it) would pass it at either size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e.tools import run, run_measured
from tests.mailhub import MailHubFactory, closed_port
from tests.relayconf import write_config

FULL = os.environ.get("MAILX_FULL") == "1"
SIZE = (100 if FULL else 30) << 20
#: Peak RSS allowed (KiB): the interpreter, ssl and email, and fixed-size buffers.
LIMIT_KIB = 40 << 10
LINE = b"x" * 76 + b"\n"


def big_message() -> bytes:
    head = b"To: alice@example.com\nSubject: big\nMessage-ID: <big@test>\n\n"
    body = b"From the start\n" + LINE * ((SIZE - len(head)) // len(LINE))
    return head + body


@pytest.mark.slow
@pytest.mark.parametrize("step", ["MAIL", "EOD"])
def test_a_refused_big_message_is_kept_with_flat_memory(
    tmp_path: Path, mailhub: MailHubFactory, step: str
) -> None:
    hub = mailhub(faults={step: (552, "5.3.4 too big")}, size_limit=None)
    conf = write_config(tmp_path, hub)
    message = big_message()
    done, peak = run_measured(
        "sendmail",
        ["-C", str(conf), "-oi", "alice@example.com"],
        home=tmp_path,
        stdin=message,
        timeout=300,
    )
    assert done.returncode == os.EX_UNAVAILABLE, done.stderr
    assert b"552 5.3.4 too big" in done.stderr
    kept = (tmp_path / "dead.letter").read_bytes()
    assert kept.startswith(b"From ")
    # The whole message, its body's `From ` line quoted (mboxrd), and nothing else.
    assert b"\n>From the start\n" in kept
    assert len(kept) == len(message) + len(kept.split(b"\n", 1)[0]) + 1 + 1 + 1
    assert peak < LIMIT_KIB, f"peak RSS {peak} KiB for a {SIZE >> 20} MiB message"


@pytest.mark.slow
def test_a_big_message_queued_while_the_hub_is_down_has_flat_memory(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    conf = write_config(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()}")
    message = big_message()
    done, peak = run_measured(
        "sendmail",
        ["-C", str(conf), "-oi", "alice@example.com"],
        home=tmp_path,
        stdin=message,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert b"queued as" in done.stderr
    listed = json.loads(run("mailq", ["-C", str(conf), "--json"], home=tmp_path).stdout)
    (entry,) = listed["entries"]
    assert entry["size"] > len(message)  # with the Date and From added
    assert peak < LIMIT_KIB, f"peak RSS {peak} KiB for a {SIZE >> 20} MiB message"
    # The flush sends it from its file, and keeps it in dead.letter from there on a 552.
    hub = mailhub(faults={"EOD": (552, "5.3.4 too big")}, size_limit=None)
    write_config(tmp_path, hub)
    done, peak = run_measured("mailq", ["-C", str(conf), "--flush"], home=tmp_path, timeout=300)
    assert done.returncode == os.EX_UNAVAILABLE, done.stderr
    assert hub.commands.count("DATA") == 1
    kept = (tmp_path / "dead.letter").read_bytes()
    assert b"552 5.3.4 too big" in kept[:2000] and b"\n>From the start\n" in kept
    assert len(kept) > len(message)
    assert peak < LIMIT_KIB, f"flush peak RSS {peak} KiB for a {SIZE >> 20} MiB message"


@pytest.mark.slow
def test_a_message_cut_off_by_max_message_size_has_flat_memory(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    limit = SIZE // 2
    conf = write_config(tmp_path, hub, MaxMessageSize=limit)
    done, peak = run_measured(
        "sendmail",
        ["-C", str(conf), "-oi", "alice@example.com"],
        home=tmp_path,
        stdin=big_message(),
        timeout=300,
    )
    assert done.returncode == os.EX_DATAERR, done.stderr
    assert f"truncated at {limit} bytes".encode() in done.stderr
    assert hub.connections == 0
    assert (tmp_path / "dead.letter").stat().st_size > limit
    assert peak < LIMIT_KIB, f"peak RSS {peak} KiB for a {SIZE >> 20} MiB message"
