"""The batched removals of a flush (relay.queue.Removals): what a power cut may cost.

A SIGKILL loses no rename (tests/e2e/test_queue_crash.py kills flushes at every step);
a power cut may lose the renames made since the last fsync of new/. These tests record
the flush's system calls instead of cutting power (as tests/relay/test_queue.py does
for the commit order of an enqueue):

- the order: each removed entry's files are deleted only after an fsync of new/ that
  followed its rename (by the deleter thread, or by the sweep after the session, never
  in the send loop), and there is one such fsync per batch, not per message;
- the cut: the flush is stopped at a rename, the renames not yet synced are undone (the
  entries are back in new/, as after the cut), and the next flush finds them whole and
  sends them again: duplicates, at most a batch, and nothing lost or corrupt.
"""

from __future__ import annotations

import collections
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay import config as config_module
from relay.config import Config
from relay.flush import flush
from relay.queue import Queue, Removals
from tests.mailhub import MailHub, MailHubFactory
from tests.relayconf import write_config

COUNT = 250


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A queue of COUNT entries, written once (each enqueue fsyncs three times)."""
    where = tmp_path_factory.mktemp("template") / "queue"
    with Queue.open(str(where)) as queue:
        for number in range(COUNT):
            body = f"Subject: n{number}\r\nMessage-ID: <n{number}@test>\r\n\r\nhi\r\n"
            queue.enqueue(
                body.encode(),
                sender="bob@example.org",
                recipients=["alice@example.com"],
                message_id=f"<n{number}@test>",
            )
    return where


def fill(queue_path: Path, template: Path) -> None:
    shutil.copytree(template, queue_path)


def configure(tmp_path: Path, hub: MailHub) -> Config:
    conf = write_config(tmp_path, hub, QueueDir=tmp_path / "queue")
    return config_module.load(str(conf))


def counted(hub: MailHub) -> collections.Counter[str]:
    return collections.Counter(str(m.message()["Message-ID"]) for m in hub.messages)


class Recorder:
    """Wraps os.rename, os.fsync, os.unlink and os.rmdir: what was done, in order, with
    fsyncs of new/ told apart; `cut_at` raises PowerCut at that removal's rename and
    at every recorded call after it (nothing more reaches the disk)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, new_dir: Path, cut_at: int = 0) -> None:
        self.events: list[tuple[str, str]] = []
        self.new_inode = os.stat(new_dir).st_ino
        self.cut_at = cut_at
        self.renames = 0
        self.cut = False
        #: Indexes in `events` of the deletions made by the main thread.
        self.deleted_by_main: list[int] = []
        for name in ("rename", "fsync", "unlink", "rmdir"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            main = threading.current_thread() is threading.main_thread()
            if self.cut:
                if main:
                    raise PowerCut()
                return None  # the deleter thread: after the cut nothing reaches the disk
            if name == "fsync":
                new = os.fstat(args[0]).st_ino == self.new_inode
                self.events.append(("fsync", "new" if new else "other"))
            elif name == "rename" and str(args[1]).endswith(".done"):
                self.renames += 1
                if self.renames == self.cut_at:
                    self.cut = True
                    raise PowerCut()
                self.events.append(("removed", str(args[0])))
            elif name == "rmdir":
                self.events.append(("deleted", str(args[0]).removesuffix(".done")))
                if main:
                    self.deleted_by_main.append(len(self.events) - 1)
            return real(*args, **kwargs)

        return call


class PowerCut(BaseException):
    """Not an Exception: nothing in the flush may catch it, as nothing survives a cut."""


def test_files_deleted_only_after_the_fsync_that_follows_their_rename(
    tmp_path: Path, mailhub: MailHubFactory, monkeypatch: pytest.MonkeyPatch, template: Path
) -> None:
    hub = mailhub()
    fill(tmp_path / "queue", template)
    config = configure(tmp_path, hub)
    recorder = Recorder(monkeypatch, tmp_path / "queue" / "new")
    report = flush(config)
    monkeypatch.undo()
    assert (report.sent, report.left, report.exit_code()) == (COUNT, 0, 0)
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []  # deleted after the session
    removed_at: dict[str, int] = {}
    synced_up_to = -1  # index of the last fsync of new/
    for index, (what, name) in enumerate(recorder.events):
        if what == "removed":
            removed_at[name] = index
        elif what == "fsync" and name == "new":
            synced_up_to = index
        elif what == "deleted":
            assert removed_at[name] < synced_up_to, f"{name} deleted before its rename was synced"
    assert len(removed_at) == COUNT
    syncs = sum(1 for event in recorder.events if event == ("fsync", "new"))
    # One per batch of Removals.EVERY (or per second on a slow machine), one at the end,
    # one before the deletions: not one per message.
    assert 2 <= syncs <= COUNT // Removals.EVERY + 2 + 10
    # Nothing deleted in the send loop: by the deleter thread, or by the sweep at the end
    # (what the thread had not got to), after the session.
    last_removal = max(removed_at.values())
    deletions = [i for i, (what, _) in enumerate(recorder.events) if what == "deleted"]
    assert len(deletions) == COUNT
    assert all(i > last_removal for i in recorder.deleted_by_main)


@pytest.mark.parametrize("cut_at", [1, 2, 99, 101, 150, COUNT])
def test_a_power_cut_repeats_at_most_a_batch_and_loses_nothing(
    tmp_path: Path,
    mailhub: MailHubFactory,
    monkeypatch: pytest.MonkeyPatch,
    template: Path,
    cut_at: int,
) -> None:
    hub = mailhub()
    queue = tmp_path / "queue"
    fill(queue, template)
    config = configure(tmp_path, hub)
    monkeypatch.setattr(Removals, "SECONDS", 3600.0)  # batches by count only: deterministic
    recorder = Recorder(monkeypatch, queue / "new", cut_at=cut_at)
    with pytest.raises(PowerCut):
        flush(config)
    monkeypatch.undo()
    # The cut: every rename after the last fsync of new/ is undone.
    last_sync = max(
        (i for i, event in enumerate(recorder.events) if event == ("fsync", "new")), default=-1
    )
    undone = [name for what, name in recorder.events[last_sync + 1 :] if what == "removed"]
    assert len(undone) < Removals.EVERY
    for name in undone:
        os.rename(queue / "tmp" / f"{name}.done", queue / "new" / name)  # whole: not deleted
    sent_before = len(hub.messages)
    assert sent_before == cut_at  # the cut came at the rename after the server's 250
    report = flush(config)
    assert (report.exit_code(), report.corrupt, report.left) == (0, [], 0)
    assert report.sent == COUNT - cut_at + 1 + len(undone)
    got = counted(hub)
    assert set(got) == {f"<n{n}@test>" for n in range(COUNT)}  # nothing lost
    # Sent twice: the one in flight at the cut (the window a killed process has too),
    # and the removals not yet synced: at most a batch.
    assert sum(got.values()) - COUNT == 1 + len(undone) <= Removals.EVERY
    assert list((queue / "tmp").iterdir()) == []  # the next flush swept the .done trees
