"""The installed `mail-alias`, run as a user would: edits, exit codes, concurrency, and
the front ends (`mail`, and s-nail when installed) reading what it wrote."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailx.mailrc import evaluate, expand_recipients, read_rc
from tests.e2e.tools import assert_one_clean_line, run, unprivileged_command

REAL_LOOKING = """\
# /etc/mail.rc -- mail(1) settings for host1
# Managed by hand; see mail.rc(5).

set from="Host One <root@host1.example.com>"
set sendcharsets=utf-8,iso-8859-1
set hostname=host1.example.com

# Operations team, paged by smartd and mdadm
alias ops alice@example.com \\
      bob@example.com   # on-call rotation
alias team ops 'Carol C'<carol@example.com>

retain date from to cc subject
if t
  set crt
endif
"""


def mail_alias(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = run("mail-alias", list(args), home=home, env=env)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.fixture
def rc(tmp_path: Path) -> Path:
    path = tmp_path / ".mailrc"
    path.write_text(REAL_LOOKING)
    return path


def test_done_when_scenario(tmp_path: Path, rc: Path) -> None:
    """add, show, check and remove on a real-looking mail.rc change only the alias line."""
    original = tmp_path / "original.rc"
    shutil.copy(rc, original)
    status, out, err = mail_alias(tmp_path, "add", "archuser", "My Name <someone@example.com>")
    assert (status, out, err) == (0, "", "")
    if shutil.which("git"):
        diff = subprocess.run(
            ["git", "diff", "--no-index", "--numstat", str(original), str(rc)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert diff.stdout.split()[:2] == ["1", "0"]  # one line added, none removed
    added = set(rc.read_text().splitlines()) - set(REAL_LOOKING.splitlines())
    assert added == {"alias archuser 'My Name'<someone@example.com>"}

    status, out, _ = mail_alias(tmp_path, "show", "archuser")
    assert status == 0
    assert f"archuser  ({rc}:12)" in out
    assert "  My Name <someone@example.com>" in out

    status, out, _ = mail_alias(tmp_path, "check")
    assert status == 0, out
    assert out.startswith("no problems found: 3 alias(es)")

    status, out, err = mail_alias(tmp_path, "remove", "archuser")
    assert (status, out, err) == (0, "", "")
    assert rc.read_bytes() == original.read_bytes()


def test_invalid_address_is_65_and_leaves_the_file(tmp_path: Path, rc: Path) -> None:
    status, _, err = mail_alias(tmp_path, "add", "x", "a@example.com, b@example.com")
    assert status == 65
    assert "invalid recipient" in assert_one_clean_line(err.encode())
    status, _, err = mail_alias(tmp_path, "add", "bad name", "a@example.com")
    assert status == 65
    assert "invalid alias name 'bad name'" in assert_one_clean_line(err.encode())
    status, _, err = mail_alias(tmp_path, "add", "x", "a@example.com\r\nBcc: evil@example.com")
    assert status == 65
    assert_one_clean_line(err.encode())
    assert rc.read_text() == REAL_LOOKING


def test_removing_a_missing_alias_is_67_with_close_names(tmp_path: Path, rc: Path) -> None:
    status, _, err = mail_alias(tmp_path, "remove", "teams")
    assert status == 67
    line = assert_one_clean_line(err.encode())
    assert line == f"mail-alias: {rc}: no alias 'teams' in this file; did you mean: team?"
    assert rc.read_text() == REAL_LOOKING


def test_usage_error_is_64(tmp_path: Path) -> None:
    status, _, err = mail_alias(tmp_path, "list", "extra", "words")
    assert status == 64
    assert_one_clean_line(err.encode())


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="mail-alias-e2e-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_unwritable_file_is_73_with_the_path(shared_dir: Path) -> None:
    rc = shared_dir / "mail.rc"
    rc.write_text(REAL_LOOKING)
    rc.chmod(0o644)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(shared_dir), "MAILX_NO_SYSTEM_RC": "1"}
    argv = [unprivileged_command("mail-alias"), "--file", str(rc), "add", "x", "x@example.com"]
    if os.geteuid() == 0:  # root may write anything: be somebody else
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    else:
        rc.chmod(0o444)
    result = subprocess.run(argv, capture_output=True, env=env, check=False)
    assert result.returncode == 73, result.stderr
    line = assert_one_clean_line(result.stderr)
    assert line.startswith(f"mail-alias: {rc}: ")
    assert rc.read_text() == REAL_LOOKING
    assert sorted(p.name for p in shared_dir.iterdir()) == ["mail.rc"]


def test_unwritable_directory_is_73_with_the_path(tmp_path: Path) -> None:
    target = "/proc/mail-alias-test.rc"  # nobody, not even root, creates files in /proc
    status, _, err = mail_alias(tmp_path, "--file", target, "add", "x", "x@example.com")
    assert status == 73
    line = assert_one_clean_line(err.encode())
    assert line.startswith(f"mail-alias: {target}: cannot create a file in /proc")


def test_twenty_concurrent_adds_all_land(tmp_path: Path, rc: Path) -> None:
    def add(number: int) -> int:
        if number % 2:
            args = ["add", f"host{number}", f"Host {number} <host{number}@example.com>"]
        else:
            args = ["add", "team", f"member{number}@example.com"]
        return run("mail-alias", args, home=tmp_path).returncode

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(add, range(20)))
    assert statuses == [0] * 20
    aliases = evaluate([read_rc(str(rc))], environ={}).aliases
    for number in range(1, 20, 2):
        assert [m.text for m in aliases[f"host{number}"]] == [
            f"Host {number}<host{number}@example.com>"
        ]
    team = {m.text for m in aliases["team"]}
    assert {f"member{n}@example.com" for n in range(0, 20, 2)} <= team
    assert rc.read_text().startswith(REAL_LOOKING.split("alias team")[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mailrc"]


def test_the_front_ends_parser_reads_what_mail_alias_wrote(tmp_path: Path, rc: Path) -> None:
    for args in (
        ["add", "archuser", "My Name <someone@example.com>"],
        ["add", "odd", "O'Brien, Pat <pat@example.com>", '"Jo \\"JJ\\" Smith" <jo@example.com>'],
        ["add", "team", "archuser"],
    ):
        assert mail_alias(tmp_path, *args)[0] == 0
    loaded = evaluate([read_rc(str(rc))], environ={})
    assert [(r.header, r.envelope) for r in expand_recipients(["archuser", "odd"], loaded)] == [
        ("My Name <someone@example.com>", "someone@example.com"),
        ('"O\'Brien, Pat" <pat@example.com>', "pat@example.com"),
        ('"Jo \\"JJ\\" Smith" <jo@example.com>', "jo@example.com"),
    ]
    assert [r.envelope for r in expand_recipients(["team"], loaded)][-1] == "someone@example.com"


def recorder(directory: Path) -> Path:
    """An MTA that records its argv (one per line) and the message."""
    script = directory / "mta"
    script.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do printf "%s\\n" "$a"; done > {directory}/argv\n'
        f"cat > {directory}/message\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.skipif(shutil.which("s-nail") is None, reason="s-nail is not installed")
def test_real_snail_reads_what_mail_alias_wrote(tmp_path: Path, rc: Path) -> None:
    assert mail_alias(tmp_path, "add", "archuser", "My Name <someone@example.com>")[0] == 0
    assert mail_alias(tmp_path, "add", "odd", "O'Brien, Pat <pat@example.com>")[0] == 0
    mta = recorder(tmp_path)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LC_ALL": "C.UTF-8",
        "MAILX_NO_SYSTEM_RC": "1",
        "MAILRC": str(rc),
    }
    result = subprocess.run(
        ["s-nail", "-S", f"mta={mta}", "-S", "sendwait", "-s", "x", "archuser", "odd"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[argv.index("--") + 1 :] == ["someone@example.com", "pat@example.com"]
    message = (tmp_path / "message").read_text()
    assert 'To: My Name <someone@example.com>, "O\'Brien, Pat" <pat@example.com>' in message


@pytest.mark.skipif(
    importlib.util.find_spec("mailx.cli") is None, reason="the mail front end is not built yet"
)
def test_mail_reads_what_mail_alias_wrote(tmp_path: Path, rc: Path) -> None:
    """`mail` expands the alias into the envelope and the To header (mail(1))."""
    assert mail_alias(tmp_path, "add", "archuser", "My Name <someone@example.com>")[0] == 0
    mta = recorder(tmp_path)
    result = run(
        "mail",
        ["-S", f"mta={mta}", "-s", "subj", "archuser"],
        home=tmp_path,
        stdin=b"body\n",
        env={"MAILRC": str(rc)},
    )
    assert result.returncode == 0, result.stderr
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[argv.index("--") + 1 :] == ["someone@example.com"]
    assert "To: My Name <someone@example.com>" in (tmp_path / "message").read_text()
