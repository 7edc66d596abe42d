"""MaxMessageSize and the server's SIZE through the installed `sendmail`.

Past MaxMessageSize reading stops at once (an endless stdin fills neither the disk nor
memory): 65, nothing sent, the first MaxMessageSize octets kept in dead.letter and said
to be truncated. A message larger than the SIZE the server announces is refused before
MAIL (permanent, 69), kept whole, never queued.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.e2e.tools import assert_one_clean_line, command, run
from tests.mailhub import MailHubFactory, dead_letters
from tests.relayconf import write_config


def test_an_endless_stdin_stops_at_the_limit(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub, MaxMessageSize="2M")
    with open("/dev/zero", "rb") as endless:
        done = subprocess.run(
            [command("sendmail"), "-C", str(conf), "alice@example.com"],
            stdin=endless,
            capture_output=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
            timeout=60,
            check=False,
        )
    assert done.returncode == os.EX_DATAERR, done.stderr
    line = assert_one_clean_line(done.stderr)
    assert "MaxMessageSize" in line and "truncated at 2097152 bytes" in line, line
    assert f"kept in {tmp_path / 'dead.letter'}" in line
    kept = (tmp_path / "dead.letter").read_bytes()
    # The From line, the 2 MiB read, the LF that ends the entry's last line, a blank line.
    assert len(kept) == len(kept.split(b"\n", 1)[0]) + 1 + (2 << 20) + 2
    assert hub.connections == 0


def test_a_message_over_the_limit_is_kept_up_to_it(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub, MaxMessageSize="1K")
    message = b"Subject: big\nMessage-ID: <big@test>\n\n" + b"line of text\n" * 200
    done = run("sendmail", ["-C", str(conf), "alice@example.com"], home=tmp_path, stdin=message)
    assert done.returncode == os.EX_DATAERR
    assert "truncated at 1024 bytes" in assert_one_clean_line(done.stderr)
    (kept,) = dead_letters(tmp_path)
    assert kept["Message-ID"] == "<big@test>"
    assert kept.as_bytes().count(b"line of text") < 200
    assert hub.connections == 0
    assert not list((tmp_path / "queue").glob("new/*"))


def test_a_message_at_the_limit_goes(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    message = b"Subject: fits\n\n" + b"x" * (1024 - 16) + b"\n"
    assert len(message) == 1024
    conf = write_config(tmp_path, hub, MaxMessageSize=1024)
    done = run("sendmail", ["-C", str(conf), "alice@example.com"], home=tmp_path, stdin=message)
    assert done.returncode == 0, done.stderr
    assert len(hub.wait_for(1)) == 1


def test_larger_than_the_servers_size_is_refused_before_mail(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub(size_limit=1000)
    conf = write_config(tmp_path, hub)  # Queue=fallback: a permanent refusal is not queued
    message = b"Subject: big\nMessage-ID: <size@test>\n\n" + b"line of text\n" * 400
    done = run("sendmail", ["-C", str(conf), "alice@example.com"], home=tmp_path, stdin=message)
    assert done.returncode == os.EX_UNAVAILABLE, done.stderr
    line = assert_one_clean_line(done.stderr)
    assert "message too big" in line and "at most 1000" in line and "nothing was sent" in line
    assert "dead.letter" in line
    assert not any(c.startswith("MAIL") for c in hub.commands)
    (kept,) = dead_letters(tmp_path)
    assert kept.as_bytes().count(b"line of text") == 400
    assert not list((tmp_path / "queue").glob("new/*"))
