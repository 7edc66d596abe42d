"""relay.errors: the one table of exit statuses, the rules that depend on an error's data,
and the one-line report."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import relay
from relay import errors
from relay.errors import (
    STATUS,
    AliasLoopError,
    CantCreateError,
    InternalError,
    MissingFileError,
    MtaFailedError,
    NoUserError,
    OutputClosedError,
    RelayError,
    TempFailError,
    status_for,
)

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "RelayError": os.EX_SOFTWARE,
    "UsageError": os.EX_USAGE,
    "DataError": os.EX_DATAERR,
    "AliasLoopError": os.EX_DATAERR,
    "TooBigError": os.EX_DATAERR,
    "NoInputError": os.EX_NOINPUT,
    "NoUserError": os.EX_NOUSER,
    "MissingFileError": os.EX_NOUSER,
    "UnavailableError": os.EX_UNAVAILABLE,
    "TempFailError": os.EX_TEMPFAIL,
    "TLSFailure": os.EX_TEMPFAIL,
    "ProtocolError": os.EX_PROTOCOL,
    "NoPermError": os.EX_NOPERM,
    "ConfigError": os.EX_CONFIG,
    "CantCreateError": os.EX_CANTCREAT,
    "IOFailure": os.EX_IOERR,
    "OutputClosedError": os.EX_IOERR,
    "MtaFailedError": os.EX_SOFTWARE,
    "InternalError": os.EX_SOFTWARE,
    # Its status is 128 + its signal, from its data (test below); the class alone is none.
    "Interrupted": os.EX_SOFTWARE,
}


def test_a_stop_by_a_signal_is_128_plus_the_signal() -> None:
    assert errors.Interrupted("stopped by SIGTERM", signal_number=15).exit_code == 143
    assert errors.Interrupted("hangup", signal_number=1).exit_code == 129


def every_error_class() -> list[type[RelayError]]:
    return [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, RelayError)
    ]


def test_every_error_class_has_its_status() -> None:
    assert {cls.__name__: status_for(cls) for cls in every_error_class()} == EXPECTED
    assert set(STATUS) <= set(every_error_class())


def test_a_class_and_its_instances_agree() -> None:
    assert NoUserError("x").exit_code == status_for(NoUserError) == 67
    assert MissingFileError("no such file", path="/x").exit_code == 67
    assert AliasLoopError(("a", "b", "a")).exit_code == 65


@pytest.mark.parametrize(("status", "expected"), [(75, 75), (67, 67), (-9, 70), (300, 70)])
def test_an_external_mta_status_is_passed_on_unless_it_died(status: int, expected: int) -> None:
    assert MtaFailedError("mta exited", mta_status=status).exit_code == expected


def test_a_message_that_could_not_be_kept_takes_the_keeping_failure_status() -> None:
    err = TempFailError("cannot connect")
    err.keep_error = CantCreateError("cannot create dead.letter")
    assert err.exit_code == os.EX_CANTCREAT
    assert err.describe() == (
        "cannot connect; and the message could not be kept: cannot create dead.letter"
    )


def test_describe_says_where_what_reply_hint_and_kept() -> None:
    err = NoUserError(
        "permanent refusal at RCPT TO",
        path="ssmtp.conf",
        line=3,
        step="RCPT TO",
        reply="550 5.1.1 no such user",
        code=550,
        hint="check the address",
    )
    err.saved_to = "/home/u/dead.letter"
    assert str(err) == (
        "ssmtp.conf:3: permanent refusal at RCPT TO (server said: 550 5.1.1 no such user); "
        "check the address"
    )
    assert err.describe() == f"{err}; message kept in /home/u/dead.letter"
    assert (err.step, err.code) == ("RCPT TO", 550)


def test_an_internal_error_names_the_bug_and_the_debug_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAILX_RELAY_DEBUG", raising=False)
    bug = KeyError("x")
    err = InternalError(bug)
    assert err.bug is bug
    assert err.describe() == (
        "internal error: KeyError: 'x' (run with MAILX_RELAY_DEBUG=1 for details)"
    )
    monkeypatch.setenv("MAILX_RELAY_DEBUG", "1")
    assert err.describe() == "internal error: KeyError: 'x'"


def test_the_reader_gone_status() -> None:
    assert status_for(OutputClosedError) == os.EX_IOERR


def test_mailx_sees_the_new_names_through_relay() -> None:
    for name in ("AliasLoopError", "MissingFileError", "MtaFailedError", "InternalError"):
        assert getattr(relay, name) is getattr(errors, name)
    from relay.entry import finish, run, stdin_was_closed

    assert (relay.run_command, relay.finish, relay.stdin_was_closed) == (
        run,
        finish,
        stdin_was_closed,
    )


def test_statuses_are_not_overwritten_or_written_as_literals_in_commands() -> None:
    """Statuses come from the table: no `err.exit_code = ...`, and the commands return
    no sysexits literal other than EX_OK."""
    assigned = re.compile(r"\.exit_code\s*=(?!=)")
    literal = re.compile(r"os\.EX_(?!OK\b)[A-Z]+")
    for path in sorted([*ROOT.glob("relay/*.py"), *ROOT.glob("mailx/*.py")]):
        name = str(path.relative_to(ROOT))
        text = path.read_text()
        assert not assigned.search(text), name
        if name in ("relay/cli.py", "relay/mailq.py", "relay/flush.py", "mailx/alias_cli.py"):
            assert not literal.search(text), name
