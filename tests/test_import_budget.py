"""Each hot path is held to an explicit list of the modules it may import.

Why: every cron job on every host pays the interpreter's start and every import on the
way to the first byte sent, so a new import on a hot path is a cost to be decided, not
an accident (docs/performance.md has the map: where each module comes from and what
cutting it gains; docs/architecture.md, "Start-up time", the rule).

Each case runs the entry point in a fresh `python -I -S` (no site, no .pth files, no
environment: the same bare interpreter whatever venv or editable finder runs the tests)
with the repository and the venv's site-packages on sys.path, and compares the modules
loaded when the command returned with those of a bare interpreter that did nothing. A
module outside the path's list fails the test: add it to the list only with a reason.

The lists are what the paths load today, after the import diet
(docs/performance.md has what each cut removed and what it gained); `NEVER` names the
modules no hot path may list at all.
"""

from __future__ import annotations

import ast
import os
import shutil
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.tools import unprivileged_stage
from tests.mailhub import MailHubFactory
from tests.relayconf import write_config

ROOT = Path(__file__).resolve().parents[1]
SITE = [p for p in site.getsitepackages() if os.path.isdir(p)]

# -- the allow-lists ------------------------------------------------------------------------

#: The package itself on the shortest paths (sendmail -V, usage errors).
_RELAY_CORE = {"relay", "relay.cli", "relay.entry", "relay.errors"}
#: What the interpreter loads anyway once `site` runs (no cost to a real command).
_SITE = {
    "os",
    "os.path",
    "posixpath",
    "genericpath",
    "stat",
    "_stat",
    "_collections_abc",
    "__future__",
}

VERSION = _RELAY_CORE | _SITE
USAGE = VERSION
MAILQ_EMPTY = (
    (_RELAY_CORE | _SITE) - {"relay.cli"}
    | {"relay.mailq", "relay.config", "relay.queue", "relay.records", "relay.replies"}
    | {"errno"}
)
SEND = VERSION | {
    "relay.aliases",
    "relay.config",
    "relay.delivery",
    "relay.envelope",
    "relay.interrupt",
    "relay.message",
    "relay.plain",
    "relay.recipients",
    "relay.records",
    "relay.replies",
    "relay.smtp",
    "relay.smtp_wire",
    "relay.submission",
    "pwd",
    "_signal",  # not `signal` (its enum conversion): relay/interrupt.py
    "time",
    "_socket",  # not `socket` (its enum conversion): relay/smtp_wire.py
}
HAND_OFF = VERSION | {
    "relay.client",
    "relay.config",
    "relay.handoff",
    "relay.message",
    "relay.plain",
    "relay.records",
    "relay.wirejson",  # the request line and the service's answer, without `json`
    "errno",
    "_json",  # json's C part (relay/wirejson.py)
    "_socket",  # not `socket` (its enum conversion): relay/client.py
    "time",
}
#: The relay's send path as `mail` loads it: the same cuts hold (no typing, re, socket,
#: signal), plus the dead-letter module mailx's Keeper holds ready.
_MAIL_RELAY = SEND | {"relay.deadletter", "errno"}
MAIL_ALIAS = _MAIL_RELAY - {"relay.cli", "relay.credentials"} | {
    "mailx",
    "mailx.account",
    "mailx.cli",
    "mailx.delivery",
    "mailx.draft",
    "mailx.environment",
    "mailx.mailrc",
    "mailx.pipeline",
    "mailx.plain",
    "math",  # mailx/plain.py's Date (rounding the fraction of a second as datetime does)
    "codecs",  # already loaded by the interpreter's own start
}


#: What no hot path may load at all (docs/architecture.md, "Start-up time"): the lists
#: above are checked against it, so that adding one of these to a list fails too.
NEVER = {"typing", "re", "dataclasses", "email", "ssl", "smtplib", "socket", "signal", "json"}


@pytest.mark.parametrize(
    "allowed",
    [VERSION, USAGE, MAILQ_EMPTY, SEND, HAND_OFF, MAIL_ALIAS],
    ids=["version", "usage", "mailq-empty", "send", "hand-off", "mail-alias"],
)
def test_no_hot_path_may_list_a_heavy_module(allowed: set[str]) -> None:
    listed = {name for name in allowed if name.split(".")[0] in NEVER}
    assert not listed, f"a hot path lists {sorted(listed)}"


# -- the harness ----------------------------------------------------------------------------


def _loaded(
    tmp_path: Path,
    code: str,
    *,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
    interpreter: str = sys.executable,
    root: str = str(ROOT),
) -> tuple[int, set[str], str]:
    """Run `code` in a bare interpreter; its exit status, sys.modules at the end, stderr."""
    where = tmp_path / "modules"
    where.mkdir(exist_ok=True)
    where.chmod(0o1777)  # written by the child, who may be uid 65534
    out = where / f"{time.monotonic_ns()}"
    harness = (
        "import sys\n"
        f"sys.path[:0] = [{root!r}]\n"
        f"sys.path += {SITE!r}\n"
        f"{code}\n"
        f"with open({str(out)!r}, 'w') as out:\n"
        "    out.write(repr(sorted(sys.modules)))\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [*prefix, interpreter, "-I", "-S", "-c", harness],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **(env or {})},
        cwd="/",
    )
    stderr = done.stderr.decode("utf-8", "replace")
    assert out.exists(), stderr
    return done.returncode, set(ast.literal_eval(out.read_text())), stderr


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The modules of an interpreter that did nothing (the floor every path starts from)."""
    status, modules, _ = _loaded(tmp_path_factory.mktemp("bare"), "status = 0")
    assert status == 0
    return modules


def _entry(entry: str, argv: list[str]) -> str:
    module, function = entry.split(":")
    return f"from {module} import {function} as main\nstatus = main({argv!r})"


def _check(loaded: set[str], bare: set[str], allowed: set[str]) -> None:
    added = loaded - bare
    assert not added - allowed, f"new imports on this path: {sorted(added - allowed)}"
    # The list is not a wish list either: what a path no longer loads comes off it.
    assert not allowed - added - bare - _SITE, (
        f"listed but no longer imported: {sorted(allowed - added - bare - _SITE)}"
    )


# -- the paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "status"), [(["-V"], os.EX_OK), (["--version"], os.EX_OK), (["-Z"], os.EX_USAGE)]
)
def test_sendmail_version_and_usage_error(
    tmp_path: Path, bare: set[str], argv: list[str], status: int
) -> None:
    code, loaded, err = _loaded(tmp_path, _entry("relay.cli:sendmail_main", argv))
    assert code == status, err
    _check(loaded, bare, VERSION if status == os.EX_OK else USAGE)


def test_mailq_on_an_empty_queue(tmp_path: Path, bare: set[str]) -> None:
    conf = write_config(tmp_path, None, mailhub="127.0.0.1:1")
    code, loaded, err = _loaded(tmp_path, _entry("relay.mailq:main", ["-C", str(conf)]))
    assert code == os.EX_OK, err
    _check(loaded, bare, MAILQ_EMPTY)


MESSAGE = b"From: Cron Daemon <root@example.org>\nTo: a@example.com\nSubject: s\n\nhi\n"


def test_sendmail_small_send(tmp_path: Path, bare: set[str], mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub, FromLineOverride="yes")
    code, loaded, err = _loaded(
        tmp_path,
        _entry("relay.cli:sendmail_main", ["-C", str(conf), "a@example.com"]),
        stdin=MESSAGE,
    )
    assert code == os.EX_OK, err
    assert len(hub.wait_for(1)) == 1
    _check(loaded, bare, SEND)


def test_mail_to_an_alias(tmp_path: Path, bare: set[str], mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    mailrc = tmp_path / "mailrc"
    mailrc.write_text("alias user 'Bench User <someone@example.com>'\n")
    env = {"HOME": str(tmp_path), "MAILRC": str(mailrc), "RELAY_CONFIG": str(conf),
           "MAILX_NO_SYSTEM_RC": "1"}  # fmt: skip
    code, loaded, err = _loaded(
        tmp_path,
        _entry("mailx.cli:main", ["-n", "-s", "subj", "user"]),
        stdin=b"disk usage on /: 91%\n",
        env=env,
    )
    assert code == os.EX_OK, err
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["someone@example.com"]
    _check(loaded, bare, MAIL_ALIAS)


@pytest.fixture
def service(tmp_path: Path, mailhub: MailHubFactory) -> Iterator[tuple[Path, Path, object]]:
    """A running mailx-relayd (root), its socket reachable by uid 65534, its config not."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a sender as uid 65534")
    hub = mailhub()
    conf = write_config(tmp_path, hub)  # 0600 in root's 0700 tmp_path: out of reach
    run = Path(tempfile.mkdtemp(prefix="import-budget-"))  # /tmp: reachable by anyone
    run.chmod(0o755)
    sock = run / "submit.sock"
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "mailx-relayd"), "-C", str(conf), "--socket",
         str(sock)],
        env={**os.environ, "RELAY_OFFLINE": str(tmp_path / "offline")},
        stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        yield conf, sock, hub
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(run, ignore_errors=True)


def test_unprivileged_hand_off(
    tmp_path: Path, bare: set[str], service: tuple[Path, Path, object]
) -> None:
    conf, sock, hub = service
    # The copy uid 65534 can reach, wherever the checkout is (tests/e2e/tools.py).
    interpreter, lib = unprivileged_stage()
    code, loaded, err = _loaded(
        sock.parent,
        _entry("relay.cli:sendmail_main", ["a@example.com"]),
        stdin=MESSAGE,
        env={"RELAY_CONFIG": str(conf), "RELAY_SOCKET": str(sock), "HOME": str(sock.parent)},
        prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
        interpreter=interpreter,
        root=lib,
    )
    assert code == os.EX_OK, err
    assert len(hub.wait_for(1)) == 1  # type: ignore[attr-defined]
    _check(loaded, bare, HAND_OFF)
