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
