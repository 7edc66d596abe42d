"""Real programs from Debian packages delivering through our sendmail.

Each test runs a program the way its users run it (s-nail, bsd-mailx, mutt, git
send-email, cron's sendmail command lines), with our installed `sendmail` (the console
script of the venv running pytest) as its MTA, and a `MailHub` on 127.0.0.1 as the
mailhub. A missing program skips its test with the package that provides it; `.ci/run`
installs them all, so CI runs every one.
"""

from __future__ import annotations

import email
import email.policy
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.mailhub import MailHub, MailHubFactory, Received
from tests.relayconf import write_config

#: Our sendmail, as `pip install` put it next to the interpreter running the tests.
SENDMAIL = Path(sys.executable).parent / "sendmail"
#: Who runs the tests: the envelope sender is LOGIN@rewriteDomain unless told otherwise.
LOGIN = pwd.getpwuid(os.getuid()).pw_name
#: write_config's defaults, which the assertions rely on.
REWRITE_DOMAIN = "example.org"
ROOT_ADDRESS = "admin@example.com"


def need(program: str, package: str, *fallbacks: str) -> str:
    """The path of `program` (or of the first fallback path that exists), else skip."""
    found = shutil.which(program)
    if found is None:
        found = next((path for path in fallbacks if os.access(path, os.X_OK)), None)
    if found is None:
        pytest.skip(f"{program} not installed: apt-get install {package}")
    return found


def parsed(data: bytes) -> EmailMessage:
    """The message as a reader sees it: wire CRLF line ends read as LF."""
    message = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@dataclass
class Relay:
    """A started mailhub, a relay config for it, and a scratch HOME for the programs."""

    hub: MailHub
    home: Path
    config: Path

    @property
    def sendmail(self) -> str:
        return str(SENDMAIL)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A clean environment: our config, HOME and state in tmp, no system mail.rc.

        DEAD too: s-nail gives its MTA the HOME of the password file, not the caller's.
        """
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "DEAD": str(self.home / "dead.letter"),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "XDG_STATE_HOME": str(self.home / ".local" / "state"),
            "RELAY_CONFIG": str(self.config),
            "MAILX_NO_SYSTEM_RC": "1",
        }
        environ.update(extra or {})
        return environ

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes = b"",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            env=self.env(env),
            cwd=cwd or self.home,
            timeout=60,
            check=False,
        )

    def one_message(self, done: subprocess.CompletedProcess[bytes]) -> Received:
        """The single message the hub got; the program's output explains a failure."""
        assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
        (received,) = self.hub.wait_for(1)
        assert len(self.hub.messages) == 1
        assert not (self.home / "dead.letter").exists()
        return received


RelayFactory = Callable[..., Relay]


@pytest.fixture
def relay(tmp_path: Path, mailhub: MailHubFactory) -> RelayFactory:
    """Factory: `relay(**config keys)` starts a hub and writes an ssmtp.conf for it."""
    if not SENDMAIL.exists():
        pytest.fail(f"{SENDMAIL}: our sendmail is not installed in this venv (pip install -e .)")

    def start(**keys: object) -> Relay:
        hub = mailhub()
        config_dir = tmp_path / "etc"
        config_dir.mkdir()
        home = tmp_path / "home"
        home.mkdir()
        return Relay(hub, home, write_config(config_dir, hub, **keys))

    return start
