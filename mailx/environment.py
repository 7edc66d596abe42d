"""What `mail` takes from the process it runs in, as one value handed down the pipeline.

The pipeline (`mailx.cli.run`) reads stdin, writes stdout and stderr, looks at the
environment variables, asks whether stdin is a terminal, reads the clock and finds the
home directory only through an `Environment`, so a test can run `mailx.cli.main(argv,
env)` in-process with its own streams and variables, as `mailx.tilde.Hooks` lets a test
drive compose. `Environment.from_process()` is the real one; it is built when `main`
is called, never at import time (a test may have replaced `sys.stdin` by then).

A `relay.records.Record` (`replace` makes a changed copy), neither a dataclass nor a
NamedTuple: `dataclasses` (and the `inspect` it imports) or `typing` would cost every
`mail` a good part of its start-up, usage errors included.
"""

from __future__ import annotations

import os
import sys

from relay.records import Record

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import BinaryIO, TextIO

PROG = "mail"


class Environment(Record):
    """The edges of the operating system `mail` uses."""

    __slots__ = ("clock", "environ", "home", "isatty", "stderr", "stdin", "stdout")

    #: The body (or the template of `-t`, or the typed lines of a compose), as bytes.
    stdin: BinaryIO
    #: Compose's prompt and the output of `~p`, `~?` and escape errors.
    stdout: TextIO
    #: Diagnostics, `-d`'s message and `-v`'s SMTP dialogue.
    stderr: TextIO
    #: Environment variables: $HOME, $MAILRC, $RELAY_CONFIG, $EDITOR, ... Also the
    #: environment of the programs `mail` runs (`mta`, the editor, `~!`).
    environ: Mapping[str, str]
    #: Whether stdin is a terminal: an interactive compose, and mail.rc's `terminal`.
    isatty: bool
    #: Seconds since the epoch: the message's Date.
    clock: Callable[[], float]
    #: The home directory: `~/.mailrc`, `~/dead.letter`, and `~` in the variables.
    home: str

    def __init__(
        self,
        stdin: BinaryIO,
        stdout: TextIO,
        stderr: TextIO,
        environ: Mapping[str, str],
        isatty: bool,
        clock: Callable[[], float],
        home: str,
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.environ = environ
        self.isatty = isatty
        self.clock = clock
        self.home = home

    @classmethod
    def from_process(cls) -> Environment:
        """This process's streams, `os.environ`, the system clock and the user's home."""
        import time

        from mailx.mailrc import home_directory

        try:
            isatty = sys.stdin.isatty()
        except (AttributeError, ValueError):  # closed, or a stream with no file behind it
            isatty = False
        return cls(
            stdin=sys.stdin.buffer,
            stdout=sys.stdout,
            stderr=sys.stderr,
            environ=os.environ,
            isatty=isatty,
            clock=time.time,
            home=home_directory(os.environ),
        )

    def say(self, text: str) -> None:
        """One line on stderr, prefixed with the program name."""
        self.stderr.write(f"{PROG}: {text}\n")
        self.stderr.flush()

    def expand_user(self, path: str) -> str:
        """`~` and `~/...` against `home`; `~user` through the password database."""
        if path == "~" or path.startswith("~/"):
            return self.home + path[1:]
        return os.path.expanduser(path)
