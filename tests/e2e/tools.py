"""Running the installed console scripts as a user would: subprocess, stdin, env."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

BIN = Path(sys.executable).parent


def command(name: str) -> str:
    """Path of an installed console script of this project (in the venv running pytest)."""
    path = BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: console script not installed (pip install -e .)")
    return str(path)


#: Runs argv[2:], then writes the peak RSS of that child (KiB, from getrusage) to argv[1].
#: A small process of its own: a child forked from pytest would count pytest's memory as
#: its own peak until its exec.
_RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as report:
    report.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code if code >= 0 else 128 - code)
"""


def run(
    name: str,
    args: Sequence[str],
    *,
    home: Path,
    stdin: bytes = b"",
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """Run `name args` with HOME=home and a clean, predictable environment."""
    return subprocess.run(
        [command(name), *args],
        input=stdin,
        capture_output=True,
        env=_environment(home, env),
        timeout=timeout,
        check=False,
    )


def run_measured(
    name: str,
    args: Sequence[str],
    *,
    home: Path,
    stdin: bytes = b"",
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> tuple[subprocess.CompletedProcess[bytes], int]:
    """`run`, and the command's peak resident memory (max RSS) in KiB."""
    report = home / ".peak-rss"
    done = subprocess.run(
        [sys.executable, "-I", "-c", _RSS_WRAPPER, str(report), command(name), *args],
        input=stdin,
        capture_output=True,
        env=_environment(home, env),
        timeout=timeout,
        check=False,
    )
    return done, int(report.read_text())


def _environment(home: Path, env: Mapping[str, str] | None) -> dict[str, str]:
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "MAILX_NO_SYSTEM_RC": "1",
    }
    environ.update(env or {})
    return environ


def assert_one_clean_line(stderr: bytes) -> str:
    """Bad input gets one clear line on stderr, never a traceback."""
    text = stderr.decode()
    assert "Traceback" not in text
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- running our commands as another user ----------------------------------------------------

#: Where `unprivileged_command` put its launchers; made once per test session.
_STAGE: dict[str, Path] = {}


def unprivileged_command(name: str) -> str:
    """A launcher of console script `name` that an unprivileged uid can run, wherever the
    checkout is (a CI clone may sit under a 0700 directory such as `mktemp -d`'s, which
    uid 65534 cannot enter): the project's packages and their one dependency are copied
    into a 0755 directory under /tmp, and the launcher runs them with an interpreter that
    uid can exec. The copy is of the code under test, not an installed release."""
    return str(_stage() / "bin" / name)


def unprivileged_python(code: str) -> list[str]:
    """argv running `code` with an interpreter uid 65534 can exec, the project's packages
    importable (the same copy as `unprivileged_command`'s)."""
    stage = _stage()
    prefix = f"import sys; sys.path.insert(0, {str(stage / 'lib')!r})\n"
    return [str(stage / "python"), "-I", "-c", prefix + code]


def unprivileged_stage() -> tuple[str, str]:
    """(interpreter, library directory) of the copy `unprivileged_command` runs."""
    stage = _stage()
    return str(stage / "python"), str(stage / "lib")


def _stage() -> Path:
    if "root" in _STAGE:
        return _STAGE["root"]
    import atexit
    import importlib.metadata
    import shutil
    import tempfile

    import docopt

    import mailx
    import relay

    root = Path(tempfile.mkdtemp(prefix="mailx-relay-unprivileged-"))
    atexit.register(shutil.rmtree, root, True)
    root.chmod(0o755)
    lib = root / "lib"
    lib.mkdir()
    for package in (relay, mailx):
        source = Path(package.__file__).parent
        shutil.copytree(source, lib / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    dependency = Path(docopt.__file__)
    if dependency.name == "__init__.py":
        shutil.copytree(dependency.parent, lib / dependency.parent.name)
    else:
        shutil.copy2(dependency, lib / dependency.name)
    python = _reachable_interpreter()
    (root / "python").symlink_to(python)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for point in importlib.metadata.distribution("mailx-relay").entry_points:
        if point.group != "console_scripts":
            continue
        module, _, attribute = point.value.partition(":")
        launcher = bin_dir / point.name
        launcher.write_text(
            f"#!{python} -I\nimport sys\nsys.path.insert(0, {str(lib)!r})\n"
            f"from {module} import {attribute}\nsys.exit({attribute}())\n"
        )
        launcher.chmod(0o755)
    for path in root.rglob("*"):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o044 | (0o011 if path.is_dir() else 0))
    _STAGE["root"] = root
    return root


def _reachable_interpreter() -> str:
    """The system's python3 when it is this interpreter's version (pyenv, and so the
    venv's interpreter, often live under /root), else this one if uid 65534 can run it."""
    wanted = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = ["/usr/bin/python3", sys.executable, os.path.realpath(sys.executable)]
    probe = "import sys, json, ssl, socket, email.message; print('%d.%d' % sys.version_info[:2])"
    for candidate in candidates:
        if not candidate:
            continue
        done = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                candidate,
                "-I",
                "-c",
                probe,
            ],
            capture_output=True,
            check=False,
            cwd="/",
        )
        if done.returncode == 0 and done.stdout.strip().decode() == wanted:
            return candidate
    raise RuntimeError(f"no python {wanted} that uid 65534 can run (tried {candidates})")
