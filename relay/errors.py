"""The relay's error tree: every failure the relay can report, each with its sysexits code.

Exit codes are decided here and nowhere else (DESIGN section 6): a caller catches
`RelayError` and exits with `err.exit_code`. Each error carries structured fields (the
file and line of a config error, the SMTP step and server reply of a delivery error) so
the one-line message on stderr says what failed, where, and what to do next.

Messages never contain a secret: code that raises these must pass only names and
redacted text.
"""

from __future__ import annotations

import os


class RelayError(Exception):
    """Base of every error the relay reports; `exit_code` is a sysexits value."""

    exit_code: int = os.EX_SOFTWARE
    #: dead.letter file the message was appended to, once the relay has kept it.
    saved_to: str | None = None
    #: For a partial delivery: the `relay.submit.Result` of what was accepted.
    result: object | None = None

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        step: str | None = None,
        reply: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.step = step
        self.reply = reply
        self.hint = hint

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        text = where + self.message
        if self.reply:
            text += f" (server said: {self.reply})"
        return text


class UsageError(RelayError):
    """Bad flags or no recipient at all."""

    exit_code = os.EX_USAGE


class DataError(RelayError):
    """Malformed message or address, alias loop, header injection attempt."""

    exit_code = os.EX_DATAERR


class NoInputError(RelayError):
    """An input file (attachment, quote file) is missing or unreadable."""

    exit_code = os.EX_NOINPUT


class NoUserError(RelayError):
    """A local name that resolves nowhere, or a recipient the server refused with 5xx."""

    exit_code = os.EX_NOUSER


class UnavailableError(RelayError):
    """A permanent refusal: 5xx, STARTTLS missing, certificate rejected, no usable AUTH."""

    exit_code = os.EX_UNAVAILABLE


class TempFailError(RelayError):
    """A temporary failure (4xx, unreachable, timeout): worth trying again later."""

    exit_code = os.EX_TEMPFAIL


class ProtocolError(RelayError):
    """The server broke the SMTP protocol."""

    exit_code = os.EX_PROTOCOL


class NoPermError(RelayError):
    """AUTH rejected, or a secret readable by others under StrictPermissions."""

    exit_code = os.EX_NOPERM


class ConfigError(RelayError):
    """Configuration missing, unreadable or malformed."""

    exit_code = os.EX_CONFIG
    #: The errno when a file could not be opened (EACCES: hand off to the system relay).
    errno: int | None = None


class CantCreateError(RelayError):
    """Cannot create the queue entry or dead.letter file."""

    exit_code = os.EX_CANTCREAT


class IOFailure(RelayError):
    """An I/O error while writing the queue or dead.letter (disk full, EIO)."""

    exit_code = os.EX_IOERR


def is_temporary(err: RelayError) -> bool:
    """True when trying again later may succeed (the queue's policy question)."""
    return isinstance(err, TempFailError | ProtocolError)
