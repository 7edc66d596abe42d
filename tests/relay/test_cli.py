"""relay.cli: the sendmail argv parser (sendmail(8) OPTIONS), including ssmtp's parser traps."""

from __future__ import annotations

import os

import pytest

from relay.cli import parse_args, sendmail_main
from relay.errors import UsageError


def test_cronie_flags() -> None:
    opts = parse_args(["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t"])
    assert opts.full_name == "CronDaemon"
    assert opts.read_recipients is True
    assert opts.recipients == []


def test_debian_cron_flags() -> None:
    opts = parse_args(["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "bob"])
    assert opts.full_name == "CronDaemon"
    assert opts.recipients == ["bob"]


def test_odb_does_not_swallow_the_recipient() -> None:
    # ssmtp reads the recipient after -odb as its config file path.
    opts = parse_args(["-odb", "user@example.org"])
    assert opts.recipients == ["user@example.org"]
    assert opts.config is None


def test_attached_dsn_value_does_not_swallow_the_next_recipient() -> None:
    # ssmtp's -Nnever always consumes the next argument too, dropping bob.
    opts = parse_args(["-Nnever", "bob@x.org", "carol@x.org"])
    assert opts.recipients == ["bob@x.org", "carol@x.org"]


@pytest.mark.parametrize(
    "argv",
    [
        ["-N", "never", "-R", "hdrs", "-h", "5", "-L", "tag", "-O", "a=b", "-X", "/l", "a@x.org"],
        ["-B", "8BITMIME", "-o", "DeliveryMode=b", "-em", "-bm", "-m", "-n", "-U", "a@x.org"],
        ["-G", "-4", "-6", "-E", "-oQ/tmp/q", "-bs", "a@x.org"],
    ],
)
def test_ignored_flags_take_exactly_their_values(argv: list[str]) -> None:
    assert parse_args(argv).recipients == ["a@x.org"]


def test_f_forms_and_bundles() -> None:
    assert parse_args(["-fme@x.org"]).envelope_from == "me@x.org"
    assert parse_args(["-f", "me@x.org"]).envelope_from == "me@x.org"
    assert parse_args(["-r", "me@x.org"]).envelope_from == "me@x.org"
    bundled = parse_args(["-tiv"])
    assert bundled.read_recipients and bundled.verbose


def test_ssmtp_auth_flags() -> None:
    opts = parse_args(["-auuser", "-am", "CRAM-MD5", "-ap", "secret", "a@x.org"])
    assert (opts.auth_user, opts.auth_method, opts.auth_pass) == ("user", "CRAM-MD5", "secret")
    assert any("-ap puts the password on the command line" in n for n in opts.notes)
    assert not any("secret" in n for n in opts.notes)


def test_options_after_recipients_and_double_dash() -> None:
    opts = parse_args(["a@x.org", "-t", "--", "-not-an-option"])
    assert opts.read_recipients
    assert opts.recipients == ["a@x.org", "-not-an-option"]


def test_modes() -> None:
    assert parse_args(["-bv", "x"]).mode == "verify"
    assert parse_args(["-V"]).mode == "version"
    assert parse_args(["-P"]).mode == "pretend"
    assert parse_args(["--pretend"]).mode == "pretend"


@pytest.mark.parametrize("argv", [["-x"], ["-f"], ["-aq"], ["--frobnicate"], ["-C"]])
def test_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_args(argv)


def test_usage_error_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert sendmail_main(["-x"]) == os.EX_USAGE
    err = capsys.readouterr().err
    assert err.startswith("sendmail: unknown option -x\nusage: sendmail")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert sendmail_main(["-V"]) == 0
    assert capsys.readouterr().out.startswith("mailx-relay sendmail ")


@pytest.mark.parametrize("argv", [["-bp"], ["-bpa"], ["-b", "p"], ["-C/f", "-bp"]])
def test_bp_lists_the_queue(argv: list[str]) -> None:
    assert parse_args(argv).mode == "list"


@pytest.mark.parametrize("argv", [["-q"], ["-q15m"], ["-qf"], ["-qRexample.com"], ["-q", "-v"]])
def test_q_flushes_the_queue(argv: list[str]) -> None:
    opts = parse_args(argv)
    assert opts.mode == "flush"
    assert opts.verbose == ("-v" in argv)
    assert opts.recipients == []
