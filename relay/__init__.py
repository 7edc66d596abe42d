"""mailx-relay's relay: the public API the `mail` front end calls in-process.

    import relay
    config = relay.load_config()            # ssmtp.conf + revaliases (DESIGN section 4)
    result = relay.submit(message, config=config, recipients=["archuser"])

`submit` delivers the message now, or queues it durably (`Queue=`; `Result.queued_id`),
or keeps it in dead.letter and raises a `RelayError` whose `exit_code` is the sysexits
status and whose `saved_to` names where the message went.
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
    from relay.client import hand_off, needs_service
    from relay.config import Config
    from relay.config import load as load_config
    from relay.credentials import resolve as resolve_password
    from relay.deadletter import save as save_dead_letter
    from relay.envelope import Identity, current_identity, validate_address
    from relay.handoff import Request
    from relay.message import Spooled
    from relay.submission import Result, submit

_LAZY = {
    "Expanded": ("relay.aliases", "Expanded"),
    "expand": ("relay.aliases", "expand"),
    "hand_off": ("relay.client", "hand_off"),
    "needs_service": ("relay.client", "needs_service"),
    "Request": ("relay.handoff", "Request"),
    "Config": ("relay.config", "Config"),
    "load_config": ("relay.config", "load"),
    "resolve_password": ("relay.credentials", "resolve"),
    "save_dead_letter": ("relay.deadletter", "save"),
    "Identity": ("relay.envelope", "Identity"),
    "current_identity": ("relay.envelope", "current_identity"),
    "validate_address": ("relay.envelope", "validate_address"),
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
    "Expanded",
    "IOFailure",
    "Identity",
    "NoInputError",
    "NoPermError",
    "NoUserError",
    "ProtocolError",
    "RelayError",
    "Request",
    "Result",
    "Spooled",
    "TempFailError",
    "UnavailableError",
    "UsageError",
    "__version__",
    "current_identity",
    "expand",
    "finish",
    "hand_off",
    "load_config",
    "needs_service",
    "resolve_password",
    "save_dead_letter",
    "submit",
    "validate_address",
]
