"""`make uninstall` leaves the spool alone and says how many messages it still holds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def uninstall(tmp_path: Path, spool: Path) -> subprocess.CompletedProcess[str]:
    """tools/uninstall.sh on an installation that recorded nothing but its state file."""
    prefix = tmp_path / "opt" / "mailx-relay"
    prefix.mkdir(parents=True)
    (prefix / "install-state").write_text(f"file\t{prefix}/install-state\n")
    env = {**os.environ, "PREFIX": str(prefix), "SPOOL": str(spool), "ALTERNATIVES": "true"}
    return subprocess.run(
        ["sh", str(PROJECT / "tools" / "uninstall.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_spool_with_messages_is_left_and_counted(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    for name in ("new/20260101000000.000001.1.aaaaaa", "new/20260101000000.000002.1.bbbbbb"):
        (spool / name).mkdir(parents=True)
    (spool / "dead").mkdir()
    (spool / "dead" / "20260101000000.000003.1.cccccc.1500").write_text("x")
    (spool / "dead" / ".unfinished.tmp").write_text("x")
    (spool / "offline").mkdir()
    (spool / "offline" / "msg.1.2.abc").write_text("x")
    (spool / "offline" / "tmp.1.2.abd").write_text("x")
    done = uninstall(tmp_path, spool)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"left the spool {spool} alone: it still holds 2 queued message(s), 1 in dead/ and "
        "1 in offline/" in done.stdout
    )
    assert len(list((spool / "new").iterdir())) == 2  # untouched


def test_empty_spool_is_left_and_said(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / "new").mkdir(parents=True)
    done = uninstall(tmp_path, spool)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"left the spool {spool} alone: it holds no message" in done.stdout
    assert spool.is_dir()


def test_no_spool_no_word(tmp_path: Path) -> None:
    done = uninstall(tmp_path, tmp_path / "none")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "left the spool" not in done.stdout
