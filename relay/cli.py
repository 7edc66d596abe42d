"""`sendmail`: the ssmtp/msmtp/sendmail command line, and nothing else.

The argv parser is written by hand: docopt cannot parse `-oi` or `-auUSER`.
It accepts sendmail's flags the way getopt does (bundled, value attached or in the next
argument) and gives each ignored flag exactly the value it takes, so `-odb` or `-Nnever`
can never swallow a recipient (ssmtp's bugs). Options may follow recipients, as ssmtp and
msmtp allow; `--` ends them.

Imports are lazy: `sendmail -V` and a usage error load neither `email`, `ssl` nor `smtplib`,
since every cron job pays for what this module imports.
"""

from __future__ import annotations

import os
import sys

from relay.entry import print_version, run, say, stdin_was_closed, usage_on_error
from relay.errors import InternalError, NoInputError, RelayError, UnavailableError, UsageError

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from relay.config import Config
    from relay.envelope import Identity
    from relay.message import Spooled

PROG = "sendmail"

USAGE = """\
usage: sendmail [-t] [-i] [-f addr] [-F name] [-v] [-C file] [-au user] [-am method]
                [-N dsn] [-R ret] [-bm | -bv | -P] [--] [recipient...]
       sendmail -bp [-C file]            (list the queue, as mailq)
       sendmail -q [-v] [-C file]        (deliver the queue, as mailq --flush)
       sendmail --serverinfo [-C file]   (what the mailhub offers; sends nothing)
       sendmail -V
ssmtp's and sendmail's other flags (-oi -odb -oem -B8BITMIME -h N -L tag -O opt ...) are
accepted and ignored. See sendmail(8)."""

# Flags that take no value and may be bundled (-ti). ssmtp's -4/-6/-d and sendmail's
# -m -n -U -G -E are accepted and ignored.
_NO_VALUE = set("tivVmnUGd46EP")
# Flags whose value is attached (-fAddr) or the next argument (-f addr).
_WITH_VALUE = set("frFCNRhLOXBA")


class Options:
    """What the command line asked for. A plain class: `dataclasses` (and the `inspect`
    it imports) would cost `sendmail -V` and every usage error a third of their time."""

    def __init__(self) -> None:
        self.mode = "send"  # send | verify | version | pretend | serverinfo | list | flush
        self.read_recipients = False
        self.envelope_from: str | None = None
        self.full_name: str | None = None
        self.verbose = False
        self.config: str | None = None
        self.auth_user: str | None = None
        self.auth_pass: str | None = None
        self.auth_method: str | None = None
        self.recipients: list[str] = []
        self.notes: list[str] = []

    def __repr__(self) -> str:
        return f"Options({vars(self)!r})"


def parse_args(argv: list[str]) -> Options:
    """Parse sendmail's argv (without argv[0]); raises UsageError."""
    opts = Options()
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            opts.recipients.extend(args[index:])
            break
        if arg.startswith("--"):
            _long_option(opts, arg)
            continue
        if not arg.startswith("-") or arg == "-":
            opts.recipients.append(arg)
            continue
        position = 1
        while position < len(arg):
            flag = arg[position]
            rest = arg[position + 1 :]
            if flag in _NO_VALUE:
                _flag(opts, flag)
                position += 1
                continue
            if flag in ("o", "b", "e", "q", "a"):
                index = _prefixed(opts, flag, rest, args, index)
                break
            if flag in _WITH_VALUE:
                if rest:
                    value = rest
                elif index < len(args):
                    value = args[index]
                    index += 1
                else:
                    raise UsageError(f"option -{flag} needs a value")
                _valued(opts, flag, value)
                break
            raise UsageError(f"unknown option -{flag}")
    return opts


def _long_option(opts: Options, arg: str) -> None:
    if arg in ("--pretend",):
        opts.mode = "pretend"
    elif arg == "--serverinfo":
        opts.mode = "serverinfo"
    elif arg == "--version":
        opts.mode = "version"
    elif arg == "--read-recipients":
        opts.read_recipients = True
    else:
        raise UsageError(f"unknown option {arg}")


def _flag(opts: Options, flag: str) -> None:
    if flag == "t":
        opts.read_recipients = True
    elif flag in ("v", "d"):
        opts.verbose = True
    elif flag == "V":
        opts.mode = "version"
    elif flag == "P":
        opts.mode = "pretend"
    # -i: a line with a single dot never ends input here: input ends at EOF, always.


def _valued(opts: Options, flag: str, value: str) -> None:
    if flag in ("f", "r"):
        opts.envelope_from = value
    elif flag == "F":
        opts.full_name = value
    elif flag == "C":
        opts.config = value
    # -N dsn, -R ret, -h hops, -L tag, -O opt=val, -X log, -B type, -A: accepted, ignored.


def _prefixed(opts: Options, flag: str, rest: str, args: list[str], index: int) -> int:
    """-o/-b/-e/-q/-a families: the letters after the flag are its value."""
    if flag == "o":
        if not rest:  # `-o X`: the option in the next argument
            return index + 1 if index < len(args) else index
        if rest == "v":
            opts.verbose = True
        return index  # -oi, -oem, -odb, -oQ/path...: ignored, value attached
    if flag == "b":
        if not rest:
            if index >= len(args):
                raise UsageError("option -b needs a mode")
            rest, index = args[index], index + 1
        if rest == "v":
            opts.mode = "verify"
        elif rest.startswith("p"):
            opts.mode = "list"  # -bp, and sendmail's -bpa/-bpc variants: our one listing
        return index  # -bm (the default), -bs, -bi, -bd...: accepted, ignored
    if flag == "q":
        # -q, and sendmail's -q15m (a daemon's interval), -qf, -qR...: flush once, now.
        opts.mode = "flush"
        return index
    if flag == "e":
        return index  # -em, -ep, -eq: error reporting mode, ignored
    # -au user, -ap pass, -am method (ssmtp)
    kind, value = rest[:1], rest[1:]
    if kind not in ("u", "p", "m"):
        raise UsageError(f"unknown option -a{rest}")
    if not value:
        if index >= len(args):
            raise UsageError(f"option -a{kind} needs a value")
        value, index = args[index], index + 1
    if kind == "u":
        opts.auth_user = value
    elif kind == "p":
        opts.auth_pass = value
        opts.notes.append(
            "warning: -ap puts the password on the command line, where every user can "
            "read it (ps); use AuthPassFile or AuthPassCommand instead"
        )
    else:
        opts.auth_method = value
    return index


def sendmail_main(argv: list[str] | None = None) -> int:
    """The `sendmail` console script (also `-bp`, `-q`, `-bv`, `-P`, `--serverinfo`):
    a sysexits status, or, called without `argv`, the process ends (`relay.entry.run`)."""
    return run(PROG, _main, argv)


def _main(args: list[str]) -> int:
    with usage_on_error(USAGE):
        opts = parse_args(args)
    if opts.mode == "version":
        return print_version(PROG)
    for note in opts.notes:
        say(PROG, note)
    return _run(opts)


def _run(opts: Options) -> int:
    from relay import config as config_module

    if opts.mode == "send" and stdin_was_closed():
        # /dev/null stands in for it: reading that would send an empty message.
        raise NoInputError(
            "standard input is closed: no message to read",
            hint="give the message on standard input (sendmail reads it up to end of file)",
        )

    try:
        config = config_module.load(opts.config)
    except RelayError as err:
        if opts.mode == "send" and _may_hand_off(err):
            return _hand_off(opts)
        if opts.mode == "send":  # the message is waiting on stdin: keep it, not drop it
            _keep_without_config(err, config_module.Config(path=opts.config or "ssmtp.conf"))
        raise
    for warning in config.warnings:
        say(PROG, warning)
    overrides = {
        key: value
        for key, value in (("auth_user", opts.auth_user), ("auth_method", opts.auth_method))
        if value is not None
    }
    if overrides:
        config = config.replace(**overrides)
    if opts.mode == "pretend":
        from relay.pretend import describe

        sys.stdout.write(describe(config))
        return os.EX_OK
    if opts.mode == "serverinfo":
        from relay import serverinfo
        from relay.smtp import CertificateRejected

        try:
            sys.stdout.write(serverinfo.describe(config))
        except CertificateRejected as err:
            sys.stdout.write(err.report or "")
            # A delivery defers an untrusted certificate (it may be renewed); this is a
            # report on the setup, and an untrusted hub is not a working one: 69.
            raise UnavailableError(err.message, step=err.step) from None
        return os.EX_OK
    if opts.mode == "verify":
        return _verify(opts, config)
    if opts.mode in ("list", "flush"):
        from relay import mailq

        if opts.mode == "list":
            return mailq.show(config)
        return mailq.run_flush(config, verbose=opts.verbose, password=opts.auth_pass, prog=PROG)
    return _send(opts, config)


def _may_hand_off(err: RelayError) -> bool:
    from relay.client import needs_service

    return needs_service(err)


def _hand_off(opts: Options) -> int:
    """A user who may not read the configuration: the system relay sends for them
    (mailx-relayd(8)). Only the message and the envelope wishes travel; -au/-ap/-am
    cannot (the system relay logs in with its own account)."""
    from relay.client import hand_off
    from relay.handoff import Request
    from relay.message import Spooled, read_input

    if opts.auth_user or opts.auth_pass or opts.auth_method:
        say(PROG, "warning: -au, -ap and -am are ignored: the system relay logs in itself")
    request = Request(
        tuple(opts.recipients),
        read_recipients=opts.read_recipients,
        envelope_from=opts.envelope_from,
        full_name=opts.full_name,
        verbose=opts.verbose,
    )
    raw = read_input(sys.stdin.buffer)
    try:
        return hand_off(request, raw, prog=PROG)
    finally:
        if isinstance(raw, Spooled):
            raw.close()


def _keep_without_config(err: RelayError, stand_in: Config) -> None:
    """A broken config must not cost the message cron handed us: read it and append it
    to dead.letter (`$DEAD` or `~/dead.letter`), which needs no configuration."""
    from relay import submission
    from relay.envelope import current_identity
    from relay.message import Spooled, read_input

    raw = read_input(sys.stdin.buffer)
    try:
        empty = raw.size == 0 if isinstance(raw, Spooled) else not raw
        if not empty:
            submission.keep(err, raw, current_identity(), stand_in, None)
    finally:
        if isinstance(raw, Spooled):
            raw.close()


def _send(opts: Options, config: Config) -> int:
    from relay.envelope import current_identity
    from relay.errors import TooBigError
    from relay.message import Spooled, read_input

    try:
        # A big message goes to a temporary file; past MaxMessageSize reading stops.
        raw = read_input(sys.stdin.buffer, limit=config.max_message_size)
    except TooBigError as err:
        partial = err.partial
        assert isinstance(partial, bytes | Spooled)
        try:
            from relay import submission

            submission.keep(err, partial, current_identity(), config, None)
        finally:
            if isinstance(partial, Spooled):
                partial.close()
        raise
    try:
        return _submit(opts, config, raw, current_identity())
    finally:
        if isinstance(raw, Spooled):
            raw.close()


def _submit(opts: Options, config: Config, raw: bytes | Spooled, identity: Identity) -> int:
    from relay import submission
    from relay.envelope import Envelope

    password = None
    try:
        if config.auth_user:  # relay.credentials only for a login
            from relay import credentials

            password = credentials.resolve(config, opts.auth_pass)
    except RelayError as err:
        submission.keep(err, raw, identity, config, None)
        raise
    try:
        envelope = Envelope(
            opts.recipients,
            read_recipients=opts.read_recipients,
            envelope_from=opts.envelope_from,
            full_name=opts.full_name,
            identity=identity,
        )
        result = submission.submit(
            raw,
            envelope,
            config=config,
            password=password,
            verbose=sys.stderr if opts.verbose else None,
        )
    except RelayError:
        raise  # submit kept the message and recorded where
    except Exception as err:  # a bug: one line, the message kept, EX_SOFTWARE
        bug = InternalError(err)
        submission.keep(bug, raw, identity, config, None)
        raise bug from err
    if opts.verbose and result.recipients:
        say(
            PROG,
            f"delivered to {', '.join(result.recipients)} via {result.mailhub}: {result.reply}",
        )
    # Exit 0 means delivered or durably queued; a fallback to the queue is always said,
    # Queue=always (the configured normal) only with -v, so cron jobs stay quiet.
    if result.queued_id and (opts.verbose or config.queue != "always"):
        say(PROG, f"queued as {result.queued_id}: {result.queued_reason}")
    return os.EX_OK


def _verify(opts: Options, config: Config) -> int:
    """-bv: how each recipient and the sender resolve; nothing is read or sent."""
    from relay import envelope, submission

    status = os.EX_OK
    resolver = submission.make_resolver(config)
    if not opts.recipients:
        raise UsageError("-bv needs recipients to verify")
    for given in envelope.parse_recipient_args(opts.recipients):
        try:
            resolved = resolver.resolve(given)
        except RelayError as err:
            sys.stdout.write(f"{given}: refused: {err}\n")
            status = status or err.exit_code
            continue
        sys.stdout.write(f"{given} -> {', '.join(resolved.addresses)} ({resolved.how})\n")
    sender = envelope.resolve_sender(
        config,
        envelope.current_identity(),
        envelope_from=opts.envelope_from,
        full_name=opts.full_name,
    )
    shown = f"; From: {sender.from_header}" if sender.from_header else ""
    sys.stdout.write(f"sender: {sender.envelope} ({sender.explanation}){shown}\n")
    return status
