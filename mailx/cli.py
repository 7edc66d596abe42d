"""`mail` / `mailx`: s-nail's send mode, delivering through the relay in-process.

Reads top to bottom like dma's main (`run`): argv (`parse_common`, docopt-ng for the
rare shapes and the refusals; options stop at the first recipient as in s-nail), mail.rc
files, the body (stdin, or an interactive compose with tilde escapes on a terminal),
every recipient expanded through the alias book and checked before anything is sent,
the message built, then delivery: `relay.submit` in this process, or an external `mta`
program invoked as s-nail invokes it. The stages are `mailx.pipeline`; delivering and
keeping are `mailx.delivery`. From the moment the body is read, every failure keeps the
message in dead.letter, except under `-d`, which writes nothing anywhere.

Everything the process gives `mail` (streams, environment variables, the clock, the
home directory) comes in one `mailx.environment.Environment`, so `main(argv, env)`
runs in-process in a test.

Exit codes are sysexits (see mail(1)), not s-nail's 4: a script can tell a usage error
(64) from a bad address (65), an unknown local user (67) or a mailhub down (75). The
pipeline only returns 0 or raises a `relay.RelayError`, whose class decides the status.
"""

from __future__ import annotations

import io
import os
import sys

from relay import InternalError, NoInputError, RelayError, UsageError
from relay.records import ReadOnlyMapping, Record

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from email.message import EmailMessage
    from typing import Any

    from mailx.delivery import Keeper
    from mailx.draft import Draft
    from mailx.environment import Environment
    from mailx.pipeline import Abandoned
    from mailx.plain import Plain

PROG = "mail"

USAGE = """\
Usage: mail [-dEntv~] [-s SUBJECT] [-c ADDR]... [-b ADDR]... [-a FILE]... [-r FROM]
            [-S VAR]... [-C HEADER]... [-q FILE] [TO-ADDR...]

Options:
  -s SUBJECT  the subject (CR and LF become spaces)
  -c ADDR     a Cc recipient (repeat for more)
  -b ADDR     a Bcc recipient (repeat for more; never written to the headers)
  -a FILE     attach FILE (repeat for more)
  -r FROM     From header and envelope sender
  -S VAR      set a variable, VAR or VAR=VALUE; beats the mail.rc files
  -C HEADER   add a custom header, "Name: value"
  -q FILE     start the body with the contents of FILE
  -d          print the message and envelope to stderr, send nothing
  -E          send nothing if the body is empty
  -n          do not read the system mail.rc
  -t          read To, Cc, Bcc, Subject and other headers from the top of stdin
  -v          show the SMTP dialogue on stderr
  -~          honour tilde escapes even when stdin is not a terminal
Options stop at the first recipient, or at -. (every later argument is a recipient,
even one starting with -). After the recipients, `-- ARG...` passes ARGs to
the MTA when the variable expandargv is set. See mail(1)."""


_EMPTY: Mapping[str, str | None] = ReadOnlyMapping({})


class Request(Record):
    """What the command line asked for; the stages only read it. (A record: neither
    `dataclasses`, and the `inspect` it imports, nor `typing` for a NamedTuple, would
    cost every `mail` a good part of its start-up.)"""

    __slots__ = (
        "attachments",
        "bcc",
        "cc",
        "dry_run",
        "from_",
        "headers",
        "mta_args",
        "no_system_rc",
        "quote_file",
        "settings",
        "skip_empty",
        "subject",
        "template",
        "tilde",
        "to",
        "verbose",
    )

    subject: str | None
    #: The recipient arguments as given, except that one placed after `-.` and starting
    #: with `-` is in its path form `<-odd@example.org>` (`literal`): that is how the
    #: fact that the user meant it reaches the relay, through every path to it.
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    attachments: tuple[str, ...]
    from_: str | None
    #: `-S`: VAR=VALUE, VAR (empty value), noVAR (None: unset).
    settings: Mapping[str, str | None]
    headers: tuple[str, ...]
    quote_file: str | None
    dry_run: bool
    skip_empty: bool
    no_system_rc: bool
    template: bool
    verbose: bool
    tilde: bool
    mta_args: tuple[str, ...]

    def __init__(
        self,
        subject: str | None = None,
        to: tuple[str, ...] = (),
        cc: tuple[str, ...] = (),
        bcc: tuple[str, ...] = (),
        attachments: tuple[str, ...] = (),
        from_: str | None = None,
        settings: Mapping[str, str | None] | None = None,
        headers: tuple[str, ...] = (),
        quote_file: str | None = None,
        dry_run: bool = False,
        skip_empty: bool = False,
        no_system_rc: bool = False,
        template: bool = False,
        verbose: bool = False,
        tilde: bool = False,
        mta_args: tuple[str, ...] = (),
    ) -> None:
        _set = object.__setattr__
        _set(self, "subject", subject)
        _set(self, "to", to)
        _set(self, "cc", cc)
        _set(self, "bcc", bcc)
        _set(self, "attachments", attachments)
        _set(self, "from_", from_)
        _set(self, "settings", _EMPTY if settings is None else settings)
        _set(self, "headers", headers)
        _set(self, "quote_file", quote_file)
        _set(self, "dry_run", dry_run)
        _set(self, "skip_empty", skip_empty)
        _set(self, "no_system_rc", no_system_rc)
        _set(self, "template", template)
        _set(self, "verbose", verbose)
        _set(self, "tilde", tilde)
        _set(self, "mta_args", mta_args)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Request is immutable (cannot set {name}): use replace")

    def replace(self, **changes: Any) -> Request:
        """A copy with `changes` applied (an unknown field is a TypeError)."""
        fields = {name: getattr(self, name) for name in self._fields()}
        fields.update(changes)
        return Request(**fields)


#: Options that take a value (attached, `-sSubject`, or the next argument).
_VALUED = frozenset("scbarSCq")
_FLAGS = frozenset("dEntv~")


class Shown(Exception):
    """`-V` or `-h`: print `text` on stdout and exit 0 (s-nail's `-V`, `--help`)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def normalise(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """s-nail's option conventions docopt does not know, applied before it parses:
    `-i` is accepted and ignored (s-nail and bsd-mailx do); the last `-s` wins;
    `-V`/`--version` and `-h`/`--help` raise `Shown`; `-.` ends the options, and every
    later argument is a recipient even when it starts with `-` (returned apart). Bundled
    flags and attached values (`-dv`, `-sSubject`) are split one option per argument.
    An unknown option is a UsageError naming it, never the parser's internals."""
    out: list[str] = []
    subject: str | None = None
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "-.":
            return out + ([] if subject is None else ["-s", subject]), list(argv[index:])
        if arg in ("--help", "-h"):
            raise Shown(USAGE)
        if arg == "--version":
            raise Shown(_version())
        if arg == "--" or not arg.startswith("-") or arg == "-":
            out.extend(argv[index - 1 :])
            break
        if arg.startswith("--"):
            raise UsageError(f"unknown option {arg}")
        position = 1
        while position < len(arg):
            flag = arg[position]
            position += 1
            if flag in _VALUED:
                value = arg[position:]
                if not value:
                    if index >= len(argv):
                        raise UsageError(f"option -{flag} needs a value")
                    value, index = argv[index], index + 1
                if flag == "s":
                    subject = value  # the last -s wins, as in s-nail
                else:
                    out += [f"-{flag}", value]
                break
            if flag == "V":
                raise Shown(_version())
            if flag == "h":
                raise Shown(USAGE)
            if flag == "i":
                continue
            if flag not in _FLAGS:
                raise UsageError(f"unknown option -{flag}")
            out.append(f"-{flag}")
    if subject is not None:
        out[:0] = ["-s", subject]
    return out, None


def literal(arg: str) -> str:
    """A recipient placed after `-.`: one starting with `-` is meant, and becomes the
    RFC 5321 path `<-odd@example.org>`, which s-nail accepts as a recipient too. Every
    check downstream (ours, the relay's) refuses a leading `-` and accepts this form,
    which no program reads as an option; the envelope carries the bare address."""
    return f"<{arg}>" if arg.startswith("-") else arg


def _version() -> str:
    from relay import __version__

    return f"mailx-relay mail {__version__}"


def parse_args(argv: Sequence[str]) -> Request:
    """s-nail's send-mode argv; raises UsageError (exit 64), or `Shown` for -V and -h."""
    args, forced = normalise(argv)
    parsed = parse_common(args)
    if parsed is None:
        parsed = parse_docopt(args)
    given = [(arg, False) for arg in parsed["TO-ADDR"]] + [(arg, True) for arg in forced or []]
    mta_args: list[str] = []
    words = [arg for arg, _after_dot in given]
    if "--" in words:
        cut = words.index("--")
        given, mta_args = given[:cut], words[cut + 1 :]
    recipients = [literal(arg) if after_dot else arg for arg, after_dot in given]
    settings: dict[str, str | None] = {}
    for setting in parsed["-S"]:
        name, equals, value = setting.partition("=")
        if name.startswith("no") and not equals:
            settings[name[2:]] = None
        else:
            settings[name] = value
    request = Request(
        subject=parsed["-s"],
        to=tuple(recipients),
        cc=tuple(parsed["-c"]),
        bcc=tuple(parsed["-b"]),
        attachments=tuple(parsed["-a"]),
        from_=parsed["-r"],
        settings=ReadOnlyMapping(settings),
        headers=tuple(parsed["-C"]),
        quote_file=parsed["-q"],
        dry_run=bool(parsed["-d"]),
        skip_empty=bool(parsed["-E"]),
        no_system_rc=bool(parsed["-n"]),
        template=bool(parsed["-t"]),
        verbose=bool(parsed["-v"]),
        tilde=bool(parsed["-~"]),
        mta_args=tuple(mta_args),
    )
    if not request.to and not request.template:
        if request.cc or request.bcc:
            raise UsageError("send options without primary recipient specified")
        raise UsageError("no recipient given")
    return request


def parse_docopt(args: Sequence[str]) -> dict[str, Any]:
    """`normalise`'s output parsed by docopt against USAGE: every shape, and the refusals.
    Raises UsageError."""
    from docopt import DocoptExit, docopt

    try:
        return dict(docopt(USAGE, argv=list(args), options_first=True, default_help=False))
    except DocoptExit:
        # `normalise` has named every unknown option and missing value; what is left is
        # a shape docopt refuses, whose own text shows its internals (Option(...)).
        raise UsageError("invalid command line; see mail --help") from None


#: Options USAGE lets repeat; the other valued ones and the flags appear at most once.
_REPEATED = frozenset("cbaSC")


def parse_common(args: Sequence[str]) -> dict[str, Any] | None:
    """`parse_docopt`'s result for the command lines `normalise` leaves plain (each
    option alone, its value the next argument, each single option once), without
    importing docopt (about 3 ms of every `mail`, with the `importlib` it loads); None
    for anything else, which docopt then parses or refuses. tests/mailx/test_cli.py
    holds the two to the same result."""
    parsed: dict[str, Any] = {f"-{flag}": [] for flag in _REPEATED}
    parsed.update({f"-{flag}": None for flag in _VALUED - _REPEATED})
    parsed.update({f"-{flag}": False for flag in _FLAGS})
    parsed["TO-ADDR"] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--" or arg == "-" or not arg.startswith("-"):
            parsed["TO-ADDR"] = list(args[index:])
            break
        if len(arg) != 2:
            return None
        flag = arg[1]
        if flag in _VALUED:
            if index + 1 >= len(args) or args[index + 1] == "--":
                return None  # docopt's "requires argument"
            value = args[index + 1]
            index += 2
            if flag in _REPEATED:
                parsed[arg].append(value)
            elif parsed[arg] is not None:
                return None
            else:
                parsed[arg] = value
        elif flag in _FLAGS and not parsed[arg]:
            parsed[arg] = True
            index += 1
        else:
            return None
    return parsed


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Entry point of `mail` and `mailx`; returns a sysexits status.

    `env` is what the process gives (`Environment.from_process()` when None, built
    only once the command line parsed); its streams are where the entry wrapper
    (`relay.run_command`: one line per error, closed streams, ^C) reports. Called
    without `argv` (as the command), it exits at once.
    """
    from relay import run_command

    if env is None:
        return run_command(PROG, _main, argv)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = env.stdout, env.stderr
    try:
        return run_command(PROG, lambda args: _main(args, env), argv if argv is not None else [])
    finally:
        sys.stdout, sys.stderr = saved


def _main(argv: Sequence[str], env: Environment | None = None) -> int:
    try:
        request = parse_args(argv)
    except UsageError as err:
        err.usage = USAGE.split("\n\n", 1)[0]
        if env is None:
            keep_refused_pipe(err, argv)
        raise
    except Shown as shown:
        sys.stdout.write(shown.text + "\n")
        return os.EX_OK
    if env is None:
        from relay import stdin_was_closed

        if stdin_was_closed():  # `mail ... <&-`: reading would send an empty message
            raise NoInputError("standard input is closed: no message to read")
        from mailx.environment import Environment

        env = Environment.from_process()
    return run(request, env)


def run(request: Request, env: Environment) -> int:
    """The pipeline: mail.rc, body, recipients, message, then delivery or `-d`'s print.

    Returns 0 (sent, queued, `-E` with an empty body, abandoned by `~q` or `~x`) or
    raises a RelayError; from the moment the body is read that error carries `saved_to`
    (unless `-d`, or keeping failed too, which the error then says). A bug is reported
    as a RelayError (70) too, after keeping whatever text there is.
    """
    from mailx import delivery, pipeline

    keeper = delivery.Keeper(None)  # nothing to keep before the body is read
    draft: Draft | None = None
    message: EmailMessage | Plain | None = None
    sender = ""
    try:
        rc = pipeline.load_rc(request, env)
        for diagnostic in rc.diagnostics:
            env.say(str(diagnostic))
        variables = rc.variables
        if not request.dry_run:
            keeper = delivery.Keeper(delivery.dead_letter_path(variables, env))
        subject = pipeline.clean_subject(request.subject, env)
        if env.isatty:  # refuse before the user types a whole message
            pipeline.check_request(request, variables)
            try:
                body = pipeline.read_body(request, subject, variables, env)
            except pipeline.DraftStopped as stop:  # ^C twice, or a hangup: keep it
                raise keeper.kept(stop.error, text_of(stop.draft, env)) from None
        else:  # a pipe: read it first, so that whatever is refused keeps the text
            piped = env.stdin.read()
            env = env.replace(stdin=io.BytesIO(piped))
            try:
                pipeline.check_request(request, variables)
                body = pipeline.read_body(request, subject, variables, env)
            except RelayError as err:
                raise keeper.kept(err, piped_text(request, subject, piped, env)) from None
            except Exception as err:  # a bug: the piped text is kept all the same
                bug = InternalError(err)
                raise keeper.kept(bug, piped_text(request, subject, piped, env)) from err
        if isinstance(body, pipeline.Abandoned):
            return abandoned(body, keeper, env)
        draft = body
        if pipeline.is_empty(draft) and (
            request.skip_empty or pipeline.variable(variables, "skipemptybody") is not None
        ):
            return os.EX_OK  # -E: an empty message is not sent (s-nail)
        try:
            addressed = pipeline.resolve(draft, rc)
            message = pipeline.build(addressed.draft, env)
        except RelayError as err:
            raise keeper.kept(err, text_of(draft, env)) from None
        sender = addressed.sender.address or ""
        if request.dry_run:
            delivery.show(message, addressed, env)
            return os.EX_OK
        try:
            return delivery.deliver(
                message,
                addressed,
                variables=variables,
                origins=rc.origins,
                verbose=request.verbose,
                mta_args=request.mta_args,
                env=env,
                keeper=keeper,
            )
        except RelayError as err:
            if err.saved_to or err.keep_error is not None:
                raise
            # Refused before the relay had it (a big attachment changed under us): the
            # built message cannot be written again, the draft can.
            raise keeper.kept(err, text_of(addressed.draft, env)) from None
    except (RelayError, KeyboardInterrupt):
        raise
    except Exception as err:
        # A bug: keep the built message, else the draft, if there is one.
        bug = InternalError(err)
        if message is not None:
            raise keeper.kept(bug, message.as_bytes, sender) from err
        if draft is not None:
            raise keeper.kept(bug, text_of(draft, env)) from err
        raise bug from err


def piped_text(
    request: Request, subject: str | None, piped: bytes, env: Environment
) -> Callable[[], bytes]:
    """What dead.letter keeps of a piped body refused before it became a draft."""
    from mailx.draft import Draft

    return text_of(Draft(to=request.to, subject=subject, body=piped), env)


def keep_refused_pipe(err: UsageError, argv: Sequence[str]) -> None:
    """A command line refused before it could be understood: when a body is waiting on
    a pipe (cron's `cmd | mail -s x -q missing ops`), read it and keep it, so that a
    status other than 0 still means the message is in dead.letter. Not for a terminal
    (nothing typed yet), a closed stdin, or `-d` (which keeps nothing)."""
    import relay

    if os.isatty(0) or relay.stdin_was_closed() or _asks_dry_run(argv):
        return
    piped = sys.stdin.buffer.read()
    if not piped:  # nothing to keep: and nothing heavy imported for a usage error
        return
    from mailx import delivery
    from mailx.draft import Draft
    from mailx.environment import Environment

    env = Environment.from_process()
    keeper = delivery.Keeper(delivery.dead_letter_path({}, env))
    keeper.kept(err, text_of(Draft(to=(), body=piped), env))


def _asks_dry_run(argv: Sequence[str]) -> bool:
    for arg in argv:
        if not arg.startswith("-") or arg in ("-", "--", "-."):
            return False
        letters = arg[1:].split("=")[0]
        for letter in letters:
            if letter == "d":
                return True
            if letter in _VALUED:
                break
    return False


def text_of(draft: Draft, env: Environment) -> Callable[[], bytes]:
    """What dead.letter keeps of `draft`, made only when it is kept."""
    from mailx import delivery, pipeline

    return lambda: delivery.draft_text(draft, pipeline.local_time(env))


def abandoned(body: Abandoned, keeper: Keeper, env: Environment) -> int:
    """`~x` keeps nothing; `~q` keeps the draft (not under `-d`). Not an error: 0."""
    if not body.keep:
        env.say("message abandoned (~x), nothing kept")
    elif (path := keeper.keep(text_of(body.draft, env)())) is None:
        env.say("message abandoned (~q), nothing kept (-d)")
    else:
        env.say(f"message abandoned (~q), kept in {path}")
    return os.EX_OK


if __name__ == "__main__":
    sys.exit(main())
