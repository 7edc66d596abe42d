"""mailx.cli: a bug inside `mail` is one line on stderr, exit 70, and the text is kept."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

import mailx.cli
import mailx.compose
import mailx.plain


def test_a_bug_is_one_line_and_the_draft_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(mailx.compose, "build", broken)
    monkeypatch.setattr(mailx.plain, "build", broken)  # the builder of simple drafts
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MAILX_NO_SYSTEM_RC", "1")
    monkeypatch.delenv("MAILRC", raising=False)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"precious body\n")))
    status = mailx.cli.main(["-s", "subject", "a@example.com"])
    assert status == os.EX_SOFTWARE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "internal error: RuntimeError: simulated bug" in err
    assert "Traceback" not in err
    # build() itself is what broke: the raw text is kept all the same.
    assert f"message kept in {tmp_path / 'dead.letter'}" in err
    kept = (tmp_path / "dead.letter").read_bytes()
    assert b"Subject: subject\n\nprecious body\n" in kept
