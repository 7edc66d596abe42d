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
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "MAILX_NO_SYSTEM_RC": "1",
    }
    environ.update(env or {})
    return subprocess.run(
        [command(name), *args],
        input=stdin,
        capture_output=True,
        env=environ,
        timeout=timeout,
        check=False,
    )


def assert_one_clean_line(stderr: bytes) -> str:
    """Bad input gets one clear line on stderr, never a traceback."""
    text = stderr.decode()
    assert "Traceback" not in text
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]
