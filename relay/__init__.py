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
    from relay.config import Config
    from relay.config import load as load_config
    from relay.credentials import resolve as resolve_password
    from relay.deadletter import save as save_dead_letter
    from relay.envelope import Identity, current_identity, validate_address
    from relay.message import Spooled
    from relay.recipients import Recipient, dedupe_key, idna_domain, is_local_name
    from relay.recipients import argument as check_recipient_argument
    from relay.recipients import classify as classify_recipient
    from relay.recipients import dedupe as dedupe_recipients
    from relay.recipients import parse_list as parse_recipient_list
    from relay.recipients import problem as recipient_problem
    from relay.recipients import split_list as split_recipient_list
    from relay.submission import Result, submit

_LAZY = {
    "Expanded": ("relay.aliases", "Expanded"),
    "expand": ("relay.aliases", "expand"),
    "Config": ("relay.config", "Config"),
    "load_config": ("relay.config", "load"),
    "resolve_password": ("relay.credentials", "resolve"),
    "save_dead_letter": ("relay.deadletter", "save"),
    "Identity": ("relay.envelope", "Identity"),
    "current_identity": ("relay.envelope", "current_identity"),
    "validate_address": ("relay.envelope", "validate_address"),
    "Result": ("relay.submission", "Result"),
    "Spooled": ("relay.message", "Spooled"),
    "Recipient": ("relay.recipients", "Recipient"),
    "check_recipient_argument": ("relay.recipients", "argument"),
    "classify_recipient": ("relay.recipients", "classify"),
    "dedupe_key": ("relay.recipients", "dedupe_key"),
    "dedupe_recipients": ("relay.recipients", "dedupe"),
    "idna_domain": ("relay.recipients", "idna_domain"),
    "is_local_name": ("relay.recipients", "is_local_name"),
    "parse_recipient_list": ("relay.recipients", "parse_list"),
    "recipient_problem": ("relay.recipients", "problem"),
    "split_recipient_list": ("relay.recipients", "split_list"),
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
    "Recipient",
    "RelayError",
    "Result",
    "Spooled",
    "TempFailError",
    "UnavailableError",
    "UsageError",
    "__version__",
    "check_recipient_argument",
    "classify_recipient",
    "current_identity",
    "dedupe_key",
    "dedupe_recipients",
    "expand",
    "finish",
    "idna_domain",
    "is_local_name",
    "load_config",
    "parse_recipient_list",
    "recipient_problem",
    "resolve_password",
    "save_dead_letter",
    "split_recipient_list",
    "submit",
    "validate_address",
]
