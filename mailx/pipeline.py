"""The stages of `mail` between the command line and delivery, one function each.

    load_rc -> check_request -> read_body -> resolve -> build

Each takes what it needs (the parsed `Request`, the mail.rc result, the `Draft` so far,
the `Environment`) and returns a new value; none changes its inputs. The driver that
chains them, and decides what is kept when one fails, is `mailx.cli.run`; delivery and
keeping are `mailx.delivery`.

Every stage reports failure by raising a `relay.RelayError` whose class gives the exit
status: UsageError (64), DataError (65), NoInputError (66), ...
"""

from __future__ import annotations

import os

from relay import DataError, NoInputError, RelayError, UsageError
from relay.records import Record

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime
    from email.message import EmailMessage

    from mailx.cli import Request
    from mailx.draft import Draft
    from mailx.environment import Environment
    from mailx.mailrc import MailRc, Recipient
    from mailx.plain import Plain
    from mailx.tilde import Action, Compose, Hooks

#: Headers a `-t` template may not set: the message builder writes them itself.
_BUILT_HEADERS = {
    "date",
    "message-id",
    "mime-version",
    "user-agent",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
}


# The records below are `relay.records.Record` classes, not NamedTuples: `typing` costs
# every `mail` its import.


class Abandoned(Record):
    """Compose ended with `~q` (`keep`: the draft goes to dead.letter) or `~x` (nothing)."""

    __slots__ = ("draft", "keep")

    draft: Draft
    keep: bool

    def __init__(self, draft: Draft, keep: bool) -> None:
        self.draft = draft
        self.keep = keep


class Sender(Record):
    """The envelope sender `-r` (or a `-t` From) asked for; None lets the relay decide."""

    __slots__ = ("address", "name")

    address: str | None
    #: The display name, for the relay's full name (`-F` of an external `mta`).
    name: str | None

    def __init__(self, address: str | None, name: str | None) -> None:
        self.address = address
        self.name = name


class Addressed(Record):
    """The draft with every recipient resolved, and the envelope to send it with."""

    __slots__ = ("draft", "recipients", "sender")

    #: Headers as the reader sees them: aliases expanded, From, Sender, Reply-To set.
    draft: Draft
    #: Envelope recipients, each once, in To, Cc, Bcc order.
    recipients: tuple[str, ...]
    #: Envelope sender from `-r` (or a `-t` From): (address, display name); (None, None)
    #: lets the relay decide.
    sender: Sender

    def __init__(self, draft: Draft, recipients: tuple[str, ...], sender: Sender) -> None:
        self.draft = draft
        self.recipients = recipients
        self.sender = sender


# -- configuration ---------------------------------------------------------------------


def load_rc(request: Request, env: Environment) -> MailRc:
    """The system and user mail.rc files, then `-S` settings on top. Problems in the
    files are `diagnostics` on the result, for the caller to print; they stop nothing."""
    from mailx import mailrc

    paths = mailrc.default_rc_paths(env.environ, env.home, no_system=request.no_system_rc)
    return mailrc.load(paths, environ=env.environ, overrides=request.settings, terminal=env.isatty)


def variable(variables: Mapping[str, str], *names: str) -> str | None:
    """The value of the first of `names` that is set (`reply-to` or `replyto`)."""
    for name in names:
        if name in variables:
            return variables[name]
    return None


def check_request(request: Request, variables: Mapping[str, str]) -> None:
    """What can be refused before the body is read: MTA arguments without expandargv,
    a dangerous recipient argument, an attachment that cannot be read."""
    if request.mta_args and variable(variables, "expandargv") is None:
        raise UsageError(
            "MTA arguments after '--' are refused unless the variable expandargv is "
            "set (s-nail's answer to CVE-2014-7844)"
        )
    for given in (*request.to, *request.cc, *request.bcc):
        check_argument(given)
    for path in request.attachments:
        check_readable(path, "attachment (-a)")


def clean_subject(subject: str | None, env: Environment) -> str | None:
    """The subject on one line: CR and LF become spaces, with a warning."""
    if subject is None or not any(c in subject for c in "\r\n"):
        return subject
    env.say("warning: CR and LF in the subject were replaced by spaces")
    return subject.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


# -- the body --------------------------------------------------------------------------


def read_body(
    request: Request, subject: str | None, variables: Mapping[str, str], env: Environment
) -> Draft | Abandoned:
    """The draft with its body: stdin, a `-t` template, or an interactive compose.

    Recipients are those of the command line plus those a template or compose added,
    still unexpanded; `from_` is `-r`'s, else a template's From.
    """
    from mailx.draft import Draft

    prefix = b""
    if request.quote_file:
        prefix = read_file(request.quote_file, "quote file (-q)")
    names = variable(variables, "fullnames") is not None
    draft = Draft(
        to=tuple(request.to if names else map(without_name, request.to)),
        cc=tuple(request.cc if names else map(without_name, request.cc)),
        bcc=tuple(request.bcc if names else map(without_name, request.bcc)),
        subject=subject,
        attachments=tuple(request.attachments),
        custom_headers=tuple(request.headers),
        sendcharsets=sendcharsets(variables),
        from_=request.from_,
    )
    escape = variable(variables, "escape") or "~"
    if env.isatty and not request.template:
        return compose(draft, prefix, escape, env)
    data = env.stdin.read()
    if request.template:
        draft = apply_template(draft, data)
        data = draft.body
    if request.tilde:
        return feed_escapes(draft, prefix + data, escape, env)
    return draft.replace(body=prefix + data)


def without_name(given: str) -> str:
    """A recipient argument without its display name, as s-nail writes it in To and Cc
    unless `fullnames` is set: `"Doe, John" <john@example.org>` and
    `john@example.org (John Doe)` become `<john@example.org>`. Only arguments: names
    from the alias book, a `-t` template or `~t`, `~c`, `~b` are kept (s-nail)."""
    from mailx.mailrc import parse_recipient

    try:
        recipient = parse_recipient(given)
    except DataError:
        return given  # refused later, by the stage that names it
    if recipient.kind != "address" or not recipient.display_name:
        return given
    return f"<{recipient.address}>"


def is_empty(draft: Draft) -> bool:
    """Nothing but white space: what `-E` and `skipemptybody` do not send."""
    return not draft.body.strip()


def sendcharsets(variables: Mapping[str, str]) -> tuple[str, ...]:
    value = variable(variables, "sendcharsets")
    names = tuple(n.strip() for n in (value or "").split(",") if n.strip())
    return names or ("utf-8",)


def apply_template(draft: Draft, data: bytes) -> Draft:
    """-t: headers at the top of stdin; their recipients are added to the arguments,
    their From is used when -r gave none, their Subject when -s gave none."""
    from email import message_from_bytes, policy

    head = message_from_bytes(data, policy=policy.default)
    to, cc, bcc = list(draft.to), list(draft.cc), list(draft.bcc)
    custom = list(draft.custom_headers)
    subject, from_ = draft.subject, draft.from_
    for name, value in head.items():
        key = name.lower()
        if key == "to":
            to.append(str(value))
        elif key == "cc":
            cc.append(str(value))
        elif key == "bcc":
            bcc.append(str(value))
        elif key == "subject":
            if subject is None:
                subject = str(value)
        elif key == "from":
            from_ = from_ or str(value)
        elif key not in _BUILT_HEADERS:
            custom.append(f"{name}: {value}")
    payload = head.get_payload()
    body = payload.encode("ascii", "surrogateescape") if isinstance(payload, str) else b""
    if not to and not cc and not bcc:
        raise UsageError("-t: no To, Cc or Bcc header and no recipient argument")
    return draft.replace(
        to=tuple(to),
        cc=tuple(cc),
        bcc=tuple(bcc),
        subject=subject,
        from_=from_,
        custom_headers=tuple(custom),
        body=body,
    )


def compose(draft: Draft, prefix: bytes, escape: str, env: Environment) -> Draft | Abandoned:
    """Interactive compose on a terminal: tilde escapes, `~!` allowed, Ctrl-D sends."""
    if draft.subject is None:
        env.stdout.write("Subject: ")
        env.stdout.flush()
        line = env.stdin.readline().decode("utf-8", "replace")
        draft = draft.replace(subject=clean_subject(line.rstrip("\r\n"), env))
    return run_compose(
        draft.replace(body=prefix), env.stdin, escape, env, allow_shell=True, interactive=True
    )


def feed_escapes(draft: Draft, data: bytes, escape: str, env: Environment) -> Draft | Abandoned:
    """`-~` on a pipe: escapes honoured, but never `~!` (a pipe is not someone typing)."""
    from io import BytesIO

    return run_compose(draft.replace(body=b""), BytesIO(data), escape, env, allow_shell=False)


class DraftStopped(Exception):
    """An interactive compose stopped by a signal: `error` says which, `draft` is what
    was typed, for dead.letter (s-nail's DEAD)."""

    def __init__(self, error: RelayError, draft: Draft) -> None:
        super().__init__(str(error))
        self.error = error
        self.draft = draft


def run_compose(
    draft: Draft,
    lines: Iterable[bytes],
    escape: str,
    env: Environment,
    *,
    allow_shell: bool,
    interactive: bool = False,
) -> Draft | Abandoned:
    """Feed lines to the tilde state machine: the finished draft, or how it was abandoned.

    `interactive` (a terminal) adds s-nail's signal rules: a first ^C prints
    "(Interrupt -- one more to kill letter)" and goes on; a second one with no line typed
    in between, or a hangup (the terminal went away), stops with `DraftStopped`, so that
    the caller keeps the draft.
    """
    from mailx.tilde import Action, Compose

    session = Compose(draft, hooks(env), escapes=True, shell=allow_shell, escape=escape)
    if interactive:
        action = _feed_interactively(session, lines, env)
    else:
        action = None
        for line in lines:
            action = session.feed(line)
            if action is not None:
                break
    action = action or session.finish()
    result = session.draft()
    if action is Action.ABORT:
        return Abandoned(result, keep=False)
    if action is Action.ABORT_SAVE:
        return Abandoned(result, keep=True)
    return result


class _HangUp(Exception):
    """Raised by the SIGHUP handler while composing."""


def _feed_interactively(
    session: Compose, lines: Iterable[bytes], env: Environment
) -> Action | None:
    import signal

    from relay import Interrupted

    def hang_up(_signum: int, _frame: object) -> None:
        raise _HangUp

    stream = iter(lines)
    interrupted = False
    previous = signal.signal(signal.SIGHUP, hang_up)
    try:
        while True:
            try:
                line = next(stream, None)
                if line is None:
                    return None
                interrupted = False
                action = session.feed(line)
            except KeyboardInterrupt:
                if interrupted:
                    stop = Interrupted("interrupted twice: message not sent", signal_number=2)
                    raise DraftStopped(stop, session.draft()) from None
                interrupted = True
                env.stderr.write("(Interrupt -- one more to kill letter)\n")
                env.stderr.flush()
                continue
            except _HangUp:
                stop = Interrupted("hangup: message not sent", signal_number=signal.SIGHUP)
                raise DraftStopped(stop, session.draft()) from None
            except Exception as err:  # a bug: what was typed is kept, and it is reported
                from relay import InternalError

                raise DraftStopped(InternalError(err), session.draft()) from err
            if action is not None:
                return action
    finally:
        signal.signal(signal.SIGHUP, previous)


def hooks(env: Environment) -> Hooks:
    """What compose's escapes may do, through `env`: print, read, edit, run a shell."""
    from mailx.tilde import Hooks

    def output(text: str) -> None:
        env.stdout.write(text.rstrip("\n") + "\n")
        env.stdout.flush()

    def read(path: str) -> bytes:
        return read_file(env.expand_user(path), "file")

    def edit(body: bytes, variable: str) -> bytes:
        editor = env.environ.get(variable) or env.environ.get("EDITOR") or "vi"
        return run_editor(body, editor, env.environ)

    def shell(command: str) -> None:
        import subprocess

        subprocess.run(["/bin/sh", "-c", command], check=False, env=env.environ)

    return Hooks(
        output=output,
        read_file=read,
        edit=edit,
        check_attachment=lambda p: check_readable(p, "attachment"),
        shell=shell,
    )


# -- recipients and the message --------------------------------------------------------


def resolve(draft: Draft, rc: MailRc) -> Addressed:
    """Expand every recipient through the alias book; nothing is sent if one fails."""
    from mailx.cli import literal
    from mailx.mailrc import expand_recipients

    if not (draft.to or draft.cc or draft.bcc):
        raise UsageError("no recipient given")
    seen: set[str] = set()
    lists: list[list[Recipient]] = []
    for given in (draft.to, draft.cc, draft.bcc):
        expanded = [r for r in expand_recipients(given, rc) if r.envelope not in seen]
        seen.update(r.envelope for r in expanded)
        lists.append(expanded)
    to, cc, bcc = lists
    variables = rc.variables
    reply_to = variable(variables, "reply-to", "replyto")
    # `-odd@example.org` (given after `-.`, or written `<-odd@example.org>`) goes back
    # into the path form that carried it: the message builder reads these again.
    resolved = draft.replace(
        to=tuple(literal(r.header) for r in to),
        cc=tuple(literal(r.header) for r in cc),
        bcc=tuple(literal(r.header) for r in bcc),
        from_=draft.from_ or variable(variables, "from"),
        sender=variable(variables, "sender"),
        reply_to=(reply_to,) if reply_to else (),
        hostname=variable(variables, "hostname"),
    )
    recipients = tuple(r.envelope for r in (*to, *cc, *bcc))
    return Addressed(resolved, recipients, envelope_sender(draft.from_))


def envelope_sender(from_: str | None) -> Sender:
    """(address, display name) from -r; None lets the relay decide (sendmail(8))."""
    if not from_:
        return Sender(None, None)
    from email.utils import parseaddr

    name, address = parseaddr(from_)
    return Sender(address or None, name or None)


def build(draft: Draft, env: Environment) -> EmailMessage | Plain:
    """The message, dated by `env`'s clock: written as bytes by `mailx.plain` when the
    draft is simple (the same bytes, without importing the `email` package), else built
    by `mailx.compose`."""
    from mailx import plain

    message = plain.build(draft, env.clock())
    if message is not None:
        return message
    from mailx import compose

    return compose.build(draft, now=local_time(env))


def local_time(env: Environment) -> datetime:
    from datetime import datetime

    return datetime.fromtimestamp(env.clock()).astimezone()


# -- checks and helpers ----------------------------------------------------------------


def check_argument(given: str) -> None:
    """Refuse (65) a recipient argument that can only be a mistake or an attack."""
    # Printable ASCII but the backslash is its own escape: the codec (a module of its
    # own to import) only for the rest.
    plain = given.isascii() and given.isprintable() and "\\" not in given
    shown = given if plain else given.encode("unicode_escape").decode("ascii")
    if given.startswith("-"):
        raise DataError(
            f"'{shown}' in recipient position: options must come before the recipients "
            "(a recipient that really starts with '-' goes after -.)"
        )
    if any(c in given for c in "\r\n\0"):
        raise DataError(f"recipient contains CR, LF or NUL: '{shown}'")
    from mailx.mailrc import parse_recipient

    recipient = parse_recipient(given)
    if recipient.kind in ("file", "pipe"):
        raise DataError(f"{recipient.kind} recipient refused: '{shown}'")


def check_readable(path: str, what: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise NoInputError(f"{what}: {err.strerror or err}", path=path) from None
    if os.path.isdir(path):
        raise NoInputError(f"{what}: is a directory", path=path)


def read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise NoInputError(f"{what}: {err.strerror or err}", path=path) from None


def run_editor(body: bytes, editor: str, environ: Mapping[str, str]) -> bytes:
    import shlex
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="mail-", suffix=".txt") as handle:
        handle.write(body)
        handle.flush()
        try:
            words = shlex.split(editor)
        except ValueError as err:  # unbalanced quotes in $EDITOR: the escape fails, not mail
            raise UsageError(f"editor '{editor}': {err}") from None
        subprocess.run([*words, handle.name], check=False, env=environ)
        with open(handle.name, "rb") as edited:
            return edited.read()
