"""relay.mailq: argv, the listing (text and JSON), flush output and exit status, --delete,
the `sendmail -bp`/`-q` aliases, and lazy imports (an empty queue loads no ssl/email).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay import config as config_module
from relay.cli import sendmail_main
from relay.config import Config
from relay.envelope import Identity
from relay.errors import UsageError
from relay.mailq import ago, delete, main, parse_args, run_flush, show
from relay.queue import Queue
from relay.submission import submit
from tests.mailhub import MailHub, MailHubFactory, closed_port, dead_letters
from tests.relayconf import write_config

# The submitter is the user running the flush (their own queue): its dead.letter is
# theirs to write. Another uid's entries go to the spool's dead area (test_system_queue).
ME = Identity("bob", os.getuid(), "Bob Builder")


def configure(tmp_path: Path, hub: MailHub | None = None, **keys: Any) -> Path:
    keys.setdefault("QueueDir", tmp_path / "queue")
    if hub is None:
        keys.setdefault("mailhub", f"127.0.0.1:{closed_port()}")
    return write_config(tmp_path, hub, **keys)


def load(path: Path) -> Config:
    return config_module.load(str(path))


def enqueue(tmp_path: Path, count: int, **kw: Any) -> list[str]:
    """Queue messages without trying (Queue=always); returns their queue ids."""
    config = load(configure(tmp_path, Queue="always"))
    ids = []
    for number in range(count):
        result = submit(
            kw.get("body", f"Subject: n{number}\n\nmessage {number}\n".encode()),
            config=config,
            recipients=kw.get("recipients", ["alice@example.com"]),
            identity=ME,
            dead_letter=str(tmp_path / "dead.letter"),
        )
        assert result.queued_id is not None
        ids.append(result.queued_id)
    return ids


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestArgs:
    def test_defaults_list(self) -> None:
        opts = parse_args([])
        assert (opts.mode, opts.json, opts.config) == ("list", False, None)

    @pytest.mark.parametrize(
        ("argv", "config"),
        [
            (["-C", "/f"], "/f"),
            (["-C/f"], "/f"),
            (["--config", "/f"], "/f"),
            (["--config=/f"], "/f"),
        ],
    )
    def test_config_forms(self, argv: list[str], config: str) -> None:
        assert parse_args(argv).config == config

    def test_flush_options(self) -> None:
        opts = parse_args(["--flush", "--force", "--quiet", "-v"])
        assert (opts.mode, opts.force, opts.quiet, opts.verbose) == ("flush", True, True, True)

    def test_delete_takes_ids(self) -> None:
        opts = parse_args(["--delete", "a1", "b2", "-C", "/f"])
        assert (opts.mode, opts.ids, opts.config) == ("delete", ["a1", "b2"], "/f")

    @pytest.mark.parametrize(
        "argv",
        [
            ["--force"],
            ["--flush", "--json"],
            ["--delete"],
            ["--flush", "--delete", "x"],
            ["--frobnicate"],
            ["stray"],
            ["-C"],
            ["--json=yes"],
        ],
    )
    def test_usage_errors(self, argv: list[str]) -> None:
        with pytest.raises(UsageError):
            parse_args(argv)

    def test_usage_error_is_64(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["--force"]) == os.EX_USAGE
        assert capsys.readouterr().err.startswith("mailq: --force goes with --flush\nusage: mailq")

    def test_version_and_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["-V"]) == 0
        assert capsys.readouterr().out.startswith("mailx-relay mailq ")
        assert main(["--help"]) == 0
        assert "--flush" in capsys.readouterr().out

    def test_bad_config_is_78(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["-C", str(tmp_path / "missing.conf")]) == os.EX_CONFIG
        assert "missing.conf" in capsys.readouterr().err


class TestListing:
    def test_empty(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["-C", str(configure(tmp_path))]) == 0
        assert capsys.readouterr().out == "Mail queue is empty\n"
        assert not (tmp_path / "queue").exists()  # listing creates nothing

    def test_entries(self, tmp_path: Path) -> None:
        conf = configure(tmp_path)
        (first, second) = enqueue(tmp_path, 2, recipients=["a@example.com", "b@example.com"])
        with Queue.open(str(tmp_path / "queue")) as queue, queue.lock(first) as locked:  # type: ignore[union-attr]
            locked.defer("451 4.3.0 later", (60, 3600), blame=True)
        out = io.StringIO()
        assert show(load(conf), out=out) == 0
        text = out.getvalue()
        assert text.startswith("Queue ID")
        assert f"{first} " in text and f"{second} " in text
        assert "(last error: 451 4.3.0 later)" in text
        assert "    a@example.com\n    b@example.com\n" in text
        assert re.search(r" in (59s|1m) ", text) and " now " in text
        assert text.rstrip().endswith(
            f"-- 2 entries, {sum_sizes(tmp_path)} bytes, in {tmp_path / 'queue'}"
        )

    def test_json_for_monitoring(self, tmp_path: Path) -> None:
        conf = configure(tmp_path)
        (name,) = enqueue(tmp_path, 1)
        out = io.StringIO()
        show(load(conf), as_json=True, out=out)
        data = json.loads(out.getvalue())
        (entry,) = data["entries"]
        assert entry["id"] == name
        assert set(entry) == {
            "id",
            "queued_at",
            "age",
            "size",
            "sender",
            "uid",
            "user",
            "recipients",
            "delivered",
            "attempts",
            "last_error",
            "next_try",
            "due",
            "message_id",
        }
        assert (entry["sender"], entry["recipients"], entry["due"]) == (
            "bob@example.org",
            ["alice@example.com"],
            True,
        )
        assert entry["queued_at"].endswith("Z")
        assert (data["corrupt"], data["last_flush"]) == ([], None)

    def test_corrupt_entries_are_reported(self, tmp_path: Path) -> None:
        conf = configure(tmp_path)
        (name,) = enqueue(tmp_path, 1)
        (tmp_path / "queue" / "new" / name / "meta.json").write_text("{")
        out = io.StringIO()
        show(load(conf), out=out)
        assert (
            f"corrupt entry {tmp_path / 'queue' / 'new' / name}: meta.json is not valid JSON"
            in (out.getvalue())
        )
        out = io.StringIO()
        show(load(conf), as_json=True, out=out)
        (bad,) = json.loads(out.getvalue())["corrupt"]
        assert (bad["id"], bad["quarantined"]) == (name, False)

    def test_sendmail_bp_is_the_same_listing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        conf = configure(tmp_path)
        enqueue(tmp_path, 1)
        assert main(["-C", str(conf)]) == 0
        listing = capsys.readouterr().out
        assert sendmail_main(["-C", str(conf), "-bp"]) == 0
        assert capsys.readouterr().out == listing

    def test_durations(self) -> None:
        assert [ago(s) for s in (0, 59, 60, 3599, 3600, 86400 * 3)] == [
            "0s",
            "59s",
            "1m",
            "59m",
            "1h",
            "3d",
        ]


def sum_sizes(tmp_path: Path) -> int:
    return sum(p.stat().st_size for p in (tmp_path / "queue" / "new").glob("*/message"))


class TestFlushOutput:
    def test_pipe_gets_one_summary_line(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        enqueue(tmp_path, 3)
        hub = mailhub()
        out, err = io.StringIO(), io.StringIO()
        assert run_flush(load(configure(tmp_path, hub)), out=out, err=err) == 0
        assert out.getvalue() == "mailq: 3 sent, 0 left in the queue (1 connection)\n"
        assert err.getvalue() == ""

    def test_nothing_due_prints_nothing_on_a_pipe(self, tmp_path: Path) -> None:
        out, err = io.StringIO(), io.StringIO()
        assert run_flush(load(configure(tmp_path)), out=out, err=err) == 0
        assert (out.getvalue(), err.getvalue()) == ("", "")

    def test_quiet_prints_only_errors(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        enqueue(tmp_path, 2)
        hub = mailhub(faults={"MAIL": (550, "5.7.1 relaying denied")})
        out, err = io.StringIO(), io.StringIO()
        status = run_flush(load(configure(tmp_path, hub)), quiet=True, out=out, err=err)
        assert status == os.EX_UNAVAILABLE
        assert out.getvalue() == ""
        lines = err.getvalue().splitlines()
        assert len(lines) == 2
        assert all(
            "failed permanently" in line and "550 5.7.1 relaying denied" in line for line in lines
        )
        assert all(f"message saved to {tmp_path / 'dead.letter'}" in line for line in lines)

    def test_hub_down_is_exit_0_with_the_reason_in_the_summary(self, tmp_path: Path) -> None:
        enqueue(tmp_path, 1)
        out, err = io.StringIO(), io.StringIO()
        assert run_flush(load(configure(tmp_path)), out=out, err=err) == 0
        assert "1 left in the queue; stopped early:" in out.getvalue()
        assert "Connection refused" in out.getvalue()
        assert err.getvalue() == ""

    def test_terminal_shows_progress(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        enqueue(tmp_path, 3)
        hub = mailhub()
        out, err = io.StringIO(), Terminal()
        run_flush(load(configure(tmp_path, hub)), out=out, err=err)
        shown = err.getvalue()
        assert shown.count("\r") == 3
        assert "\rmailq: 1 sent, 2 left, " in shown and "\rmailq: 3 sent, 0 left, " in shown
        assert "/s" in shown and shown.endswith("\n")
        assert out.getvalue().startswith("mailq: 3 sent")

    def test_sendmail_q_flushes(
        self, tmp_path: Path, mailhub: MailHubFactory, capsys: pytest.CaptureFixture[str]
    ) -> None:
        enqueue(tmp_path, 2)
        hub = mailhub()
        assert sendmail_main(["-C", str(configure(tmp_path, hub)), "-q"]) == 0
        assert len(hub.messages) == 2
        assert capsys.readouterr().out.startswith("sendmail: 2 sent")


class TestDelete:
    def test_moves_to_dead_letter(self, tmp_path: Path) -> None:
        conf = configure(tmp_path)
        first, second = enqueue(tmp_path, 2)
        out, err = io.StringIO(), io.StringIO()
        assert delete(load(conf), [first[:25]], out=out, err=err) == 0  # a unique prefix
        assert out.getvalue() == f"mailq: {first}: moved to {tmp_path / 'dead.letter'}\n"
        (kept,) = dead_letters(tmp_path)
        assert kept["Subject"] == "n0"
        assert "mailq --delete" in kept["X-Mailx-Relay-Failed"]
        assert sorted(p.name for p in (tmp_path / "queue" / "new").iterdir()) == [second]

    def test_unknown_and_ambiguous(self, tmp_path: Path) -> None:
        conf = configure(tmp_path)
        enqueue(tmp_path, 2)
        err = io.StringIO()
        assert delete(load(conf), ["nosuch", "2"], out=io.StringIO(), err=err) == os.EX_NOINPUT
        assert "no queue entry 'nosuch'" in err.getvalue()
        assert "2 queue entries start with '2'" in err.getvalue()

    def test_an_entry_being_sent_is_left_alone(self, tmp_path: Path) -> None:
        conf = configure(tmp_path)
        (name,) = enqueue(tmp_path, 1)
        err = io.StringIO()
        with Queue.open(str(tmp_path / "queue")) as queue, queue.lock(name):
            status = delete(load(conf), [name], out=io.StringIO(), err=err)
        assert status == os.EX_TEMPFAIL
        assert "being delivered right now" in err.getvalue()
        assert (tmp_path / "queue" / "new" / name).exists()


def loaded_modules(tmp_path: Path, argv: list[str]) -> tuple[int, list[str]]:
    code = (
        "import sys\n"
        "from relay.mailq import main\n"
        f"status = main({argv!r})\n"
        "print([m for m in ('ssl', 'smtplib', 'email') if m in sys.modules])\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    return done.returncode, done.stdout.splitlines()[-1:]


@pytest.mark.parametrize("extra", [[], ["--json"], ["--flush"]])
def test_an_empty_queue_loads_no_ssl_smtplib_or_email(tmp_path: Path, extra: list[str]) -> None:
    conf = configure(tmp_path)
    assert loaded_modules(tmp_path, ["-C", str(conf), *extra]) == (0, ["[]"])


def test_listing_entries_loads_no_ssl_smtplib_or_email(tmp_path: Path) -> None:
    conf = configure(tmp_path)
    enqueue(tmp_path, 2)
    assert loaded_modules(tmp_path, ["-C", str(conf)]) == (0, ["[]"])
