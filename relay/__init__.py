"""mailx-relay's relay: the public API the `mail` front end calls in-process.

    import relay
    config = relay.load_config()            # ssmtp.conf + revaliases, relay.conf(5)
    result = relay.submit(message, relay.Envelope(["archuser"]), config=config)

`submit` delivers the message now, or queues it durably (`Queue=`; `Result.queued_id`),
or keeps it in dead.letter and raises a `RelayError` whose `exit_code` is the sysexits
status and whose `saved_to` names where the message went. The envelope's fields may
also be given as keywords (`recipients=`, `envelope_from=`, `full_name=`, `identity=`).
A caller holding its own SMTP session uses `prepare` and `deliver` (a `Verdict`).
Names are imported lazily: importing `relay` costs nothing of `email`, `ssl` or `smtplib`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relay.errors import (
    CantCreateError,
    ConfigError,
    DataError,
    IOFailure,
    NoInputError,
    NoPermError,
    NoUserError,
    ProtocolError,
    RelayError,
    TempFailError,
    UnavailableError,
    UsageError,
)

__version__ = "0.1.0"


def finish(status: int) -> int:
    """End a command now with `status`: flush stdout and stderr, then leave without the
    interpreter's teardown (freeing every module and object costs each cron job's
    `sendmail` several milliseconds). Safe because everything the commands write (queue,
    dead.letter, log) goes through `os` calls and is closed or fsynced by then, and no
    atexit handler is registered. Returns only when a flush fails (a closed pipe): the
    caller then exits the ordinary way, which reports it.
    """
    import os
    import sys

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return status
    os._exit(status)


def reader_gone() -> int:
    """The reader of our output went away (`mailq | head`): nothing to report to, so
    point stdout at /dev/null (the exit flush cannot fail again) and exit EX_IOERR."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return os.EX_IOERR


if TYPE_CHECKING:
    from relay.aliases import Expanded, expand
    from relay.config import Config
    from relay.config import load as load_config
    from relay.credentials import resolve as resolve_password
    from relay.deadletter import save as save_dead_letter
    from relay.delivery import Verdict, deliver
    from relay.envelope import Envelope, Identity, current_identity, validate_address
    from relay.message import Spooled
    from relay.submission import Prepared, Result, prepare, submit

_LAZY = {
    "Expanded": ("relay.aliases", "Expanded"),
    "expand": ("relay.aliases", "expand"),
    "Config": ("relay.config", "Config"),
    "load_config": ("relay.config", "load"),
    "resolve_password": ("relay.credentials", "resolve"),
    "save_dead_letter": ("relay.deadletter", "save"),
    "Verdict": ("relay.delivery", "Verdict"),
    "deliver": ("relay.delivery", "deliver"),
    "Envelope": ("relay.envelope", "Envelope"),
    "Identity": ("relay.envelope", "Identity"),
    "current_identity": ("relay.envelope", "current_identity"),
    "validate_address": ("relay.envelope", "validate_address"),
    "Prepared": ("relay.submission", "Prepared"),
    "prepare": ("relay.submission", "prepare"),
    "Result": ("relay.submission", "Result"),
    "Spooled": ("relay.message", "Spooled"),
    "submit": ("relay.submission", "submit"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'relay' has no attribute '{name}'") from None
    import importlib

    return getattr(importlib.import_module(module_name), attribute)


__all__ = [
    "CantCreateError",
    "Config",
    "ConfigError",
    "DataError",
    "Envelope",
    "Expanded",
    "IOFailure",
    "Identity",
    "NoInputError",
    "NoPermError",
    "NoUserError",
    "Prepared",
    "ProtocolError",
    "RelayError",
    "Result",
    "Spooled",
    "TempFailError",
    "UnavailableError",
    "UsageError",
    "Verdict",
    "__version__",
    "current_identity",
    "deliver",
    "expand",
    "finish",
    "load_config",
    "prepare",
    "resolve_password",
    "save_dead_letter",
    "submit",
    "validate_address",
]
