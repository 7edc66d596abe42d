"""The relay's error tree: every failure the relay can report, and its sysexits status.

Exit statuses are decided here and nowhere else: `STATUS` maps each error class to its
status, and `status_of` adds the few rules that depend on an error's data (the message
could not be kept; an external mta's own status). Commands raise these errors and
`relay.entry.run` turns them into one line on stderr and the status; a command that
reports several problems and goes on takes its status from `status_for(kind)`.

Each error carries structured fields instead of text to parse: the file and line of a
config error, the SMTP step, reply and reply code of a delivery error, the cycle of an
alias loop, where the message was kept. `str(err)` is the error itself (where, what,
the server's reply, what to do next); `err.describe()` is the whole one-line report a
command prints: that, and what became of the message.

Messages never contain a secret: code that raises these must pass only names and
redacted text.
"""

from __future__ import annotations

import os

#: Set to 1 in the environment to get the traceback of an internal error on stderr.
DEBUG_VARIABLE = "MAILX_RELAY_DEBUG"


def debugging() -> bool:
    """True when MAILX_RELAY_DEBUG asks for tracebacks."""
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


class RelayError(Exception):
    """Base of every error the relay reports; `exit_code` is its sysexits status.

    A bare `RelayError` is a bug (EX_SOFTWARE); raise a subclass for anything expected.
    """

    #: dead.letter file the message was appended to, once the relay has kept it.
    saved_to: str | None = None
    #: Why keeping the message in dead.letter failed too: the message is nowhere, and
    #: the status is that failure's (it says what the user must fix first).
    keep_error: RelayError | None = None
    #: For a partial delivery: the `relay.submission.Result` of what was accepted.
    result: object | None = None

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        step: str | None = None,
        reply: str | None = None,
        code: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        #: The SMTP step that failed (`RCPT TO`, `AUTH`...), the server's reply as
        #: printable text and its reply code, for callers that classify without parsing.
        self.step = step
        self.reply = reply
        #: The SMTP reply code behind `reply` (None when the server gave no reply).
        self.code = code
        self.hint = hint

    @property
    def exit_code(self) -> int:
        """The sysexits status this error ends a command with (see `status_of`)."""
        return status_of(self)

    def __str__(self) -> str:
        """Where, what, the server's reply and what to do next: the error itself, for
        embedding in other text (a queue entry's last error, a `-bv` line)."""
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        text = where + self.message + self._note()
        if self.reply:
            text += f" (server said: {self.reply})"
        if self.hint:
            text += f"; {self.hint}"
        return text

    def describe(self) -> str:
        """The full one-line report a command prints: `str(err)` and what became of the
        message (kept where, or why it could not be kept)."""
        parts = [str(self)]
        if self.keep_error is not None:
            parts.append(f"and the message could not be kept: {self.keep_error}")
        elif self.saved_to:
            parts.append(f"message kept in {self.saved_to}")
        return "; ".join(parts)

    def _note(self) -> str:
        return ""


class UsageError(RelayError):
    """Bad flags or no recipient at all."""

    #: The command's usage text, printed after the error line when set.
    usage: str | None = None


class DataError(RelayError):
    """Malformed message or address, alias loop, header injection attempt."""


class TooBigError(DataError):
    """The message passed `MaxMessageSize` (relay.conf(5)): reading stopped at `limit`
    octets and nothing was sent. `partial` is what was read up to the limit (bytes, or a
    `relay.message.Spooled` copy), for dead.letter, which says it is truncated.

    65, not 73: the input is what is wrong (as for a malformed message), retrying it
    cannot help, and 73/74 mean that the queue or dead.letter could not be written.
    """

    def __init__(self, message: str, *, limit: int, partial: object = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.partial = partial

    def describe(self) -> str:
        text = super().describe()
        if self.keep_error is None and self.saved_to and self.partial is not None:
            text += f" (truncated at {self.limit} bytes)"
        return text


class AliasLoopError(DataError):
    """Aliases that expand into each other: `cycle` is the chain, first name repeated
    at the end (`("a", "b", "a")`)."""

    def __init__(
        self, cycle: tuple[str, ...], *, path: str | None = None, line: int | None = None
    ) -> None:
        super().__init__(f"alias loop: {' -> '.join(cycle)}", path=path, line=line)
        self.cycle = cycle


class NoInputError(RelayError):
    """An input file (attachment, quote file) is missing or unreadable, or standard
    input is closed when a message must be read from it."""


class NoUserError(RelayError):
    """A local name that resolves nowhere, or a recipient the server refused with 5xx."""


class MissingFileError(NoUserError):
    """The file an edit must change (`mail-alias remove`, `rename`) does not exist: so
    neither does the alias the user named. `path` is the file."""


class UnavailableError(RelayError):
    """A permanent refusal: 5xx, no usable AUTH, a password that would go out in clear;
    or an external mta that cannot be run."""


class TempFailError(RelayError):
    """A temporary failure (4xx, unreachable, timeout): worth trying again later."""


class TLSFailure(TempFailError):
    """TLS could not be set up as configured: a certificate that fails verification or
    does not match `TLSFingerprint`, or a STARTTLS the server does not offer.

    Temporary, as Postfix defers these: nothing was sent, and a hub whose certificate
    lapses for an hour (or whose STARTTLS is off during maintenance) must not stop mail
    for good. It says nothing against the message, so the queue does not back off for it
    more than for a hub that is down (`relay.queue.blames_message`).
    """


class ProtocolError(RelayError):
    """The server broke the SMTP protocol."""


class NoPermError(RelayError):
    """AUTH rejected, or a secret readable by others under StrictPermissions."""


class ConfigError(RelayError):
    """Configuration missing, unreadable or malformed."""

    #: The errno when a file could not be opened (EACCES: hand off to the system relay).
    errno: int | None = None


class CantCreateError(RelayError):
    """Cannot create the queue entry or dead.letter file."""


class IOFailure(RelayError):
    """An I/O error while writing the queue or dead.letter (disk full, EIO)."""


class OutputClosedError(IOFailure):
    """Standard output's reader went away (`mailq | head`): nothing left to report to."""


class MtaFailedError(RelayError):
    """An external mta (`set mta=/usr/sbin/sendmail` in mail.rc) ran and failed:
    `mta_status` is its exit status (negative: killed by that signal)."""

    def __init__(self, message: str, *, mta_status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.mta_status = mta_status


class InternalError(RelayError):
    """A bug: an exception nobody expected, reported as one line. `bug` is the original
    exception, whose traceback MAILX_RELAY_DEBUG=1 prints."""

    def __init__(self, bug: BaseException) -> None:
        super().__init__(f"internal error: {type(bug).__name__}: {bug}")
        self.bug = bug

    def _note(self) -> str:
        return "" if debugging() else f" (run with {DEBUG_VARIABLE}=1 for details)"


#: Not an error of ours: the user pressed ^C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130


class Interrupted(RelayError):
    """Stopped on purpose by a signal (`mail`'s draft after a second ^C, or a hangup):
    128 + the signal's number, as a shell reports it."""

    def __init__(self, message: str, *, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


#: The one table of exit statuses (sysexits), by error class; a class not listed has
#: the status of its nearest listed base. Documented in the EXIT STATUS section of
#: sendmail(8), mailq(1), mail(1) and mail-alias(1).
STATUS: dict[type[RelayError], int] = {
    RelayError: os.EX_SOFTWARE,
    UsageError: os.EX_USAGE,
    DataError: os.EX_DATAERR,
    NoInputError: os.EX_NOINPUT,
    NoUserError: os.EX_NOUSER,
    UnavailableError: os.EX_UNAVAILABLE,
    TempFailError: os.EX_TEMPFAIL,
    ProtocolError: os.EX_PROTOCOL,
    NoPermError: os.EX_NOPERM,
    ConfigError: os.EX_CONFIG,
    CantCreateError: os.EX_CANTCREAT,
    IOFailure: os.EX_IOERR,
    InternalError: os.EX_SOFTWARE,
}


def status_for(kind: type[RelayError]) -> int:
    """The exit status of an error class (for a command that reports a problem and goes
    on, and exits with the status of the first one at the end)."""
    for cls in kind.__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return os.EX_SOFTWARE


def status_of(err: RelayError) -> int:
    """The exit status of `err`: its class's, except where its data decides."""
    if err.keep_error is not None:
        # The message is nowhere: the status names what stopped keeping it.
        return err.keep_error.exit_code
    if isinstance(err, Interrupted):
        return 128 + err.signal_number
    if isinstance(err, MtaFailedError):
        # The mta's own status (sysexits, like ours), unless it died of a signal.
        return err.mta_status if 0 < err.mta_status < 256 else os.EX_SOFTWARE
    return status_for(type(err))


def is_temporary(err: RelayError) -> bool:
    """True when trying again later may succeed (the queue's policy question)."""
    return isinstance(err, TempFailError | ProtocolError)
