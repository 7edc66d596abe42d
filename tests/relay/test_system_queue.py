"""One system queue: what an ordinary user's mailq says about it, and the uid boundary."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from relay import mailq, queue
from relay.config import load
from relay.queue import Queue
from tests.relayconf import write_config


def queued(path: Path, uid: int | None) -> str:
    with Queue.open(str(path)) as spool:
        return spool.enqueue(
            b"Subject: s\r\n\r\nx\r\n", sender="a@x.org", recipients=["b@x.org"], uid=uid
        ).id


def test_system_entries_for_filters_by_uid(tmp_path: Path) -> None:
    system = tmp_path / "system"
    mine = queued(system, 1500)
    queued(system, 1600)
    queued(system, None)  # written before uids were recorded: nobody's to claim
    found = mailq.system_entries_for(1500, str(system))
    assert [entry.id for entry in found or []] == [mine]
    assert mailq.system_entries_for(1500, str(tmp_path / "none")) == []


def test_system_queue_of_another_owner_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system"
    queued(system, 1500)
    monkeypatch.setattr(os, "geteuid", lambda: 1500)  # the spool is root's, we are not
    assert mailq.system_entries_for(1500, str(system)) is None


@pytest.fixture
def as_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ordinary user (uid 1500) on a host whose system queue is root's."""
    system = tmp_path / "system"
    queued(system, 1500)
    monkeypatch.setattr(queue, "SYSTEM_QUEUE_DIR", str(system))
    monkeypatch.setattr(os, "geteuid", lambda: 1500)
    monkeypatch.setattr(os, "getuid", lambda: 1500)
    return system


def test_a_user_is_told_plainly_who_lists_the_system_queue(tmp_path: Path, as_user: Path) -> None:
    config = load(str(write_config(tmp_path, None, mailhub="h", QueueDir=tmp_path / "mine")))
    out = io.StringIO()
    assert mailq.show(config, out=out) == 0
    text = out.getvalue()
    assert text.startswith("Mail queue is empty\n")  # their own queue
    assert f"-- {as_user}: " in text and "root's mailq lists them with your uid" in text
    out = io.StringIO()
    mailq.show(config, as_json=True, out=out)
    system = json.loads(out.getvalue())["system_queue"]
    assert system["queue"] == str(as_user) and system["uid"] == 1500
    assert system["entries"] is None and "root's mailq" in system["note"]


def test_root_gets_no_note(tmp_path: Path) -> None:
    config = load(str(write_config(tmp_path, None, mailhub="h")))
    out = io.StringIO()
    mailq.show(config, out=out)
    assert out.getvalue() == "Mail queue is empty\n"
