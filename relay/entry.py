"""One entry wrapper for every command: `sendmail`, `mailq`, `mail` and `mail-alias`.

    def main() -> int:
        return run("mailq", _main)        # the console script
    run("mailq", _main, ["--json"])       # in-process (tests): returns the status

A command's own code parses argv and returns a status or raises; `run` owns everything
around it, once, the same for every command:

- standard streams closed by the caller (`sendmail <&- >&- 2>&-`, as GNU mailutils'
  `mail` runs its mta with stdout closed): /dev/null is opened on the closed descriptor
  before anything else runs, so that no socket or file opened later lands on fd 1 or 2
  and receives our output, and writing to stdout or stderr cannot crash a delivery that
  succeeded (the sender would see a failure and send again: duplicates). A closed stdin
  is remembered (`stdin_was_closed`), so that `sendmail` refuses to read a message there.
- standard error that cannot be written (a closed pipe, a full disk) is ignored: a
  diagnostic that cannot be shown must never change a status that reports a delivery.
  Standard output that cannot be written is an `IOFailure` (74) saying so, not a bug.
- the one exception ladder: a `RelayError` is one line (`err.describe()`) and its status
  from `relay.errors`; ^C is 130; standard output's reader gone (`mailq | head`) is 74,
  silently; anything else is a bug: one line and 70, the traceback only with
  MAILX_RELAY_DEBUG=1 (never local variables: they may hold a password).

This module is imported by every command's start-up: it imports nothing beyond `os`,
`sys` (both loaded by the interpreter's own start-up; not `contextlib`, whose import
brings `collections`, `functools` and `operator`) and the error tree at
module level (see tests/relay/test_startup_imports.py).
"""

from __future__ import annotations

import os
import sys

from relay.errors import (
    INTERRUPTED,
    InternalError,
    IOFailure,
    OutputClosedError,
    RelayError,
    UsageError,
    debugging,
    status_for,
)

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TextIO

#: The standard descriptors that were closed when this process started; None until
#: `mend_standard_streams` has run (once per process).
_closed_at_start: frozenset[int] | None = None


def run(prog: str, main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run the command `main` and return its exit status.

    `argv` None means "called as the console script": the arguments are sys.argv[1:]
    and the process ends here (`finish`). With an explicit `argv` the status is
    returned, and sys.stdout and sys.stderr are as they were.
    """
    mend_standard_streams()
    console = argv is None
    args = sys.argv[1:] if argv is None else list(argv)
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = _CheckedStream(stdout)
    sys.stderr = _QuietStream(stderr)
    try:
        status = _ladder(prog, main, args)
    finally:
        if not console:
            sys.stdout, sys.stderr = stdout, stderr
    if console:
        finish(status)
    return status


def _ladder(prog: str, main: Callable[[list[str]], int], args: list[str]) -> int:
    try:
        status = main(args)
        # What is still buffered is written here, inside the ladder, so that a reader
        # gone away is reported like any other failure to write standard output.
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        say(prog, "interrupted")
        return INTERRUPTED
    except BrokenPipeError as err:
        if _stdout_reader_gone():  # `mailq | head`: nothing wrong, nobody to tell
            return reader_gone()
        return report(prog, InternalError(err))
    except RelayError as err:
        return report(prog, err)
    except Exception as err:
        return report(prog, InternalError(err))


def usage_on_error(usage: str) -> _UsageOnError:
    """`with usage_on_error(USAGE): opts = parse_args(args)`: a UsageError raised inside
    is printed with the command's usage text after its line (unless it carries its own)."""
    return _UsageOnError(usage)


class _UsageOnError:
    """A plain context manager class: `contextlib` (and the `collections`, `functools`
    and `operator` it imports) is not loaded on the short paths for this alone."""

    __slots__ = ("usage",)

    def __init__(self, usage: str) -> None:
        self.usage = usage

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, err: BaseException | None, trace: object) -> None:
        if isinstance(err, UsageError) and err.usage is None:
            err.usage = self.usage
        # None: the error goes on, now with the usage text


def print_version(prog: str) -> int:
    """`-V`: `mailx-relay PROG VERSION` on stdout; the status to exit with."""
    from relay import __version__

    sys.stdout.write(f"mailx-relay {prog} {__version__}\n")
    return os.EX_OK


def say(prog: str, text: str, stream: TextIO | None = None) -> None:
    """One line `prog: text` on `stream` (stderr by default), flushed at once."""
    out = sys.stderr if stream is None else stream
    out.write(f"{prog}: {text}\n")
    out.flush()


def report(prog: str, err: RelayError) -> int:
    """Say `err` on stderr as the command `prog` (one line; with MAILX_RELAY_DEBUG=1 the
    traceback before it) and return its exit status."""
    if debugging():
        import traceback

        shown = err.bug if isinstance(err, InternalError) else err
        # No `capture_locals`: a frame's variables may hold a password.
        traceback.print_exception(shown, file=sys.stderr)
    say(prog, err.describe())
    if isinstance(err, UsageError) and err.usage:
        sys.stderr.write(err.usage + "\n")
        sys.stderr.flush()
    return err.exit_code


# -- the standard streams ------------------------------------------------------------------


def mend_standard_streams() -> frozenset[int]:
    """Open /dev/null on each of fd 0, 1, 2 that is closed, and give Python a stream on
    it where it has none (it sets sys.stdout to None when fd 1 was closed at start).
    Runs once per process; returns the descriptors that were closed."""
    global _closed_at_start
    if _closed_at_start is not None:
        return _closed_at_start
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:  # EBADF: nothing open on it
            closed.add(fd)
            _open_devnull_on(fd)
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            setattr(sys, name, _text_stream(fd))
    _closed_at_start = frozenset(closed)
    return _closed_at_start


def stdin_was_closed() -> bool:
    """True when the process started with fd 0 closed (`sendmail <&-`): standard input
    is /dev/null now, and reading a message from it would send an empty one."""
    return 0 in mend_standard_streams()


def _open_devnull_on(fd: int) -> None:
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:  # no /dev/null (a bare chroot): writes there fail, and are ignored
        return
    if null != fd:
        os.dup2(null, fd)
        os.close(null)
    # Programs we run (AuthPassCommand, an mta) inherit it as theirs, as a shell would.
    os.set_inheritable(fd, True)


def _text_stream(fd: int) -> TextIO:
    """A text stream on `fd` as Python would have made it (stderr line-buffered, and
    escaping what it cannot encode); it lives as long as the process."""
    if fd == 0:
        return open(fd, closefd=False)
    if fd == 1:
        return open(fd, "w", closefd=False)
    return open(fd, "w", buffering=1, errors="backslashreplace", closefd=False)


def _stdout_reader_gone() -> bool:
    """True when fd 1 is a pipe or socket whose reader has gone: a BrokenPipeError from
    anywhere else (a pipe to a program we run) is a failure to report, not silence."""
    import select

    try:
        poller = select.poll()
        poller.register(1, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError):
        return True
    return any(mask & (select.POLLERR | select.POLLHUP) for _fd, mask in events)


def reader_gone() -> int:
    """The reader of our output went away (`mailq | head`): nothing to report to, so
    point stdout at /dev/null (the exit flush cannot fail again) and exit EX_IOERR."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return status_for(OutputClosedError)
    os.dup2(null, 1)
    os.close(null)
    return status_for(OutputClosedError)


def finish(status: int) -> int:
    """End the process now with `status`: flush stdout and stderr, then leave without the
    interpreter's teardown (freeing every module and object costs each cron job's
    `sendmail` several milliseconds). Safe because everything the commands write (queue,
    dead.letter, log) goes through `os` calls and is closed or fsynced by then, and no
    atexit handler is registered. A flush that fails here loses only text nobody can
    read (`run` has already flushed stdout inside its ladder); it never changes `status`.
    """
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (not contextlib: see the module's imports)
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(status)


class _QuietStream:
    """Standard error that never raises: a line that cannot be written (stderr closed
    by a reader gone away, a full disk) is lost, and the command's status stays what its
    outcome makes it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def writelines(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:  # noqa: SIM105 (not contextlib: see the module's imports)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _CheckedStream:
    """Standard output whose write failures say what failed: `mailq > /dev/full` is
    "cannot write standard output: No space left on device" and 74, not a bug. A reader
    gone away stays a BrokenPipeError, which the ladder answers with silence."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise _unwritable(err) from err

    def writelines(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise _unwritable(err) from err

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _unwritable(err: OSError) -> IOFailure:
    return IOFailure(f"cannot write standard output: {err.strerror or err}")
