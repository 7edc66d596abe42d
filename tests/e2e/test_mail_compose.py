"""Interactive compose through a pseudo-terminal: the prompt, tilde escapes, Ctrl-D."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

from tests.e2e.tools import command
from tests.mailhub import MailHubFactory, dead_letters
from tests.relayconf import write_config

CTRL_D = b"\x04"


def converse(
    tmp_path: Path, env: dict[str, str], args: list[str], typed: list[bytes | int]
) -> tuple[int, bytes]:
    """Run `mail args` on a pty, type each chunk once the previous output settled; an
    int is a signal, sent as the terminal would (^C is SIGINT, a hangup SIGHUP)."""
    master, slave = os.openpty()
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "MAILX_NO_SYSTEM_RC": "1",
        **env,
    }
    proc = subprocess.Popen(
        [command("mail"), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environ,
        start_new_session=True,
    )
    os.close(slave)
    output = bytearray()

    def drain(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    return
                if not chunk:
                    return
                output.extend(chunk)

    try:
        for chunk in typed:
            drain(0.3)
            if isinstance(chunk, int):
                proc.send_signal(chunk)
            else:
                os.write(master, chunk)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            drain(0.1)
        drain(0.2)
        status = proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return status, bytes(output)


def test_prompt_escapes_and_ctrl_d_send(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    (tmp_path / ".mailrc").write_text("alias archuser 'My Name'<someone@example.com>\n")
    attachment = tmp_path / "report.txt"
    attachment.write_text("attached text\n")
    quoted = tmp_path / "quote.txt"
    quoted.write_text("quoted line\n")
    status, output = converse(
        tmp_path,
        {"RELAY_CONFIG": str(conf)},
        ["archuser"],
        [
            b"typed subject\n",
            b"first line\n",
            b"~s changed subject\n",
            b"~c cc@example.com\n",
            b"~a " + str(attachment).encode() + b"\n",
            b"~r " + str(quoted).encode() + b"\n",
            b".\n",
            b"last line\n",
            CTRL_D,
        ],
    )
    assert status == 0, output
    assert b"Subject: " in output
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["someone@example.com", "cc@example.com"]
    message = received.message()
    assert message["Subject"] == "changed subject"
    assert message["Cc"] == "cc@example.com"
    body, part = message.iter_parts()
    text = body.get_content().replace("\r\n", "\n")
    assert text == "first line\nquoted line\n.\nlast line\n"
    assert part.get_filename() == "report.txt"


def test_q_aborts_and_keeps_the_draft(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    status, output = converse(
        tmp_path,
        {"RELAY_CONFIG": str(conf)},
        ["-s", "abandoned", "x@example.com"],
        [b"draft text\n", b"~q\n"],
    )
    assert status == 0, output
    assert hub.connections == 0
    kept = (tmp_path / "dead.letter").read_text()
    assert "Subject: abandoned" in kept
    assert "draft text" in kept


def test_shell_escape_runs_on_a_terminal(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    marker = tmp_path / "ran"
    status, output = converse(
        tmp_path,
        {"RELAY_CONFIG": str(conf)},
        ["-s", "s", "x@example.com"],
        [b"~! touch " + str(marker).encode() + b"\n", b"body\n", CTRL_D],
    )
    assert status == 0, output
    assert marker.exists()
    assert "~!" not in hub.wait_for(1)[0].message().get_content()


def test_one_ctrl_c_warns_and_composing_goes_on(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    status, output = converse(
        tmp_path,
        {"RELAY_CONFIG": str(conf)},
        ["-s", "s", "a@example.com"],
        [b"first line\n", signal.SIGINT, b"second line\n", CTRL_D],
    )
    assert status == 0, output
    assert b"(Interrupt -- one more to kill letter)" in output
    (received,) = hub.wait_for(1)
    assert b"first line\r\nsecond line\r\n" in received.data


def test_ctrl_c_twice_keeps_the_draft_in_dead_letter(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    status, output = converse(
        tmp_path,
        {"RELAY_CONFIG": str(conf)},
        ["-s", "draft", "a@example.com"],
        [b"precious text\n", signal.SIGINT, signal.SIGINT],
    )
    assert status == 130, output
    assert b"interrupted twice: message not sent; message kept in" in output
    (kept,) = dead_letters(tmp_path)
    assert kept["Subject"] == "draft"
    assert kept.get_payload() == "precious text\n"
    assert hub.messages == []


def test_a_hangup_keeps_the_draft(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    status, _output = converse(
        tmp_path,
        {"RELAY_CONFIG": str(conf)},
        ["-s", "hup", "a@example.com"],
        [b"typed before the line dropped\n", signal.SIGHUP],
    )
    assert status == 128 + signal.SIGHUP
    (kept,) = dead_letters(tmp_path)
    assert kept.get_payload() == "typed before the line dropped\n"
    assert hub.messages == []
