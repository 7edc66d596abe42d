"""`make install` and `make uninstall` (tools/install.sh, tools/uninstall.sh) in a sandbox.

Every location the install touches is pointed into tmp_path: PREFIX, SBIN (the stand-in
for /usr/sbin, holding a fake MTA's sendmail), LINK_BIN, and the dpkg databases
(update-alternatives' --altdir/--admindir/--log, dpkg-divert's --admindir), so the real
/usr/sbin and /var/lib/dpkg are never touched. The installed commands are then run for real
against a MailHub, and after `make uninstall` the sandbox must be exactly as it was: same
names, types, modes, contents, link targets and file mtimes.

The install builds a venv with the system python3 and pip-installs the project, so it needs
the package registry (the project depends on docopt-ng).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.mailhub import MailHubFactory
from tests.relayconf import write_config

pytestmark = pytest.mark.interop

PROJECT = Path(__file__).resolve().parents[2]
COMMANDS = ("mail", "mailx", "mailq", "mail-alias", "sendmail", "mailx-relayd")
UNITS = (
    "mailx-relay-flush.service",
    "mailx-relay-flush.timer",
    "mailx-relayd.socket",
    "mailx-relayd.service",
)
FAKE_MTA = b'#!/bin/sh\necho fake-mta "$@"\n'
Snapshot = dict[str, tuple[object, ...]]


def install_python() -> str:
    """The interpreter `make install` picks (Makefile: INSTALL_PYTHON), or skip."""
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else "python3"
    check = "import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))"
    if shutil.which("make") is None:
        pytest.skip("make not installed: apt-get install make")
    if subprocess.run([python, "-c", check], capture_output=True, check=False).returncode:
        pytest.skip(f"{python} is not Python >= 3.11 with venv: apt-get install python3-venv")
    return python


def snapshot(root: Path) -> Snapshot:
    """Everything under root: type, mode, content hash or link target, file mtime."""
    found: Snapshot = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top, name)
            info = path.lstat()
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = ("dir", oct(info.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[key] = ("file", oct(info.st_mode), info.st_mtime_ns, digest)
    return found


def admin_as_content(found: Snapshot) -> Snapshot:
    """The snapshot with the mtimes of update-alternatives' admin files left out."""
    return {
        key: value[:2] + value[3:] if key.startswith("dpkg/alternatives/") else value
        for key, value in found.items()
    }


def make(target: str, env: Mapping[str, str], **variables: str) -> subprocess.CompletedProcess[str]:
    argv = ["make", "--no-print-directory", target]
    argv += [f"{name}={value}" for name, value in variables.items()]
    return subprocess.run(
        argv, cwd=PROJECT, env=dict(env), capture_output=True, text=True, timeout=300, check=False
    )


def sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The sandbox root, a fake MTA in its sbin, and the environment pointing dpkg into it."""
    root = tmp_path / "root"
    for directory in (
        "sbin",
        "opt",
        "usr/local/bin",
        "etc/alternatives",
        "etc/systemd/system",
        "dpkg/alternatives",
    ):
        (root / directory).mkdir(parents=True)
    for name in ("sendmail", "mailq"):
        (root / "sbin" / name).write_bytes(FAKE_MTA)
        (root / "sbin" / name).chmod(0o755)
    (root / "sbin" / "unrelated").write_bytes(b"#!/bin/sh\n")
    (root / "usr/local/bin/tool").write_bytes(b"#!/bin/sh\n")
    (root / "etc/alternatives/editor").symlink_to("/bin/true")
    # An empty dpkg database: no package owns anything (the divert test adds one).
    dpkg = tmp_path / "dpkg"
    (dpkg / "info").mkdir(parents=True)
    (dpkg / "updates").mkdir()
    (dpkg / "status").write_text("")
    env = dict(os.environ)
    env.update(
        {
            "ALTDIR": str(root / "etc/alternatives"),
            "ALT_ADMINDIR": str(root / "dpkg/alternatives"),
            "ALT_LOG": str(tmp_path / "alternatives.log"),
            "DPKG_ADMINDIR": str(dpkg),
            # Never the host's units or spool. The spool is outside the root: uninstall
            # leaves it, so it is not part of "as it was".
            "UNIT_DIR": str(root / "etc/systemd/system"),
            "SPOOL_DIR": str(tmp_path / "spool"),
        }
    )
    return root, env


def run_env(home: Path, config: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "XDG_STATE_HOME": str(home / ".local/state"),
        "RELAY_CONFIG": str(config),
        "MAILX_NO_SYSTEM_RC": "1",
    }


def test_install_deliver_uninstall_leaves_the_sandbox_as_it_was(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    python = install_python()
    if shutil.which("update-alternatives") is None:
        pytest.skip("update-alternatives not found (Debian's dpkg)")
    root, env = sandbox(tmp_path)
    before = snapshot(root)
    prefix, sbin, link_bin = root / "opt/mailx-relay", root / "sbin", root / "usr/local/bin"
    where = {"PREFIX": str(prefix), "SBIN": str(sbin), "LINK_BIN": str(link_bin)}

    done = make("install", env, **where)
    assert done.returncode == 0, done.stdout + done.stderr

    # sendmail and mailq: ours through the alternatives, the fake MTA's kept aside.
    altdir = root / "etc/alternatives"
    for name in ("sendmail", "mailq"):
        assert os.readlink(sbin / name) == str(altdir / name)
        assert os.readlink(altdir / name) == str(prefix / "bin" / name)
        assert (sbin / f"{name}.mailx-relay-backup").read_bytes() == FAKE_MTA
        assert f"{name}.mailx-relay-backup" in done.stdout
    # The commands, in PREFIX/bin and linked from LINK_BIN; the man pages.
    for name in COMMANDS:
        assert (prefix / "bin" / name).resolve() == prefix / "venv/bin" / name
    for name in ("mail", "mailx", "mailq", "mail-alias"):
        assert os.readlink(link_bin / name) == str(prefix / "bin" / name)
    assert not (link_bin / "sendmail").exists()
    for page in (PROJECT / "man").glob("*.[1-9]"):
        installed = prefix / "share/man" / f"man{page.suffix[1:]}" / page.name
        assert installed.read_bytes() == page.read_bytes()
    # The units, naming our commands by absolute path; the spool and its offline drop.
    units = root / "etc/systemd/system"
    for unit in UNITS:
        assert (units / unit).exists(), unit
    assert f"ExecStart={prefix}/bin/mailq --flush" in (units / UNITS[0]).read_text()
    relayd = (units / "mailx-relayd.service").read_text()
    assert f"\nExecStart={prefix}/bin/mailx-relayd\n" in relayd
    assert f"\nReadWritePaths={tmp_path / 'spool'}\n" in relayd
    socket_unit = (units / "mailx-relayd.socket").read_text()
    assert "ListenStream=/run/mailx-relay/submit.sock" in socket_unit
    assert "SocketMode=0666" in socket_unit
    assert "systemctl enable --now mailx-relayd.socket" in done.stdout
    spool = tmp_path / "spool"
    assert stat.S_IMODE(spool.stat().st_mode) == 0o755
    assert stat.S_IMODE((spool / "offline").stat().st_mode) == 0o1733
    assert (spool / "offline").stat().st_uid == 0
    # A venv of the system python, holding a real (not editable) install.
    assert (prefix / "venv/bin/python").resolve() == Path(python).resolve()
    script = (prefix / "venv/bin/sendmail").read_text()
    assert script.startswith(f"#!{prefix}/venv/bin/python -IS\n")  # tools/entry_scripts.py
    assert not list((prefix / "venv/lib").glob("python3*/site-packages/__editable__*"))

    # What an install must give: both commands deliver through a configured mailhub.
    hub = mailhub()
    config = write_config(tmp_path, hub)
    home = tmp_path / "home"
    environ = run_env(home, config)
    version = subprocess.run(
        [sbin / "sendmail", "-V"], capture_output=True, env=environ, check=False
    )
    assert version.returncode == 0
    assert version.stdout.startswith(b"mailx-relay sendmail ")
    queue = subprocess.run([sbin / "mailq"], capture_output=True, env=environ, check=False)
    assert queue.returncode == 0, queue.stderr
    assert b"fake-mta" not in queue.stdout
    (home / ".mailrc").write_text("alias archuser 'My Name'<someone@example.com>\n")
    sent = subprocess.run(
        [link_bin / "mail", "-s", "test", "archuser"],
        input=b"hi\n",
        capture_output=True,
        env=environ,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    sent = subprocess.run(
        [sbin / "sendmail", "-t"],
        input=b"To: root\nSubject: t\n\nx\n",
        capture_output=True,
        env=environ,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    first, second = hub.wait_for(2)
    assert first.rcpt_tos == ["someone@example.com"]
    assert first.message()["To"] == "My Name <someone@example.com>"
    assert second.rcpt_tos == ["admin@example.com"]  # root= of write_config
    assert second.message()["Subject"] == "t"

    (spool / "offline" / "msg.1.2.3").write_bytes(b"x")  # a user's drop, not picked up yet
    done = make("uninstall", env, **where)
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(root) == before
    assert "it still holds 1 entries (0 queued, 1 in the offline drop)" in done.stdout
    assert (spool / "offline" / "msg.1.2.3").exists()
    log = (tmp_path / "alternatives.log").read_text()
    assert "--install" in log
    assert "link group sendmail fully removed" in log


def own(dpkg: Path, *paths: Path) -> None:
    """Make the sandbox's dpkg database say that package fake-mta owns paths."""
    (dpkg / "status").write_text(
        "Package: fake-mta\nStatus: install ok installed\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: Nobody <nobody@example.com>\nDescription: a stand-in MTA\n\n"
    )
    listed = ["/.", str(paths[0].parent), *map(str, paths)]
    (dpkg / "info" / "fake-mta.list").write_text("\n".join(listed) + "\n")


def test_package_owned_sendmail_is_diverted_and_upgrade_keeps_the_records(
    tmp_path: Path,
) -> None:
    install_python()
    if shutil.which("dpkg-divert") is None or shutil.which("dpkg-query") is None:
        pytest.skip("dpkg-divert not found (Debian's dpkg)")
    root, env = sandbox(tmp_path)
    sbin = root / "sbin"
    (sbin / "fake-mta").write_bytes(FAKE_MTA)
    for name in ("sendmail", "mailq"):  # as ssmtp's /usr/sbin/sendmail -> ssmtp
        (sbin / name).unlink()
        (sbin / name).symlink_to("fake-mta")
    dpkg = Path(env["DPKG_ADMINDIR"])
    own(dpkg, sbin / "sendmail", sbin / "mailq")
    env["ALTERNATIVES"] = ""  # no update-alternatives: a plain symlink
    before = snapshot(root)
    prefix = root / "opt/mailx-relay"
    where = {"PREFIX": str(prefix), "SBIN": str(sbin)}

    done = make("install", env, **where)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dpkg-divert" in done.stdout
    diversions = subprocess.run(
        ["dpkg-divert", "--admindir", str(dpkg), "--list"], capture_output=True, text=True
    )
    for name in ("sendmail", "mailq"):
        assert os.readlink(sbin / name) == str(prefix / "bin" / name)
        assert os.readlink(sbin / f"{name}.mailx-relay-backup") == "fake-mta"
        assert f"local diversion of {sbin / name} to " in diversions.stdout
    state = (prefix / "install-state").read_text()

    done = make("install", env, **where)  # again: an upgrade in place
    assert done.returncode == 0, done.stdout + done.stderr
    assert "upgrading" in done.stdout
    # The venv was rebuilt: its commands are our entry scripts again, not pip's.
    for name in ("sendmail", "mailq", "mail"):
        script = (prefix / "venv/bin" / name).read_text()
        assert script.startswith(f"#!{prefix}/venv/bin/python -IS\n"), name
        assert "import re" not in script
    assert "already ours" in done.stdout
    assert (prefix / "install-state").read_text() == state
    assert os.readlink(sbin / "sendmail") == str(prefix / "bin/sendmail")

    done = make("uninstall", env, **where)
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(root) == before
    diversions = subprocess.run(
        ["dpkg-divert", "--admindir", str(dpkg), "--list"], capture_output=True, text=True
    )
    assert diversions.stdout == ""


def test_destdir_stages_with_final_paths_and_touches_no_database(tmp_path: Path) -> None:
    install_python()
    root, env = sandbox(tmp_path)
    del env["UNIT_DIR"], env["SPOOL_DIR"]  # the defaults, inside DESTDIR
    stage = tmp_path / "stage"
    stage.mkdir()
    before = snapshot(root)
    where = {"DESTDIR": str(stage), "PREFIX": "/opt/mailx-relay"}

    done = make("install", env, **where)
    assert done.returncode == 0, done.stdout + done.stderr
    prefix = stage / "opt/mailx-relay"
    script = (prefix / "venv/bin/sendmail").read_text()
    # Our entry script (tools/entry_scripts.py), naming the final paths only.
    assert script.startswith("#!/opt/mailx-relay/venv/bin/python -IS\n")
    (site,) = prefix.glob("venv/lib/python3*/site-packages")
    final_site = "/" + str(site.relative_to(stage))
    assert f"sys.path.append({final_site!r})\n" in script
    assert str(stage) not in script
    assert str(stage) not in (prefix / "venv/pyvenv.cfg").read_text()
    # The byte-compiled modules were compiled again with the final paths inside (what a
    # traceback shows); none names the staging directory.
    compiled = list((site / "relay/__pycache__").glob("*.pyc"))
    assert compiled
    for pyc in compiled:
        assert str(stage).encode() not in pyc.read_bytes(), pyc
        assert f"{final_site}/relay/".encode() in pyc.read_bytes(), pyc
    assert os.readlink(stage / "usr/sbin/sendmail") == "/opt/mailx-relay/bin/sendmail"
    assert os.readlink(stage / "usr/sbin/mailq") == "/opt/mailx-relay/bin/mailq"
    assert os.readlink(prefix / "bin/mail") == "../venv/bin/mail"
    assert snapshot(root) == before  # no alternative, no diversion, nothing outside DESTDIR

    # No /etc/systemd/system in the stage: the units wait in PREFIX/share/systemd.
    assert (prefix / "share/systemd/mailx-relayd.socket").exists()
    offline = stage / "var/spool/mailx-relay/offline"
    assert stat.S_IMODE(offline.stat().st_mode) == 0o1733

    done = make("uninstall", env, **where)
    assert done.returncode == 0, done.stdout + done.stderr
    # Only the spool is left (uninstall never removes queued mail).
    assert [str(p.relative_to(stage)) for p in sorted(stage.rglob("*"))] == [
        "var",
        "var/spool",
        "var/spool/mailx-relay",
        "var/spool/mailx-relay/offline",
    ]


def test_refuses_to_take_over_what_it_did_not_install(tmp_path: Path) -> None:
    """Checked before any change: the sandbox is left exactly as it was."""
    install_python()
    root, env = sandbox(tmp_path)
    prefix = root / "opt/mailx-relay"
    (root / "usr/local/bin/mail").write_bytes(b"#!/bin/sh\n")
    before = snapshot(root)

    done = make(
        "install",
        env,
        PREFIX=str(prefix),
        SBIN=str(root / "sbin"),
        LINK_BIN=str(root / "usr/local/bin"),
    )
    assert done.returncode != 0
    assert f"{root}/usr/local/bin/mail exists and is not ours" in done.stderr
    assert snapshot(root) == before

    done = make("uninstall", env, PREFIX=str(prefix))
    assert done.returncode != 0
    assert f"{prefix}/install-state not found: nothing was installed" in done.stderr
    assert snapshot(root) == before


def test_an_existing_alternatives_group_is_joined_then_restored(tmp_path: Path) -> None:
    """sendmail already managed by update-alternatives: no backup; the group comes back."""
    install_python()
    if shutil.which("update-alternatives") is None:
        pytest.skip("update-alternatives not found (Debian's dpkg)")
    root, env = sandbox(tmp_path)
    sbin = root / "sbin"
    for name in ("sendmail", "mailq"):
        (sbin / name).unlink()
    other = root / "other-mta"
    other.write_bytes(FAKE_MTA)
    other.chmod(0o755)
    alternatives = [
        "update-alternatives",
        "--altdir",
        env["ALTDIR"],
        "--admindir",
        env["ALT_ADMINDIR"],
        "--log",
        env["ALT_LOG"],
    ]
    subprocess.run(
        [*alternatives, "--quiet", "--install", sbin / "sendmail", "sendmail", other, "10"],
        check=True,
    )
    before = snapshot(root)
    prefix = root / "opt/mailx-relay"
    where = {"PREFIX": str(prefix), "SBIN": str(sbin)}

    done = make("install", env, **where)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "backup" not in done.stdout
    assert (sbin / "sendmail").resolve() == prefix / "venv/bin/sendmail"
    assert (sbin / "mailq").resolve() == prefix / "venv/bin/mailq"

    done = make("uninstall", env, **where)
    assert done.returncode == 0, done.stdout + done.stderr
    # update-alternatives rewrites its admin file: same content, new mtime.
    assert admin_as_content(snapshot(root)) == admin_as_content(before)
    query = subprocess.run(
        [*alternatives, "--query", "sendmail"], capture_output=True, text=True, check=True
    )
    assert "Status: auto" in query.stdout
    assert f"Value: {other}" in query.stdout
