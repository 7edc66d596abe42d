"""Start-up paths import no `ssl`, `smtplib` or `email`: docs/architecture.md, "Start-up time".

Each case runs the entry point in a fresh interpreter and reads `sys.modules` after it
returned; `dataclasses` (and the `inspect` it pulls in) is checked too where it would be
waste. A plain-text delivery may need `email` for nothing either when the message is
simple, and never needs `ssl` or `smtplib`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mailhub import MailHubFactory
from tests.relayconf import write_config

HEAVY = ("ssl", "_ssl", "smtplib", "email", "dataclasses", "inspect")


def loaded(entry: str, argv: list[str], stdin: bytes = b"", env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    module, function = entry.split(":")
    code = (
        "import sys\n"
        f"from {module} import {function} as main\n"
        f"status = main({argv!r})\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    return done.returncode, done.stdout.decode().splitlines()[-1]


@pytest.mark.parametrize(
    ("entry", "argv", "status"),
    [
        ("relay.cli:sendmail_main", ["-V"], os.EX_OK),
        ("relay.cli:sendmail_main", ["--version"], os.EX_OK),
        ("relay.cli:sendmail_main", ["-Z"], os.EX_USAGE),
        ("relay.cli:sendmail_main", ["-f"], os.EX_USAGE),
        ("relay.mailq:main", ["-V"], os.EX_OK),
        ("relay.mailq:main", ["--bogus"], os.EX_USAGE),
        ("mailx.cli:main", [], os.EX_USAGE),
    ],
)
def test_version_and_usage_errors_load_nothing_heavy(
    entry: str, argv: list[str], status: int
) -> None:
    assert loaded(entry, argv) == (status, "[]")


def test_mailq_on_an_empty_queue_loads_no_ssl_smtplib_or_email(tmp_path: Path) -> None:
    conf = write_config(tmp_path, None, mailhub="127.0.0.1:1")
    code, modules = loaded("relay.mailq:main", ["-C", str(conf)])
    assert code == os.EX_OK
    assert not {"ssl", "_ssl", "smtplib", "email"} & set(eval(modules))


def test_plain_delivery_of_a_simple_message_loads_no_ssl_smtplib_or_email(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub, FromLineOverride="yes")
    message = b"From: Cron Daemon <root@example.org>\nTo: a@example.com\nSubject: s\n\nhi\n"
    code, modules = loaded(
        "relay.cli:sendmail_main", ["-C", str(conf), "a@example.com"], stdin=message
    )
    assert code == os.EX_OK
    assert eval(modules) == []
    assert len(hub.wait_for(1)) == 1
