"""The installed commands are our own entry scripts (tools/entry_scripts.py), not pip's.

`make install` (PREFIX in tmp, nothing outside it) once per module, then: the scripts run
`python -IS`, name the installed package's console scripts, deliver to a MailHub, load
neither `site` nor anything of their own before the entry module (no `re`, no `typing`:
the cost of pip's wrapper, docs/performance.md, section 2), ignore PYTHON* variables, keep
MAILX_RELAY_DEBUG, and find every module byte-compiled and fresh.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.mailhub import MailHubFactory
from tests.relayconf import write_config

pytestmark = pytest.mark.interop

PROJECT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else "python3"


def entry_scripts() -> ModuleType:
    """tools/entry_scripts.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location(
        "entry_scripts", PROJECT / "tools" / "entry_scripts.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Installed:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.venv = prefix / "venv"
        self.python = str(self.venv / "bin" / "python")
        (self.site,) = self.venv.glob("lib/python3*/site-packages")

    def bin(self, name: str) -> str:
        return str(self.prefix / "bin" / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    check = "import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))"
    if shutil.which("make") is None:
        pytest.skip("make not installed: apt-get install make")
    if subprocess.run([PYTHON, "-c", check], capture_output=True, check=False).returncode:
        pytest.skip(f"{PYTHON} is not Python >= 3.11 with venv: apt-get install python3-venv")
    where = tmp_path_factory.mktemp("entry-scripts")
    prefix = where / "opt" / "mailx-relay"
    done = subprocess.run(
        ["make", "--no-print-directory", "install", f"PREFIX={prefix}", "SBIN=",
         f"UNIT_DIR={where / 'units'}", f"SPOOL_DIR={where / 'spool'}"],
        cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return Installed(prefix)


def env_for(home: Path, config: Path | None = None, **extra: str) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "XDG_STATE_HOME": str(home / ".local/state"),
        "MAILX_NO_SYSTEM_RC": "1",
    }
    if config is not None:
        env["RELAY_CONFIG"] = str(config)
    env.update(extra)
    return env


def test_every_console_script_is_ours(installed: Installed) -> None:
    (info,) = installed.site.glob("mailx_relay-*.dist-info")
    points = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    points.optionxform = str  # type: ignore[assignment,method-assign]
    points.read(info / "entry_points.txt")
    declared = dict(points.items("console_scripts"))
    # tools/install.sh's own list (links, checks) agrees with the package's.
    names = next(
        line.split("=", 1)[1].strip('"').split()
        for line in (PROJECT / "tools/install.sh").read_text().splitlines()
        if line.startswith("NAMES=")
    )
    assert sorted(declared) == sorted(names)
    for name, value in declared.items():
        module, function = value.split(":")
        lines = (installed.venv / "bin" / name).read_text().splitlines()
        assert lines[0] == f"#!{installed.venv}/bin/python -IS"
        assert f"sys.path.append({str(installed.site)!r})" in lines
        assert f"from {module} import {function}" in lines
        assert lines[-1] == f"sys.exit({function}())"
        assert "import re" not in lines
        assert os.access(installed.venv / "bin" / name, os.X_OK)


def top_level_imports(stderr: str) -> list[str]:
    """The modules `-X importtime` shows at the outermost level, in import order."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            name = line.split("|")[2]
            if not name.startswith("  "):
                out.append(name.strip())
    return out


def test_the_script_imports_nothing_but_its_entry_module(installed: Installed) -> None:
    """No `site`, `re`, `typing` from the script or the interpreter: what comes before the
    entry module is exactly a bare `python -I -S`'s start."""
    bare = subprocess.run(
        [installed.python, "-I", "-S", "-X", "importtime", "-c", "pass"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for name, entry in (("sendmail", "relay.cli"), ("mailq", "relay.mailq"), ("mail", "mailx.cli")):
        script = installed.venv / "bin" / name
        interpreter, flags = script.read_text().splitlines()[0][2:].split(" ")
        done = subprocess.run(
            [interpreter, flags, "-X", "importtime", str(script), "-V"],
            capture_output=True, text=True, env=env_for(installed.prefix / "home"), check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("mailx-relay "), done.stdout
        # Until the entry module: the bare start, nothing more. (After it, imports made
        # inside the package's functions show at the top level too: not the script's.)
        floor = top_level_imports(bare.stderr)
        top = top_level_imports(done.stderr)
        assert top[: len(floor) + 1] == [*floor, entry], name
        everything = [line.split("|")[2].strip() for line in done.stderr.splitlines()[1:]]
        assert "site" not in everything
        assert "sitecustomize" not in everything
        assert "_distutils_hack" not in everything


def test_a_script_itself_loads_no_module(installed: Installed, tmp_path: Path) -> None:
    """sys.modules when the entry function runs: a bare interpreter's, plus the entry."""
    probe = tmp_path / "probe.py"
    dump = tmp_path / "modules"
    probe.write_text(
        "import sys\n"
        "def main():\n"
        f"    open({str(dump)!r}, 'w').write(repr(sorted(sys.modules)))\n"
        "    return 3\n"
    )
    script = tmp_path / "command"
    script.write_text(
        entry_scripts().script_text(installed.python, [str(tmp_path)], "probe", "main")
    )
    script.chmod(0o755)
    assert subprocess.run([script], env={}, check=False).returncode == 3
    loaded = set(ast.literal_eval(dump.read_text()))
    code = "import sys; print(repr(sorted(sys.modules)))"
    bare = subprocess.run(
        [installed.python, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded - set(ast.literal_eval(bare.stdout)) == {"probe"}


def test_a_long_interpreter_path_goes_through_sh(tmp_path: Path) -> None:
    """A #! line too long for the kernel: /bin/sh execs the interpreter, same options."""
    long_dir = tmp_path / ("x" * 60) / ("y" * 60) / "with space"
    long_dir.mkdir(parents=True)
    python = long_dir / "python"
    python.symlink_to(os.path.realpath(PYTHON))
    (tmp_path / "probe.py").write_text(
        "import sys\ndef main():\n    print(sys.flags.isolated, sys.flags.no_site, sys.argv)\n"
    )
    text = entry_scripts().script_text(str(python), [str(tmp_path)], "probe", "main")
    assert text.startswith("#!/bin/sh\n")
    script = tmp_path / "it's a command"
    script.write_text(text)
    script.chmod(0o755)
    done = subprocess.run(
        [script, "a b", "$HOME"], capture_output=True, text=True, env={}, check=True
    )
    assert done.stdout == f"1 1 [{str(script)!r}, 'a b', '$HOME']\n"


def test_commands_deliver_and_list(
    installed: Installed, tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    config = write_config(tmp_path, hub)
    home = tmp_path / "home"
    env = env_for(home, config)
    sent = subprocess.run(
        [installed.bin("sendmail"), "someone@example.com"],
        input=b"Subject: one\n\nhello\n", capture_output=True, env=env, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    (home / ".mailrc").write_text("alias who 'Some One <someone@example.com>'\n")
    for command in ("mail", "mailx"):  # one entry point, whatever name ran it
        sent = subprocess.run(
            [installed.bin(command), "-s", command, "who"],
            input=b"body\n", capture_output=True, env=env, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    received = hub.wait_for(3)
    assert [r.message()["Subject"] for r in received] == ["one", "mail", "mailx"]
    assert all(r.rcpt_tos == ["someone@example.com"] for r in received)
    listed = subprocess.run(
        [installed.bin("mailq")], capture_output=True, text=True, env=env, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert "queue is empty" in listed.stdout.lower() or listed.stdout == "", listed.stdout


def test_python_variables_are_ignored(installed: Installed, tmp_path: Path) -> None:
    """-I: PYTHONPATH, PYTHONSTARTUP, PYTHONWARNINGS, the user site cannot change the code."""
    trap = tmp_path / "trap"
    (trap / "relay").mkdir(parents=True)
    (trap / "relay" / "__init__.py").write_text("raise SystemExit('hijacked by PYTHONPATH')\n")
    (trap / "sitecustomize.py").write_text("raise SystemExit('hijacked by sitecustomize')\n")
    (trap / "startup.py").write_text("raise SystemExit('hijacked by PYTHONSTARTUP')\n")
    home = tmp_path / "home"
    user_site = home / ".local/lib" / installed.site.parent.name / "site-packages"
    user_site.mkdir(parents=True)
    (user_site / "usercustomize.py").write_text("raise SystemExit('hijacked by user site')\n")
    env = env_for(
        home,
        PYTHONPATH=str(trap),
        PYTHONSTARTUP=str(trap / "startup.py"),
        PYTHONINSPECT="1",
        PYTHONWARNINGS="error",
        PYTHONHOME=str(trap),
        PYTHONPROFILEIMPORTTIME="1",
    )
    for name in ("sendmail", "mail", "mailq", "mailx-relayd"):
        done = subprocess.run(
            [installed.bin(name), "-V"], capture_output=True, text=True, env=env, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, (name, done.stderr)
        assert done.stderr == "", (name, done.stderr)
        assert "mailx-relay" in done.stdout


def test_mailx_relay_debug_still_shows_the_traceback(installed: Installed, tmp_path: Path) -> None:
    """Our variable is read from os.environ, which -I leaves alone."""
    (tmp_path / "buggy.py").write_text(
        "from relay.entry import run\n"
        "def bug(args):\n"
        "    return {}['missing']\n"
        "def main():\n"
        "    return run('buggy', bug)\n"
    )
    script = tmp_path / "buggy"
    script.write_text(
        entry_scripts().script_text(
            installed.python, [str(tmp_path), str(installed.site)], "buggy", "main"
        )
    )
    script.chmod(0o755)
    quiet = subprocess.run([script], capture_output=True, text=True, env={}, check=False)
    assert quiet.returncode == os.EX_SOFTWARE
    assert "Traceback" not in quiet.stderr
    assert "run with MAILX_RELAY_DEBUG=1" in quiet.stderr
    loud = subprocess.run(
        [script], capture_output=True, text=True, env={"MAILX_RELAY_DEBUG": "1"}, check=False
    )
    assert loud.returncode == os.EX_SOFTWARE
    assert "Traceback" in loud.stderr
    assert "KeyError: 'missing'" in loud.stderr


FRESHNESS = """
import importlib.util, pathlib, sys
stale = []
for source in sorted(pathlib.Path(sys.argv[1]).rglob('*.py')):
    cached = pathlib.Path(importlib.util.cache_from_source(str(source)))
    try:
        head = cached.read_bytes()[:16]
    except OSError:
        stale.append(f'{source}: no .pyc'); continue
    info = source.stat()
    expected = (importlib.util.MAGIC_NUMBER + (0).to_bytes(4, 'little')
                + (int(info.st_mtime) & 0xFFFFFFFF).to_bytes(4, 'little')
                + (info.st_size & 0xFFFFFFFF).to_bytes(4, 'little'))
    if head != expected:
        stale.append(f'{source}: stale or not timestamp-checked')
print('\\n'.join(stale))
"""


def test_modules_are_compiled_fresh_and_never_recompiled(
    installed: Installed, tmp_path: Path
) -> None:
    for package in ("relay", "mailx", "docopt"):
        done = subprocess.run(
            [installed.python, "-I", "-S", "-c", FRESHNESS, str(installed.site / package)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert done.stdout.strip() == "", done.stdout
    caches = sorted(installed.site.rglob("__pycache__/*.pyc"))
    before = {path: path.stat().st_mtime_ns for path in caches}
    env = env_for(tmp_path / "home", write_config(tmp_path, None, mailhub="127.0.0.1:1"))
    for argv in (["sendmail", "-V"], ["mailq"], ["mail", "-V"], ["mail-alias", "list"]):
        subprocess.run(
            [installed.bin(argv[0]), *argv[1:]], capture_output=True, env=env, check=False
        )
    after = {path: path.stat().st_mtime_ns for path in installed.site.rglob("__pycache__/*.pyc")}
    assert after == before
