"""mailx-relay's relay: the public API the `mail` front end calls in-process.

    import relay
    config = relay.load_config()            # ssmtp.conf + revaliases, relay.conf(5)
    result = relay.submit(message, relay.Envelope(["archuser"]), config=config)

`submit` delivers the message now, or queues it durably (`Queue=`; `Result.queued_id`),
or keeps it in dead.letter and raises a `RelayError` whose `exit_code` is the sysexits
status and whose `saved_to` names where the message went. The envelope's fields may
also be given as keywords (`recipients=`, `envelope_from=`, `full_name=`, `identity=`).
A caller holding its own SMTP session uses `prepare` and `deliver` (a `Verdict`).
Every command runs through `relay.run_command(prog, main, argv)` (relay/entry.py),
which turns errors into one line on stderr and that status.
Names are imported lazily: importing `relay` costs nothing of `email`, `ssl` or `smtplib`.
"""

from __future__ import annotations

from relay.errors import (
    AliasLoopError,
    CantCreateError,
    ConfigError,
    DataError,
    InternalError,
    Interrupted,
    IOFailure,
    MissingFileError,
    MtaFailedError,
    NoInputError,
    NoPermError,
    NoUserError,
    ProtocolError,
    RelayError,
    TempFailError,
    UnavailableError,
    UsageError,
    status_for,
)

# The one version source: pyproject.toml reads it (tool.setuptools.dynamic).
__version__ = "0.1.0"

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from typing import Any

    from relay.aliases import Expanded, expand
    from relay.client import hand_off, needs_service
    from relay.config import Config, Mailhub, parse_hostport
    from relay.config import from_settings as config_from_settings
    from relay.config import load as load_config
    from relay.credentials import resolve as resolve_password
    from relay.deadletter import own_home
    from relay.deadletter import save as save_dead_letter
    from relay.delivery import Verdict, deliver
    from relay.entry import finish, reader_gone, stdin_was_closed
    from relay.entry import run as run_command
    from relay.envelope import Envelope, Identity, current_identity, validate_address
    from relay.handoff import Request
    from relay.message import Spooled
    from relay.recipients import Recipient, dedupe_key, idna_domain, is_local_name, unquote
    from relay.recipients import argument as check_recipient_argument
    from relay.recipients import classify as classify_recipient
    from relay.recipients import dedupe as dedupe_recipients
    from relay.recipients import parse_list as parse_recipient_list
    from relay.recipients import problem as recipient_problem
    from relay.recipients import split_list as split_recipient_list
    from relay.submission import Prepared, Result, prepare, submit
    from relay.submission import hostport as format_hostport

_LAZY = {
    "Expanded": ("relay.aliases", "Expanded"),
    "expand": ("relay.aliases", "expand"),
    "hand_off": ("relay.client", "hand_off"),
    "needs_service": ("relay.client", "needs_service"),
    "Request": ("relay.handoff", "Request"),
    "Config": ("relay.config", "Config"),
    "Mailhub": ("relay.config", "Mailhub"),
    "parse_hostport": ("relay.config", "parse_hostport"),
    "format_hostport": ("relay.submission", "hostport"),
    "load_config": ("relay.config", "load"),
    "config_from_settings": ("relay.config", "from_settings"),
    "resolve_password": ("relay.credentials", "resolve"),
    "save_dead_letter": ("relay.deadletter", "save"),
    "own_home": ("relay.deadletter", "own_home"),
    "finish": ("relay.entry", "finish"),
    "reader_gone": ("relay.entry", "reader_gone"),
    "run_command": ("relay.entry", "run"),
    "stdin_was_closed": ("relay.entry", "stdin_was_closed"),
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
    "unquote": ("relay.recipients", "unquote"),
    "submit": ("relay.submission", "submit"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'relay' has no attribute '{name}'") from None
    # `__import__` with a fromlist returns the submodule itself; `importlib.import_module`
    # would put the importlib package and `warnings` on every path that uses a lazy name.
    return getattr(__import__(module_name, fromlist=[attribute]), attribute)


__all__ = [
    "AliasLoopError",
    "CantCreateError",
    "Config",
    "ConfigError",
    "DataError",
    "Envelope",
    "Expanded",
    "IOFailure",
    "Identity",
    "InternalError",
    "Interrupted",
    "Mailhub",
    "MissingFileError",
    "MtaFailedError",
    "NoInputError",
    "NoPermError",
    "NoUserError",
    "Prepared",
    "ProtocolError",
    "Recipient",
    "RelayError",
    "Request",
    "Result",
    "Spooled",
    "TempFailError",
    "UnavailableError",
    "UsageError",
    "Verdict",
    "__version__",
    "check_recipient_argument",
    "classify_recipient",
    "config_from_settings",
    "current_identity",
    "dedupe_key",
    "dedupe_recipients",
    "deliver",
    "expand",
    "finish",
    "format_hostport",
    "hand_off",
    "idna_domain",
    "is_local_name",
    "load_config",
    "needs_service",
    "own_home",
    "parse_hostport",
    "parse_recipient_list",
    "prepare",
    "reader_gone",
    "recipient_problem",
    "resolve_password",
    "run_command",
    "save_dead_letter",
    "split_recipient_list",
    "status_for",
    "stdin_was_closed",
    "submit",
    "unquote",
    "validate_address",
]
