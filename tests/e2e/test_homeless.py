"""Nothing lost for homeless senders: the installed `sendmail` against a hub refusing 550.

The refusal forces the message into dead.letter; each test breaks that dead.letter in
one way (no home, another user's HOME, a FIFO, the file size limit) and checks that the
message is kept where it still can be, or that the status and stderr say it was not.
Tests run as root: the unprivileged ones drop to uid 65534 (nobody, home /nonexistent)
with setpriv, against a configuration in a directory that uid can read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.tools import assert_one_clean_line, command, run, unprivileged_command
from tests.mailhub import MailHubFactory
from tests.relayconf import write_config

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)

NOBODY = 65534
MESSAGE = b"To: ops@example.com\nSubject: refused\n\nkeep me\n"
REFUSE = {"RCPT": (550, "5.1.1 no such user")}


@pytest.fixture
def public() -> Iterator[Path]:
    """A directory uid 65534 can reach (pytest's tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mailx-relay-homeless-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_nobody(
    args: list[str], stdin: bytes, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args],
        input=stdin,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env},
        timeout=timeout,
        check=False,
    )


def readable_config(public: Path, hub_port: int) -> Path:
    conf = write_config(public, None, mailhub=f"127.0.0.1:{hub_port}", Queue="no")
    conf.chmod(0o644)  # no secret in it: an ordinary user may deliver in-process
    return conf


def test_cron_home_of_root_is_not_used_and_the_loss_is_said(
    public: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub(faults=REFUSE)
    conf = readable_config(public, hub.port)
    before = os.stat("/root").st_mtime
    done = as_nobody(
        [unprivileged_command("sendmail"), "-C", str(conf), "ops@example.com"],
        MESSAGE,
        {"HOME": "/root"},  # what cron hands another user's job on some systems
    )
    line = assert_one_clean_line(done.stderr)
    assert done.returncode == os.EX_CANTCREAT, line
    assert "could not be kept" in line and "/nonexistent/dead.letter" in line
    assert "internal error" not in line
    assert not os.path.exists("/root/dead.letter") or os.stat("/root").st_mtime == before


def test_fifo_dead_letter_of_a_user_does_not_hang(public: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub(faults=REFUSE)
    conf = readable_config(public, hub.port)
    spot = public / "spot"
    spot.mkdir()
    os.chown(spot, NOBODY, NOBODY)
    fifo = spot / "dead.letter"
    os.mkfifo(fifo)
    os.chown(fifo, NOBODY, NOBODY)
    started = time.monotonic()
    done = as_nobody(
        [unprivileged_command("sendmail"), "-C", str(conf), "ops@example.com"],
        MESSAGE,
        {"HOME": str(spot), "DEAD": str(fifo)},
        timeout=20,
    )
    assert time.monotonic() - started < 15
    line = assert_one_clean_line(done.stderr)
    assert done.returncode == os.EX_CANTCREAT, line
    assert "FIFO" in line and "could not be kept" in line


def test_root_without_a_dead_letter_keeps_it_in_the_spool(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub(faults=REFUSE)
    conf = write_config(tmp_path, hub)
    done = run(
        "sendmail",
        ["-C", str(conf), "ops@example.com"],
        home=tmp_path,
        stdin=MESSAGE,
        env={"DEAD": "/nonexistent/dir/dead.letter"},
    )
    line = assert_one_clean_line(done.stderr)
    assert done.returncode == os.EX_NOUSER, line
    dead = tmp_path / "queue" / "dead"
    (kept,) = list(dead.iterdir())
    assert f"message kept in {kept}" in line
    assert kept.name.endswith(f".{os.getuid()}") and b"keep me" in kept.read_bytes()
    listed = run("mailq", ["-C", str(conf), "--dead", "--json"], home=tmp_path)
    (entry,) = json.loads(listed.stdout)["entries"]
    assert entry["file"] == str(kept) and entry["uid"] == 0 and entry["user"] == "root"
    assert "/nonexistent/dir/dead.letter" in entry["reason"]


def test_root_with_a_fifo_dead_letter_keeps_it_in_the_spool(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub(faults=REFUSE)
    conf = write_config(tmp_path, hub)
    fifo = tmp_path / "dead.letter"
    os.mkfifo(fifo)
    done = run("sendmail", ["-C", str(conf), "ops@example.com"], home=tmp_path, stdin=MESSAGE)
    line = assert_one_clean_line(done.stderr)
    assert done.returncode == os.EX_NOUSER, line
    assert f"message kept in {tmp_path / 'queue' / 'dead'}/" in line


def test_a_user_is_told_the_spool_dead_area_is_roots(public: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub(faults=REFUSE)
    conf = readable_config(public, hub.port)
    root_kept = run(
        "sendmail",
        ["-C", str(conf), "ops@example.com"],
        home=public,
        stdin=MESSAGE,
        env={"DEAD": "/nonexistent/dir/dead.letter"},
    )
    assert root_kept.returncode == os.EX_NOUSER
    done = as_nobody(
        [unprivileged_command("mailq"), "-C", str(conf), "--dead"], b"", {"HOME": "/nonexistent"}
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert "root's mailq --dead lists the messages kept there for you" in text
    assert "keep me" not in text


def ulimited(name: str, args: list[str], blocks: int) -> list[str]:
    return ["bash", "-c", f'ulimit -f {blocks}; exec "$0" "$@"', command(name), *args]


def test_file_size_limit_while_spooling_still_delivers(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub(size_limit=None)
    conf = write_config(tmp_path, hub)
    big = b"To: ops@example.com\nSubject: big\n\n" + b"line of text\n" * 200_000  # 2.6 MB
    done = subprocess.run(
        ulimited("sendmail", ["-C", str(conf), "ops@example.com"], 100),
        input=big,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # held in memory when the temp file could not be
    (received,) = hub.wait_for(1)
    assert received.data.count(b"line of text\r\n") == 200_000


def test_file_size_limit_on_dead_letter_is_74_not_an_internal_error(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub(faults=REFUSE, size_limit=None)
    conf = write_config(tmp_path, hub)
    dead = tmp_path / "dead.letter"
    dead.write_bytes(b"")
    dead.chmod(0o600)
    big = b"To: ops@example.com\nSubject: big\n\n" + b"line of text\n" * 20_000  # 260 kB
    done = subprocess.run(
        ulimited("sendmail", ["-C", str(conf), "ops@example.com"], 100),
        input=big,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=60,
        check=False,
    )
    line = assert_one_clean_line(done.stderr)
    assert done.returncode == os.EX_IOERR, line
    assert "could not be kept" in line and "ulimit -f" in line
    assert dead.read_bytes() == b""  # no half entry glued into the mbox


def test_uid_without_passwd_entry_or_home_is_told_the_message_was_not_kept(
    public: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub(faults=REFUSE)
    conf = readable_config(public, hub.port)
    done = subprocess.run(
        [
            *("setpriv", "--reuid=4000000", "--regid=4000000", "--clear-groups"),
            *(unprivileged_command("sendmail"), "-C", str(conf), "ops@example.com"),
        ],
        input=MESSAGE,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LOGNAME": "ghost"},  # no HOME
        timeout=30,
        check=False,
    )
    line = assert_one_clean_line(done.stderr)
    assert done.returncode == os.EX_CANTCREAT, line
    assert "could not be kept" in line and "no home directory" in line
