"""`mailq --json` is written entry by entry (relay.mailq._JsonListing); it must be byte
for byte what `json.dumps(listing, indent=2)` gives for the whole listing held at once,
which is how it was made before it streamed. Also: the text listing reads each sender's
passwd entry once, not once per entry."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from relay import config as config_module
from relay import mailq
from relay.config import Config
from relay.queue import Queue
from tests.relayconf import write_config

NOW = 2_000_000_000.0


def config_for(tmp_path: Path) -> Config:
    conf = write_config(tmp_path, None, mailhub="127.0.0.1:1", QueueDir=tmp_path / "queue")
    return config_module.load(str(conf))


def whole(path: str, queue: Queue, system: dict[str, Any] | None) -> str:
    """The listing as one structure, dumped at once (the reference)."""
    found = queue.scan()
    data: dict[str, Any] = {
        "queue": path,
        "entries": [mailq._entry_json(entry, NOW) for entry in found.entries],
        "corrupt": [
            {
                "id": bad.id,
                "reason": bad.reason,
                "path": os.path.join(path, "corrupt" if bad.quarantined else "new", bad.id),
                "quarantined": bad.quarantined,
            }
            for bad in found.corrupt
        ],
        "last_flush": mailq._status_json(queue.read_status()),
    }
    if system is not None:
        data["system_queue"] = system
    return json.dumps(data, indent=2) + "\n"


def listed(config: Config) -> str:
    out = io.StringIO()
    assert mailq.show(config, as_json=True, out=out, now=NOW) == os.EX_OK
    return out.getvalue()


SYSTEM = {
    "queue": "/var/spool/mailx-relay",
    "uid": 1000,
    "entries": [{"id": "x", "size": 3, "recipients": ["a@b"]}],
    "note": None,
}


@pytest.mark.parametrize("system", [None, SYSTEM])
def test_json_stream_is_json_dumps_of_the_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, system: dict[str, Any] | None
) -> None:
    monkeypatch.setattr(mailq, "_system_part", lambda path: system)
    config = config_for(tmp_path)
    path = str(tmp_path / "queue")
    with Queue.open(path) as queue:
        for number in range(5):
            entry = queue.enqueue(
                f"Subject: {number}\r\n\r\nhi\r\n".encode(),
                sender="" if number == 3 else "bob@example.org",
                recipients=["alice@example.com", f"n{number}@example.com"],
                message_id=f"<{number}@test>",
                uid=os.getuid() if number % 2 else None,
                now=NOW - 100 * number,
            )
        with queue.lock(entry.id) as locked:  # type: ignore[union-attr]
            locked.defer('451 "busy"\\ try later ü', (60, 3600), blame=True, now=NOW)
        (tmp_path / "queue" / "new" / "stray").write_text("x")
        (tmp_path / "queue" / "corrupt" / "offline.msg.1").write_text("x")
        queue.write_status({"finished_at": NOW - 60, "sent": 4, "stopped": None})
        assert listed(config) == whole(path, queue, system)


@pytest.mark.parametrize("system", [None, SYSTEM])
def test_json_stream_of_an_empty_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, system: dict[str, Any] | None
) -> None:
    monkeypatch.setattr(mailq, "_system_part", lambda path: system)
    config = config_for(tmp_path)
    path = str(tmp_path / "queue")
    expected = {"queue": path, "entries": [], "corrupt": [], "last_flush": None}
    if system is not None:
        expected["system_queue"] = system
    assert listed(config) == json.dumps(expected, indent=2) + "\n"  # never made
    with Queue.open(path) as queue:
        assert listed(config) == whole(path, queue, system)  # made, empty


def test_one_passwd_lookup_per_sender(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailq, "_system_part", lambda path: None)
    config = config_for(tmp_path)
    with Queue.open(str(tmp_path / "queue")) as queue:
        for number in range(6):
            queue.enqueue(
                b"Subject: s\r\n\r\nhi\r\n",
                sender="bob@example.org",
                recipients=["alice@example.com"],
                uid=os.getuid() if number % 2 else 4242,
            )
    looked_up: list[int | None] = []
    real = mailq.user_name

    def counting(uid: int | None) -> str:
        looked_up.append(uid)
        return real(uid)

    monkeypatch.setattr(mailq, "user_name", counting)
    out = io.StringIO()
    mailq.show(config, out=out, now=NOW)
    assert sorted(looked_up, key=str) == sorted([os.getuid(), 4242], key=str)
    assert "-- 6 entries," in out.getvalue()
