"""mailx.alias_cli: argv to actions, output formats, and exit codes (in-process main)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailx.alias_cli import main

RC = """\
# Aliases for host1
set from="Host One <root@host1.example.com>"

alias ops alice@example.com \\
      bob@example.com   # on-call
alias team ops 'Carol C'<carol@example.com>
retain date from to subject
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user with ~/.mailrc holding RC and a system mail.rc with one alias."""
    (tmp_path / ".mailrc").write_text(RC)
    system = tmp_path / "system.rc"
    system.write_text("alias postmaster admin@example.com\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MAILX_SYSTEM_RC", str(system))
    monkeypatch.delenv("MAILRC", raising=False)
    monkeypatch.delenv("MAILX_NO_SYSTEM_RC", raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_list_reads_what_mail_reads(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "list")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "postmaster: admin@example.com",
        "ops: alice@example.com, bob@example.com",
        "team: ops, Carol C <carol@example.com>",
    ]


def test_list_expanded_and_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "list", "--expanded")
    assert status == 0
    assert "team: alice@example.com, bob@example.com, Carol C <carol@example.com>" in out
    status, out, _ = run(capsys, "--file", str(home / ".mailrc"), "list", "--json", "--expanded")
    data = json.loads(out)
    assert [d["name"] for d in data] == ["ops", "team"]
    assert data[1]["members"][1] == {
        "member": "Carol C<carol@example.com>",
        "address": "Carol C <carol@example.com>",
        "file": str(home / ".mailrc"),
        "line": 6,
    }
    assert data[1]["expanded"][2]["envelope"] == "carol@example.com"
    assert data[1]["expanded"][0]["via"] == ["team", "ops"]


def test_list_expanded_reports_loops(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "loop.rc").write_text("alias a b\nalias b a\nalias ok ok@example.com\n")
    status, out, err = run(capsys, "-f", str(home / "loop.rc"), "list", "--expanded")
    assert status == 65
    assert "ok: ok@example.com" in out
    assert "alias loop: a -> b -> a" in err


def test_show(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "show", "team")
    rc = home / ".mailrc"
    assert status == 0
    assert out.splitlines() == [
        f"team  ({rc}:6)",
        f"  ops  ({rc}:6)",
        f"    alice@example.com  ({rc}:4)",
        f"    bob@example.com  ({rc}:4)",
        f"  Carol C <carol@example.com>  ({rc}:6)",
        "expands to 3 recipients:",
        "  alice@example.com",
        "  bob@example.com",
        "  Carol C <carol@example.com>",
    ]
    status, out, _ = run(capsys, "show", "--json", "team")
    data = json.loads(out)
    assert data["tree"]["children"][0]["children"][0]["member"] == "alice@example.com"
    assert [r["envelope"] for r in data["expanded"]] == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    ]


def test_show_missing_alias_suggests(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "show", "teem")
    assert status == 67
    assert out == ""
    assert err.count("\n") == 1
    assert "no alias 'teem'" in err
    assert "did you mean: team?" in err


def test_show_loop_exits_65_after_the_tree(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "loop.rc").write_text("alias a b\nalias b a\n")
    status, out, err = run(capsys, "--file", str(home / "loop.rc"), "show", "a")
    assert status == 65
    assert "LOOP" in out
    assert "alias loop: a -> b -> a" in err


def test_add_writes_the_archwiki_form(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "add", "archuser", "My Name <someone@example.com>")
    assert (status, out, err) == (0, "", "")
    text = (home / ".mailrc").read_text()
    assert text == RC.replace("retain", "alias archuser 'My Name'<someone@example.com>\nretain")
    assert (home / "system.rc").read_text() == "alias postmaster admin@example.com\n"


def test_add_appends_notes_duplicates_and_replaces(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "add", "ops", "dave@example.com", "alice@example.com")
    assert status == 0
    assert "alice@example.com is already in alias 'ops'" in err
    assert "alias ops dave@example.com\n" in (home / ".mailrc").read_text()
    status, _, _ = run(capsys, "add", "--replace", "ops", "eve@example.com")
    text = (home / ".mailrc").read_text()
    assert status == 0
    assert "alice@example.com" not in text
    assert "# on-call" not in text  # the comment was part of the replaced definition
    assert text.startswith("# Aliases for host1\nset from=")
    assert "alias ops eve@example.com\nalias team" in text


def test_add_refuses_bad_input_without_touching_the_file(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ("add", "my team", "a@example.com"),
        ("add", "ok", "a@example.com, b@example.com"),
        ("add", "ok", "a@example.com\nBcc: evil@example.com"),
        ("add", "ok", "|/bin/sh"),
        ("add", "ops", "team"),  # ops -> team -> ops
    ):
        status, out, err = run(capsys, *argv)
        assert status == 65, argv
        assert out == ""
        assert err.count("\n") == 1 and err.startswith("mail-alias: ")
    assert (home / ".mailrc").read_text() == RC


def test_add_creates_a_missing_file(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = home / "sub.rc"
    status, _, _ = run(capsys, "--file", str(target), "add", "a", "a@example.com")
    assert status == 0
    assert target.read_text() == "alias a a@example.com\n"


def test_mailrc_variable_names_the_user_file(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = home / "other.rc"
    monkeypatch.setenv("MAILRC", str(other))
    assert run(capsys, "add", "x", "x@example.com")[0] == 0
    assert other.read_text() == "alias x x@example.com\n"
    assert "alias x" not in (home / ".mailrc").read_text()


def test_system_option(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--system", "list")
    assert (status, out) == (0, "postmaster: admin@example.com\n")
    assert run(capsys, "--system", "add", "abuse", "admin@example.com")[0] == 0
    assert "alias abuse admin@example.com" in (home / "system.rc").read_text()


def test_remove(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "remove", "ops")
    assert (status, out) == (0, "")
    assert err == (
        f"mail-alias: warning: {home / '.mailrc'}:4: alias 'team' still lists 'ops', "
        "which is now a plain local name\n"
    )
    assert (home / ".mailrc").read_text() == RC.replace(
        "alias ops alice@example.com \\\n      bob@example.com   # on-call\n", ""
    )


def test_remove_missing(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "remove", "tea")
    assert status == 67
    assert (
        err == f"mail-alias: {home / '.mailrc'}: no alias 'tea' in this file; did you mean: team?\n"
    )
    status, _, err = run(capsys, "remove", "postmaster")
    assert status == 67
    assert f"it is defined in {home / 'system.rc'}:1 (use --system or --file)" in err
    status, _, err = run(capsys, "--file", str(home / "none.rc"), "remove", "x")
    assert status == 67
    assert not (home / "none.rc").exists()
    assert (home / ".mailrc").read_text() == RC


def test_rename(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "rename", "ops", "oncall")
    assert status == 0
    assert "alias 'team' still lists 'ops'" in err
    text = (home / ".mailrc").read_text()
    assert "alias oncall alice@example.com \\\n      bob@example.com   # on-call\n" in text
    assert run(capsys, "rename", "oncall", "team")[0] == 65  # exists
    assert run(capsys, "rename", "nosuch", "x")[0] == 67
    assert run(capsys, "rename", "team", "bad name")[0] == 65


def test_check_clean_and_dirty(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "check")
    assert status == 0
    assert out.startswith("no problems found: 3 alias(es) in ")
    bad = home / "bad.rc"
    bad.write_text("alias a b\nalias b a\nalias c nosuchuser-xyz\nalias d 'x y'\n")
    status, out, _ = run(capsys, "--file", str(bad), "check")
    assert status == 65
    assert out.splitlines() == [
        f"{bad}:1: error: alias loop: a -> b -> a",
        f"{bad}:3: error: alias 'c': 'nosuchuser-xyz' is neither an alias nor a local account",
        f"{bad}:4: error: alias d: invalid member 'x y': not a valid address or local name",
        f"3 error(s), 0 warning(s) in {bad}",
    ]
    status, out, _ = run(capsys, "--file", str(bad), "check", "--json")
    assert status == 65
    data = json.loads(out)
    assert (data["errors"], data["warnings"]) == (3, 0)
    assert data["findings"][0] == {
        "severity": "error",
        "file": str(bad),
        "line": 1,
        "message": "alias loop: a -> b -> a",
    }


def test_check_warnings_alone_exit_0(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = home / "warn.rc"
    rc.write_text("alias root admin@example.com\n")
    status, out, _ = run(capsys, "--file", str(rc), "check")
    assert status == 0
    assert "warning: alias 'root' shadows the local account 'root'" in out


def test_unreadable_mailrc_is_78(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "--file", str(home), "list")
    assert status == 78
    assert err.startswith(f"mail-alias: {home}: cannot read")


def test_editing_a_directory_is_73(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "--file", str(home), "add", "x", "x@example.com")
    assert status == 73
    assert err == f"mail-alias: {home}: is a directory, not a mail.rc\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["frob"],
        [],
        ["add", "onlyname"],
        ["show"],
        ["--bogus", "list"],
        ["--file", "x", "--system", "list"],
    ],
)
def test_usage_errors_are_64_with_one_line(
    argv: list[str], home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 64
    assert out == ""
    assert err.count("\n") == 1


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0
    assert "mail-alias [options] add [--replace] NAME ADDRESS..." in out
    status, out, _ = run(capsys, "--version")
    assert status == 0
    assert out.startswith("mail-alias (mailx-relay) ")


def test_internal_errors_are_one_line_70(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mailx.mailrc

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(mailx.mailrc, "load", broken)
    status, _, err = run(capsys, "list")
    assert status == 70
    assert err == (
        "mail-alias: internal error: ZeroDivisionError: boom "
        "(run with MAILX_RELAY_DEBUG=1 for details)\n"
    )


@pytest.mark.parametrize("argv", [["--help"], ["frob"], ["--version"]])
def test_help_and_usage_errors_stay_light(argv: list[str]) -> None:
    """Parsing argv loads neither `email` nor the mail.rc parser."""
    code = (
        "import sys\nfrom mailx.alias_cli import main\nmain(sys.argv[1:])\n"
        "heavy = [m for m in ('email', 'mailx.mailrc', 'mailx.aliasbook', 'json') "
        "if m in sys.modules]\nprint(heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False
    )
    assert result.stderr.splitlines()[-1] == "[]"
