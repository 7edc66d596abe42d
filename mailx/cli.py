"""`mail` / `mailx`: s-nail's send mode, delivering through the relay in-process.

Reads top to bottom like dma's main: argv (docopt-ng, options stop at the first
recipient as in s-nail), mail.rc files, the body (stdin, or an interactive compose with
tilde escapes on a terminal), every recipient expanded through the alias book and
checked before anything is sent, the message built (`mailx.compose`), then delivery:
`relay.submit` in this process, or an external `mta` program invoked as s-nail invokes
it. From the moment the body is read, every failure keeps the message in dead.letter.

Exit codes are sysexits (DESIGN section 6), not s-nail's 4: a script can tell a usage
error (64) from a bad address (65), an unknown local user (67) or a mailhub down (75).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

from relay import DataError, NoInputError, RelayError, UsageError

if TYPE_CHECKING:
    from email.message import EmailMessage

    from mailx.compose import Draft
    from mailx.mailrc import MailRc, Recipient
    from mailx.tilde import Hooks
    from relay import Spooled

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
Options stop at the first recipient. After the recipients, `-- ARG...` passes ARGs to
the MTA when the variable expandargv is set. See mail(1)."""

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


class Request:
    """What the command line asked for (a plain class: `dataclasses`, and the `inspect`
    it imports, would cost every `mail` a good part of its start-up)."""

    def __init__(
        self,
        *,
        subject: str | None = None,
        to: list[str] | None = None,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        attachments: list[str] | None = None,
        from_: str | None = None,
        settings: dict[str, str | None] | None = None,
        headers: list[str] | None = None,
        quote_file: str | None = None,
        dry_run: bool = False,
        skip_empty: bool = False,
        no_system_rc: bool = False,
        template: bool = False,
        verbose: bool = False,
        tilde: bool = False,
        mta_args: list[str] | None = None,
    ) -> None:
        self.subject = subject
        self.to: list[str] = to if to is not None else []
        self.cc: list[str] = cc if cc is not None else []
        self.bcc: list[str] = bcc if bcc is not None else []
        self.attachments: list[str] = attachments if attachments is not None else []
        self.from_ = from_
        self.settings: dict[str, str | None] = settings if settings is not None else {}
        self.headers: list[str] = headers if headers is not None else []
        self.quote_file = quote_file
        self.dry_run = dry_run
        self.skip_empty = skip_empty
        self.no_system_rc = no_system_rc
        self.template = template
        self.verbose = verbose
        self.tilde = tilde
        self.mta_args: list[str] = mta_args if mta_args is not None else []

    def __repr__(self) -> str:
        return f"Request({vars(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]


def parse_args(argv: Sequence[str]) -> Request:
    """s-nail's send-mode argv; raises UsageError (exit 64)."""
    from docopt import DocoptExit, docopt

    args = list(argv)
    try:
        parsed = docopt(USAGE, argv=args, options_first=True, default_help=False)
    except DocoptExit as err:
        first = str(err).splitlines()[0] if str(err) else "bad usage"
        raise UsageError(first.removeprefix("Warning: ")) from None
    recipients = list(parsed["TO-ADDR"])
    mta_args: list[str] = []
    if "--" in recipients:
        cut = recipients.index("--")
        recipients, mta_args = recipients[:cut], recipients[cut + 1 :]
    request = Request(
        subject=parsed["-s"],
        to=recipients,
        cc=list(parsed["-c"]),
        bcc=list(parsed["-b"]),
        attachments=list(parsed["-a"]),
        from_=parsed["-r"],
        headers=list(parsed["-C"]),
        quote_file=parsed["-q"],
        dry_run=bool(parsed["-d"]),
        skip_empty=bool(parsed["-E"]),
        no_system_rc=bool(parsed["-n"]),
        template=bool(parsed["-t"]),
        verbose=bool(parsed["-v"]),
        tilde=bool(parsed["-~"]),
        mta_args=mta_args,
    )
    for setting in parsed["-S"]:
        name, equals, value = setting.partition("=")
        if name.startswith("no") and not equals:
            request.settings[name[2:]] = None
        else:
            request.settings[name] = value
    if not request.to and not request.template:
        if request.cc or request.bcc:
            raise UsageError("send options without primary recipient specified")
        raise UsageError("no recipient given")
    return request


def say(text: str, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    out.write(f"{PROG}: {text}\n")
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mail` and `mailx`; returns a sysexits status.

    Called without `argv` (as the command), it exits at once (`relay.finish`).
    """
    if argv is None:
        from relay import finish

        return finish(_main(sys.argv[1:]))
    return _main(argv)


def _main(argv: Sequence[str]) -> int:
    try:
        request = parse_args(argv)
    except UsageError as err:
        say(str(err))
        sys.stderr.write(USAGE.split("\n\n", 1)[0] + "\n")
        return err.exit_code
    session = Session(request, os.environ)
    try:
        return session.run()
    except RelayError as err:
        return report(err)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as err:  # a bug: one line, never a traceback, and the text kept
        bug = RelayError(f"internal error: {type(err).__name__}: {err}")
        session.keep_what_we_have(bug)
        return report(bug)


def report(err: RelayError) -> int:
    text = str(err)
    if err.saved_to:
        text += f"; message kept in {err.saved_to}"
    say(text)
    return err.exit_code


class Session:
    """One invocation: configuration, body, recipients, message, delivery."""

    def __init__(self, request: Request, environ: Mapping[str, str]) -> None:
        self.request = request
        self.environ = environ
        self.interactive = sys.stdin.isatty()
        self.vars: dict[str, str] = {}
        self.rc: MailRc | None = None
        self.message: EmailMessage | None = None
        self.draft: Draft | None = None

    # -- configuration ----------------------------------------------------------------

    def load_rc(self) -> MailRc:
        from mailx import mailrc

        home = mailrc.home_directory(self.environ)
        paths = mailrc.default_rc_paths(self.environ, home, no_system=self.request.no_system_rc)
        rc = mailrc.load(
            paths,
            environ=self.environ,
            overrides=self.request.settings,
            terminal=self.interactive,
        )
        for diagnostic in rc.diagnostics:
            say(str(diagnostic))
        self.vars = rc.variables
        return rc

    def var(self, *names: str) -> str | None:
        for name in names:
            if name in self.vars:
                return self.vars[name]
        return None

    def dead_letter_path(self) -> str:
        dead = self.var("DEAD")
        if dead:
            return os.path.expanduser(dead)
        from mailx.mailrc import home_directory

        return os.path.join(home_directory(self.environ), "dead.letter")

    # -- the run ----------------------------------------------------------------------

    def run(self) -> int:
        request = self.request
        self.rc = self.load_rc()
        if request.mta_args and self.var("expandargv") is None:
            raise UsageError(
                "MTA arguments after '--' are refused unless the variable expandargv is "
                "set (s-nail's answer to CVE-2014-7844)"
            )
        subject = self.clean_subject(request.subject)
        for given in (*request.to, *request.cc, *request.bcc):
            check_argument(given)
        for path in request.attachments:
            check_readable(path, "attachment (-a)")
        draft = self.draft = self.read_body(subject)
        if draft is None:
            return os.EX_OK  # ~x: abandoned on purpose
        if not draft.body.strip() and (request.skip_empty or self.var("skipemptybody") is not None):
            return os.EX_OK  # -E: an empty message is not sent (s-nail)
        try:
            draft, envelope = self.resolve(draft)
            message = self.build(draft)
        except RelayError as err:
            self.keep_draft(draft, err)
            raise
        if request.dry_run:
            self.print_dry_run(message, envelope)
            return os.EX_OK
        return self.deliver(message, draft, envelope)

    def clean_subject(self, subject: str | None) -> str | None:
        if subject is None or not any(c in subject for c in "\r\n"):
            return subject
        say("warning: CR and LF in the subject were replaced by spaces")
        return subject.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")

    def read_body(self, subject: str | None) -> Draft | None:
        """The draft with its body: stdin, a `-t` template, or an interactive compose."""
        from mailx.compose import Draft

        request = self.request
        prefix = b""
        if request.quote_file:
            prefix = read_file(request.quote_file, "quote file (-q)")
        draft = Draft(
            to=tuple(request.to),
            cc=tuple(request.cc),
            bcc=tuple(request.bcc),
            subject=subject,
            attachments=tuple(request.attachments),
            custom_headers=tuple(request.headers),
            sendcharsets=self.sendcharsets(),
        )
        if self.interactive and not request.template:
            return self.compose(draft, prefix)
        data = sys.stdin.buffer.read()
        if request.template:
            draft = self.apply_template(draft, data)
            data = draft.body
        if request.tilde:
            return self.feed_escapes(draft, prefix + data)
        from dataclasses import replace

        return replace(draft, body=prefix + data)

    def sendcharsets(self) -> tuple[str, ...]:
        value = self.var("sendcharsets")
        names = tuple(n.strip() for n in (value or "").split(",") if n.strip())
        return names or ("utf-8",)

    def apply_template(self, draft: Draft, data: bytes) -> Draft:
        """-t: headers at the top of stdin; their recipients are added to the arguments."""
        from dataclasses import replace
        from email import message_from_bytes, policy

        head = message_from_bytes(data, policy=policy.default)
        custom = list(draft.custom_headers)
        for name, value in head.items():
            key = name.lower()
            if key == "to":
                self.request.to.append(str(value))
            elif key == "cc":
                self.request.cc.append(str(value))
            elif key == "bcc":
                self.request.bcc.append(str(value))
            elif key == "subject":
                if draft.subject is None:
                    draft = replace(draft, subject=str(value))
            elif key == "from":
                self.request.from_ = self.request.from_ or str(value)
            elif key not in _BUILT_HEADERS:
                custom.append(f"{name}: {value}")
        payload = head.get_payload()
        body = payload.encode("ascii", "surrogateescape") if isinstance(payload, str) else b""
        if not self.request.to and not self.request.cc and not self.request.bcc:
            raise UsageError("-t: no To, Cc or Bcc header and no recipient argument")
        return replace(draft, custom_headers=tuple(custom), body=body)

    def compose(self, draft: Draft, prefix: bytes) -> Draft | None:
        """Interactive compose on a terminal: tilde escapes, `~!` allowed, Ctrl-D sends."""
        from dataclasses import replace

        if draft.subject is None:
            sys.stdout.write("Subject: ")
            sys.stdout.flush()
            line = sys.stdin.buffer.readline().decode("utf-8", "replace")
            draft = replace(draft, subject=self.clean_subject(line.rstrip("\r\n")))
        return self.run_compose(replace(draft, body=prefix), sys.stdin.buffer, allow_shell=True)

    def feed_escapes(self, draft: Draft, data: bytes) -> Draft | None:
        """`-~` on a pipe: escapes honoured, but never `~!` (DESIGN V10)."""
        from dataclasses import replace
        from io import BytesIO

        return self.run_compose(replace(draft, body=b""), BytesIO(data), allow_shell=False)

    def run_compose(
        self, draft: Draft, lines: Iterable[bytes], *, allow_shell: bool
    ) -> Draft | None:
        """Feed lines to the tilde state machine; None when the user abandoned the message."""
        from mailx.tilde import Action, Compose

        session = Compose(
            draft, self.hooks(), escapes=True, shell=allow_shell, escape=self.var("escape") or "~"
        )
        action = None
        for line in lines:
            action = session.feed(line)
            if action is not None:
                break
        action = action or session.finish()
        result = session.draft()
        if action is Action.ABORT:
            say("message abandoned (~x), nothing kept")
            return None
        if action is Action.ABORT_SAVE:
            say(f"message abandoned (~q), kept in {self.save_draft(result)}")
            return None
        self.request.to[:] = list(session.to)
        self.request.cc[:] = list(session.cc)
        self.request.bcc[:] = list(session.bcc)
        return result

    def hooks(self) -> Hooks:
        from mailx.tilde import Hooks

        def output(text: str) -> None:
            sys.stdout.write(text.rstrip("\n") + "\n")
            sys.stdout.flush()

        def read(path: str) -> bytes:
            return read_file(os.path.expanduser(path), "file")

        def edit(body: bytes, variable: str) -> bytes:
            return run_editor(
                body, self.environ.get(variable) or self.environ.get("EDITOR") or "vi"
            )

        def shell(command: str) -> None:
            import subprocess

            subprocess.run(["/bin/sh", "-c", command], check=False)

        return Hooks(
            output=output,
            read_file=read,
            edit=edit,
            check_attachment=lambda p: check_readable(p, "attachment"),
            shell=shell,
        )

    def resolve(self, draft: Draft) -> tuple[Draft, list[str]]:
        """Expand every recipient through the alias book; nothing is sent if one fails."""
        from dataclasses import replace

        from mailx.mailrc import expand_recipients

        assert self.rc is not None
        request = self.request
        if not (request.to or request.cc or request.bcc):
            raise UsageError("no recipient given")
        seen: set[str] = set()
        lists: list[list[Recipient]] = []
        for given in (request.to, request.cc, request.bcc):
            expanded = [r for r in expand_recipients(given, self.rc) if r.envelope not in seen]
            seen.update(r.envelope for r in expanded)
            lists.append(expanded)
        to, cc, bcc = lists
        envelope = [r.envelope for r in (*to, *cc, *bcc)]
        draft = replace(
            draft,
            to=tuple(r.header for r in to),
            cc=tuple(r.header for r in cc),
            bcc=tuple(r.header for r in bcc),
            from_=request.from_ or self.var("from"),
            sender=self.var("sender"),
            reply_to=tuple(v for v in (self.var("reply-to", "replyto"),) if v),
            hostname=self.var("hostname"),
        )
        return draft, envelope

    def build(self, draft: Draft) -> EmailMessage:
        from mailx.compose import build

        self.message = build(draft)
        return self.message

    def print_dry_run(self, message: EmailMessage, envelope: list[str]) -> None:
        from mailx.compose import POLICY

        sender = self.envelope_from()
        sys.stderr.write(f"envelope from: {sender[0] or '(the relay decides)'}\n")
        sys.stderr.write(f"envelope to: {', '.join(envelope)}\n\n")
        sys.stderr.write(
            message.as_bytes(policy=POLICY.clone(linesep="\n")).decode("utf-8", "replace")
        )
        sys.stderr.flush()

    def envelope_from(self) -> tuple[str | None, str | None]:
        """(address, display name) from -r; None lets the relay decide (DESIGN 3.1)."""
        if not self.request.from_:
            return None, None
        from email.utils import parseaddr

        name, address = parseaddr(self.request.from_)
        return address or None, name or None

    # -- delivery ---------------------------------------------------------------------

    def deliver(self, message: EmailMessage, draft: Draft, envelope: list[str]) -> int:
        mta = self.var("mta", "sendmail")
        if mta and not mta.startswith(("smtp://", "smtps://", "submission://")) and mta != "test":
            status = self.deliver_external(mta, message, envelope)
        else:
            status = self.deliver_relay(message, envelope)
        if status == os.EX_OK:
            self.record(message)
        return status

    def deliver_relay(self, message: EmailMessage, envelope: list[str]) -> int:
        import relay

        address, name = self.envelope_from()
        try:
            config = relay.load_config(environ=self.environ)
            for warning in config.warnings:
                say(warning)
            password = relay.resolve_password(config) if config.auth_user else None
        except RelayError as err:
            if relay.needs_service(err):  # the system relay sends for us (mailx-relayd(8))
                request = relay.Request(
                    tuple(envelope), envelope_from=address, full_name=name,
                    verbose=self.request.verbose or self.var("verbose") is not None,
                )  # fmt: skip
                return relay.hand_off(
                    request, self.wire_input(message), prog=PROG,
                    dead_letter=self.dead_letter_path(), environ=self.environ,
                )  # fmt: skip
            self.keep_message(message, err)
            raise
        result = relay.submit(
            self.wire_input(message),
            config=config,
            recipients=envelope,
            envelope_from=address,
            full_name=name,
            password=password,
            verbose=sys.stderr if self.request.verbose or self.var("verbose") is not None else None,
            dead_letter=self.dead_letter_path(),
        )
        if result.queued_id and (config.queue != "always" or self.request.verbose):
            say(f"queued as {result.queued_id}: {result.queued_reason}")
        return os.EX_OK

    def wire_input(self, message: EmailMessage) -> EmailMessage | Spooled:
        """The message for `relay.submit`: itself, or written to a temporary file when it
        has big attachments, so that they are encoded a piece at a time (DESIGN 8)."""
        from email.policy import SMTP

        import relay
        from mailx.compose import has_streamed_parts, render

        if not has_streamed_parts(message):
            return message
        spool = relay.Spooled()
        render(message, spool, SMTP)  # the policy relay.submit generates with
        return spool

    def deliver_external(self, mta: str, message: EmailMessage, envelope: list[str]) -> int:
        """s-nail's invocation: `PROGRAM -i [-v] [-F name] [-f addr] [args] -- rcpt...`."""
        import subprocess

        from mailx.compose import POLICY

        address, name = self.envelope_from()
        argv = [os.path.expanduser(mta), "-i"]
        if self.request.verbose:
            argv.append("-v")
        if name:
            argv += ["-F", name]
        if address:
            argv += ["-f", address]
        argv += [*self.request.mta_args, "--", *envelope]
        data = message.as_bytes(policy=POLICY.clone(linesep="\n"))
        try:
            done = subprocess.run(argv, input=data, check=False)
        except OSError as err:
            failure = RelayError(f"cannot run mta {mta}: {err.strerror or err}")
            failure.exit_code = os.EX_UNAVAILABLE
            self.keep_message(message, failure)
            raise failure from None
        if done.returncode != 0:
            code = done.returncode if 0 < done.returncode < 256 else os.EX_SOFTWARE
            failure = RelayError(f"mta {mta} exited with status {done.returncode}")
            failure.exit_code = code
            self.keep_message(message, failure)
            raise failure
        return os.EX_OK

    def record(self, message: EmailMessage) -> None:
        """`record`: a copy of every sent message appended to that mbox."""
        path = self.var("record")
        if not path:
            return
        import relay

        if path.startswith("+"):
            folder = self.var("folder") or "~"
            path = os.path.join(os.path.expanduser(folder), path[1:])
        try:
            relay.save_dead_letter(
                bytes(message),
                self.envelope_from()[0] or "",
                os.path.expanduser(path),
                what="record",
            )
        except RelayError as err:
            say(f"warning: sent, but no copy recorded: {err}")

    # -- keeping what could not be sent -----------------------------------------------

    def keep_message(self, message: EmailMessage, err: RelayError) -> None:
        if err.saved_to:
            return
        import relay

        try:
            err.saved_to = relay.save_dead_letter(
                bytes(message), self.envelope_from()[0] or "", self.dead_letter_path()
            )
        except RelayError as failed:
            err.message += f"; and the message could not be kept: {failed}"
            err.exit_code = failed.exit_code

    def keep_what_we_have(self, err: RelayError) -> None:
        """After a bug: keep the built message, else the draft, if there is one."""
        try:
            if self.message is not None:
                self.keep_message(self.message, err)
            elif self.draft is not None:
                self.keep_draft(self.draft, err)
        except Exception as failed:  # the bug may be in keeping too: say so, don't hide it
            err.message += f"; and the message could not be kept: {failed}"

    def keep_draft(self, draft: Draft, err: RelayError) -> None:
        """A failure before the message could be built: keep the text in dead.letter."""
        try:
            err.saved_to = self.save_draft(draft)
        except RelayError as failed:
            err.message += f"; and the message could not be kept: {failed}"
            err.exit_code = failed.exit_code

    def save_draft(self, draft: Draft) -> str:
        """Append the subject and body (recipients are what failed) to dead.letter."""
        from dataclasses import replace

        import relay
        from mailx.compose import build

        bare = replace(draft, to=(), cc=(), bcc=(), custom_headers=(), attachments=())
        try:
            data = bytes(build(bare))
        except Exception:
            # Whatever broke the builder must not cost the text: keep the raw body
            # under a plain Subject line (controls in it made spaces).
            subject = "".join(c if c.isprintable() else " " for c in draft.subject or "")
            data = f"Subject: {subject}\n\n".encode("utf-8", "replace") + draft.body
        return relay.save_dead_letter(data, "", self.dead_letter_path())


# -- checks and helpers ------------------------------------------------------------------


def check_argument(given: str) -> None:
    """Refuse (65) a recipient argument that can only be a mistake or an attack."""
    shown = given.encode("unicode_escape").decode("ascii")
    if given.startswith("-"):
        raise DataError(f"'{shown}' in recipient position: options must come before the recipients")
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


def run_editor(body: bytes, editor: str) -> bytes:
    import shlex
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="mail-", suffix=".txt") as handle:
        handle.write(body)
        handle.flush()
        subprocess.run([*shlex.split(editor), handle.name], check=False)
        with open(handle.name, "rb") as edited:
            return edited.read()


if __name__ == "__main__":
    sys.exit(main())
