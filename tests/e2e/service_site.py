"""A host in a directory: a configuration only root can read, a running `mailx-relayd`,
and an unprivileged user (uid 65534, via setpriv) who sends through it.

The tests run as root; the user's commands run as `nobody`, so everything they need (this
directory, and the commands: `unprivileged_command` stages a copy nobody can run, wherever
the checkout is) must be reachable by others, and the configuration must not be:
0640 root:mail with `AuthPass` inside, as a stock ssmtp host has it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tests.e2e.tools import command, unprivileged_command, unprivileged_python
from tests.mailhub import MailHub
from tests.relayconf import PASSWORD, write_config

USER_UID = 65534
MAIL_GID = 8
SETPRIV = ("setpriv", f"--reuid={USER_UID}", f"--regid={USER_UID}", "--clear-groups")


class Site:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(mode=0o700)
        os.chown(self.home, USER_UID, USER_UID)
        self.etc = root / "etc"
        self.etc.mkdir()
        self.spool = root / "spool"
        self.offline = self.spool / "offline"
        self.socket = root / "run" / "submit.sock"
        self.log = root / "service.log"
        self.conf = self.etc / "ssmtp.conf"
        self.service: subprocess.Popen[bytes] | None = None
        self.outputs: list[bytes] = []  # everything the user saw, for the secret check

    def configure(self, hub: MailHub | None, *lines: str, **keys: object) -> Path:
        """ssmtp.conf 0640 root:mail for `hub`, AUTH with the test password by default."""
        values: dict[str, object] = {
            "AuthUser": "alice",
            "AuthPass": f'"{PASSWORD}"',
            "QueueDir": self.spool,
        }
        values.update(keys)
        conf = write_config(self.etc, hub, *lines, **values)
        os.chown(conf, 0, MAIL_GID)
        conf.chmod(0o640)
        self.etc.chmod(0o750)  # like /etc/ssmtp: not even searchable by others
        os.chown(self.etc, 0, MAIL_GID)
        return conf

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "MAILX_NO_SYSTEM_RC": "1",
            "RELAY_CONFIG": str(self.conf),
            "RELAY_SOCKET": str(self.socket),
            "RELAY_OFFLINE": str(self.offline),
        }

    # -- the service ----------------------------------------------------------------------

    def start(self, *args: str, wait: bool = True) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            process = subprocess.Popen(
                [command("mailx-relayd"), *args],
                env=self.env(),
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        if wait:
            self.wait_ready(process)
        self.service = process
        return process

    def wait_ready(self, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"mailx-relayd exited {process.returncode}: {self.log_text()}")
            with contextlib.closing(socket.socket(socket.AF_UNIX)) as probe:
                try:
                    probe.connect(str(self.socket))
                except OSError:
                    time.sleep(0.05)
                    continue
                return
        raise AssertionError(f"mailx-relayd did not start: {self.log_text()}")

    def stop(self) -> None:
        process, self.service = self.service, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    # -- the user -------------------------------------------------------------------------

    def user(
        self,
        name: str,
        args: Sequence[str],
        *,
        stdin: bytes = b"",
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run one of our commands as uid 65534 with HOME in the site."""
        environ = {**self.env(), "HOME": str(self.home), **(env or {})}
        done = subprocess.run(
            [*SETPRIV, unprivileged_command(name), *args],
            input=stdin,
            capture_output=True,
            env=environ,
            timeout=timeout,
            check=False,
        )
        self.outputs += [done.stdout, done.stderr]
        return done

    def user_python(self, code: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        """A hand-written client as uid 65534 (the venv's python, the site's env)."""
        environ = {**self.env(), "HOME": str(self.home)}
        return subprocess.run(
            [*SETPRIV, *unprivileged_python(code), *args],
            capture_output=True,
            env=environ,
            timeout=60,
            check=False,
        )

    def queue_metas(self) -> list[dict[str, object]]:
        import json

        return [json.loads(p.read_text()) for p in sorted(self.spool.glob("new/*/meta.json"))]

    def written_files(self) -> Iterator[Path]:
        """Every file under the site the service or the user may have written."""
        for path in self.root.rglob("*"):
            if path.is_file() and path != self.conf:
                yield path


@contextlib.contextmanager
def site() -> Iterator[Site]:
    # Not pytest's tmp_path: its parents are 0700 root, out of reach for uid 65534.
    root = Path(tempfile.mkdtemp(prefix="relayd-"))
    root.chmod(0o755)
    built = Site(root)
    try:
        yield built
    finally:
        built.stop()
        shutil.rmtree(root, ignore_errors=True)
