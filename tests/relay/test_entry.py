"""relay.entry.run: the one exception ladder every command runs through (in-process).

The closed-stream cases need a process whose descriptors were closed before Python
started: they run the installed commands in tests/e2e/test_streams.py, and a bare
interpreter here.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from relay.entry import run
from relay.errors import (
    CantCreateError,
    InternalError,
    NoUserError,
    RelayError,
    TempFailError,
    UsageError,
)


@pytest.fixture(autouse=True)
def no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILX_RELAY_DEBUG", raising=False)


def raising(err: BaseException) -> Callable[[list[str]], int]:
    def main(args: list[str]) -> int:
        raise err

    return main


def test_explicit_argv_is_passed_and_the_status_returned() -> None:
    seen: list[list[str]] = []

    def main(args: list[str]) -> int:
        seen.append(args)
        return 3

    assert run("prog", main, ("a", "-b")) == 3
    assert seen == [["a", "-b"]]


def test_a_relay_error_is_one_line_with_its_status(capsys: pytest.CaptureFixture[str]) -> None:
    err = TempFailError("temporary refusal at MAIL FROM", step="MAIL FROM", reply="451 later")
    assert run("prog", raising(err), []) == os.EX_TEMPFAIL
    assert capsys.readouterr().err == (
        "prog: temporary refusal at MAIL FROM (server said: 451 later)\n"
    )


def test_the_hint_and_the_kept_message_are_printed(capsys: pytest.CaptureFixture[str]) -> None:
    err = NoUserError("no alias 'teem'", path="/home/u/.mailrc", hint="did you mean: team?")
    err.saved_to = "/home/u/dead.letter"
    assert run("mail", raising(err), []) == os.EX_NOUSER
    assert capsys.readouterr().err == (
        "mail: /home/u/.mailrc: no alias 'teem'; did you mean: team?; "
        "message kept in /home/u/dead.letter\n"
    )


def test_a_usage_error_prints_the_usage_after_the_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = UsageError("unknown option -Z")
    err.usage = "usage: prog [-x] ADDR..."
    assert run("prog", raising(err), []) == os.EX_USAGE
    assert capsys.readouterr().err == "prog: unknown option -Z\nusage: prog [-x] ADDR...\n"


def test_interrupted_is_130(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("prog", raising(KeyboardInterrupt()), []) == 130
    assert capsys.readouterr().err == "prog: interrupted\n"


def lookup_with_a_password(table: dict[str, str]) -> int:
    password = "hunter2-secret"  # a local variable a traceback must never show
    return len(table[password[:0] + "x"])


def buggy(args: list[str]) -> int:
    return lookup_with_a_password({})


def test_a_bug_is_one_line_and_70_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run("prog", buggy, []) == os.EX_SOFTWARE
    assert capsys.readouterr().err == (
        "prog: internal error: KeyError: 'x' (run with MAILX_RELAY_DEBUG=1 for details)\n"
    )


def test_debug_prints_the_traceback_and_never_a_local_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILX_RELAY_DEBUG", "1")
    assert run("prog", buggy, []) == os.EX_SOFTWARE
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n")
    assert "in lookup_with_a_password" in err  # where the bug is
    assert "hunter2-secret" not in err
    assert err.endswith("\nprog: internal error: KeyError: 'x'\n")


def test_debug_shows_where_a_wrapped_bug_came_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """sendmail keeps the message after a bug and raises InternalError: the traceback
    is the bug's, not the wrapper's."""

    def main(args: list[str]) -> int:
        try:
            buggy(args)
        except Exception as bug:
            raise InternalError(bug) from bug
        return 0

    monkeypatch.setenv("MAILX_RELAY_DEBUG", "1")
    assert run("sendmail", main, []) == os.EX_SOFTWARE
    err = capsys.readouterr().err
    assert "in lookup_with_a_password" in err
    assert err.splitlines()[-1] == "sendmail: internal error: KeyError: 'x'"


def test_a_broken_pipe_that_is_not_stdout_is_a_bug(capsys: pytest.CaptureFixture[str]) -> None:
    """Standard output is fine (pytest's capture file): the pipe that broke is some
    other one, and that is worth a line, not silence."""
    assert run("prog", raising(BrokenPipeError(32, "Broken pipe")), []) == os.EX_SOFTWARE
    assert "internal error: BrokenPipeError" in capsys.readouterr().err


@contextlib.contextmanager
def stdout_reader_gone() -> Iterator[None]:
    """fd 1 is a pipe whose reader has gone (`mailq | head`), inside the `with` only
    (pytest puts its own capture file on fd 1 between a fixture and the test)."""
    sys.stdout.flush()
    saved = os.dup(1)
    reader, writer = os.pipe()
    os.close(reader)
    os.dup2(writer, 1)
    os.close(writer)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def test_stdout_reader_gone_is_74_and_silent(capsys: pytest.CaptureFixture[str]) -> None:
    def main(args: list[str]) -> int:
        os.write(1, b"Mail queue is empty\n")
        return 0

    with stdout_reader_gone():
        assert run("mailq", main, []) == os.EX_IOERR
        os.write(1, b"after: /dev/null now, no error\n")
    assert capsys.readouterr() == ("", "")


class Unwritable(io.StringIO):
    """A standard error that cannot be written: a closed pipe."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_stderr_that_cannot_be_written_never_changes_the_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = Unwritable()
    monkeypatch.setattr(sys, "stderr", broken)

    def delivered(args: list[str]) -> int:
        sys.stderr.write("sendmail: queued as 1234: mailhub down\n")
        sys.stderr.flush()
        return 0

    assert run("sendmail", delivered, []) == 0
    assert run("sendmail", raising(CantCreateError("dead.letter: no space")), []) == 73
    assert sys.stderr is broken  # put back after an in-process run


class Full(io.StringIO):
    """A standard output on a full disk (`mailq > /dev/full`)."""

    def flush(self) -> None:
        raise OSError(28, "No space left on device")


def test_stdout_that_cannot_be_written_is_74_and_said(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    full = Full()
    monkeypatch.setattr(sys, "stdout", full)

    def listing(args: list[str]) -> int:
        sys.stdout.write("Mail queue is empty\n")
        return 0

    assert run("mailq", listing, []) == os.EX_IOERR
    assert capsys.readouterr().err == (
        "mailq: cannot write standard output: No space left on device\n"
    )
    assert sys.stdout is full


def test_keep_error_decides_status_and_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    err = NoUserError("RCPT TO: every recipient refused", step="RCPT TO", code=550)
    err.keep_error = CantCreateError("cannot create", path="/home/u/dead.letter")
    assert run("sendmail", raising(err), []) == os.EX_CANTCREAT
    assert capsys.readouterr().err == (
        "sendmail: RCPT TO: every recipient refused; and the message could not be kept: "
        "/home/u/dead.letter: cannot create\n"
    )


def test_a_bare_relay_error_is_a_bug(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("prog", raising(RelayError("should have been a subclass")), []) == 70


# -- closed standard streams: a fresh interpreter started with them closed ---------------

PROBE = """\
import os, sys
from relay.entry import run, stdin_was_closed
def main(args):
    os.write(3, f"{sys.stdout is not None} {sys.stderr is not None} {stdin_was_closed()}\\n"
             .encode())
    # a file opened now must not land on a standard descriptor
    fd = os.open(os.devnull, os.O_RDONLY)
    os.write(3, f"{fd}\\n".encode())
    print("to stdout")
    print("to stderr", file=sys.stderr)
    return 0
sys.exit(run("probe", main, []))
"""


@pytest.mark.parametrize("closed", ["<&-", ">&-", "2>&-", "<&- >&- 2>&-"])
def test_closed_descriptors_get_devnull_before_anything_runs(closed: str) -> None:
    """`exec 3>&1`: the probe reports on fd 3, whatever happened to 0, 1 and 2."""
    done = subprocess.run(
        ["sh", "-c", f'exec "$0" -c "$1" 3>&1 {closed}', sys.executable, PROBE],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    # The probe's own lines come first: "to stdout" is buffered until the end.
    streams, fd, *_ = done.stdout.decode().splitlines()
    assert streams == f"True True {'<&-' in closed}"
    assert int(fd) > 3


@pytest.mark.parametrize("debug", [None, "1"])
def test_as_a_console_script_the_process_ends_with_the_status(debug: str | None) -> None:
    """argv None: sys.argv[1:] is used and `finish` ends the process with the status."""
    code = (
        "import sys\n"
        "from relay.entry import run\n"
        "def main(args):\n"
        "    assert args == ['--x'], args\n"
        "    return 1 // 0\n"
        "run('prog', main)\n"
        "print('not reached', file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MAILX_RELAY_DEBUG"}
    if debug:
        env["MAILX_RELAY_DEBUG"] = debug
    done = subprocess.run(
        [sys.executable, "-c", code, "--x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == os.EX_SOFTWARE
    assert "not reached" not in done.stderr
    assert ("Traceback (most recent call last)" in done.stderr) == bool(debug)
    assert done.stderr.splitlines()[-1].startswith(
        "prog: internal error: ZeroDivisionError: integer division or modulo by zero"
    )
