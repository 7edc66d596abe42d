"""The end of `mail`'s pipeline: deliver the message, show it (`-d`), or keep it.

Delivery goes through the relay in this process (`relay.submit`, all of it in
`deliver_relay`), or through an external `mta` program invoked as s-nail invokes it.
After a delivery, `record` appends a copy to that mbox.

Keeping is `Keeper`, the one place `mail` writes dead.letter: the built message when
delivery failed before the relay could keep it (an unreadable relay config, an `mta`
that failed), the draft's text when the message could not be built (a bad recipient,
a bad header), the draft of a `~q`. Under `-d` the keeper keeps nothing: a dry run
writes no file at all.
"""

from __future__ import annotations

import os

from relay import RelayError, UnavailableError

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime
    from email.message import EmailMessage

    from mailx.draft import Draft
    from mailx.environment import Environment
    from mailx.pipeline import Addressed, Sender
    from mailx.plain import Plain
    from relay import Spooled


# -- keeping ---------------------------------------------------------------------------


def dead_letter_path(variables: Mapping[str, str], env: Environment) -> str:
    """The variable DEAD, else dead.letter in the sender's own home: `~` when it is
    theirs, else their passwd home (cron may hand a user's job `HOME=/root`, where the
    message could not be kept), as the relay decides it for `sendmail`."""
    dead = variables.get("DEAD")
    if dead:
        return env.expand_user(dead)
    import relay

    home = relay.own_home({"HOME": env.home}, os.getuid()) or env.home
    return os.path.join(home, "dead.letter")


class Keeper:
    """Appends what could not be sent to dead.letter; keeps nothing when `path` is None
    (`-d`)."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def keep(self, data: bytes, sender: str = "") -> str | None:
        """Append `data` (an mbox entry from `sender`) and return the path; None under
        `-d`. Raises CantCreateError (73) or IOFailure (74) when it cannot."""
        if self.path is None:
            return None
        import relay

        return relay.save_dead_letter(data, sender, self.path)

    def kept(self, err: RelayError, content: Callable[[], bytes], sender: str = "") -> RelayError:
        """`err`, once what `content` returns is kept: with `saved_to` set, or, when
        keeping failed too, with `keep_error` set (whose status then wins: the message
        is nowhere, and that is what the user must fix first)."""
        if err.saved_to or self.path is None:
            return err
        try:
            err.saved_to = self.keep(content(), sender)
        except RelayError as failed:
            err.keep_error = failed
        except Exception as failed:  # a bug while keeping: say so, don't hide `err`
            from relay import InternalError

            err.keep_error = InternalError(failed)
        return err


def draft_text(draft: Draft, now: datetime | None = None) -> bytes:
    """What dead.letter keeps of a draft: its subject and body (the recipients are what
    failed, the custom headers may be what failed)."""
    from mailx import compose

    bare = draft.replace(to=(), cc=(), bcc=(), custom_headers=(), attachments=(), from_=None)
    try:
        return bytes(compose.build(bare, now=now))
    except Exception:
        # Whatever broke the builder must not cost the text: keep the raw body
        # under a plain Subject line (controls in it made spaces).
        subject = "".join(c if c.isprintable() else " " for c in draft.subject or "")
        return f"Subject: {subject}\n\n".encode("utf-8", "replace") + draft.body


# -- delivery --------------------------------------------------------------------------


def show(message: EmailMessage | Plain, addressed: Addressed, env: Environment) -> None:
    """`-d`: the envelope and the message on stderr, nothing sent."""
    env.stderr.write(f"envelope from: {addressed.sender.address or '(the relay decides)'}\n")
    env.stderr.write(f"envelope to: {', '.join(addressed.recipients)}\n\n")
    env.stderr.write(lf_form(message).decode("utf-8", "replace"))
    env.stderr.flush()


def lf_form(message: EmailMessage | Plain) -> bytes:
    """The message with LF line ends (`-d`, an external `mta`: a local program's form)."""
    from mailx.plain import Plain

    if isinstance(message, Plain):
        return message.render(linesep=b"\n")
    from mailx.compose import POLICY

    return message.as_bytes(policy=POLICY.clone(linesep="\n"))


def uses_relay(mta: str | None) -> bool:
    """Whether `mta` (the variable) means the relay in this process: unset (the system
    configuration), an account URL (`mailx.account`: the user's own server), or
    s-nail's `test`; anything else is a program."""
    from mailx.account import is_url

    return not mta or is_url(mta) or mta == "test"


def deliver(
    message: EmailMessage | Plain,
    addressed: Addressed,
    *,
    variables: Mapping[str, str],
    origins: Mapping[str, tuple[str, int]] | None = None,
    verbose: bool,
    mta_args: Sequence[str],
    env: Environment,
    keeper: Keeper,
) -> int:
    """Send (or queue) the message, then record it, and return 0; raises a RelayError,
    with `saved_to` set when the message was kept, if it was neither sent nor queued.
    Handed to the system relay (a user who may not read its configuration), the status
    is the relay's, already reported."""
    mta = variables.get("mta", variables.get("sendmail"))
    if uses_relay(mta):
        status = deliver_relay(
            message,
            addressed,
            variables=variables,
            origins=origins or {},
            verbose=verbose,
            show_dialogue=verbose or "verbose" in variables,
            env=env,
            keeper=keeper,
        )
    else:
        assert mta is not None
        deliver_external(
            mta, message, addressed, verbose=verbose, mta_args=mta_args, env=env, keeper=keeper
        )
        status = os.EX_OK
    if status == os.EX_OK:
        record(message, addressed.sender, variables, env)
    return status


def deliver_relay(
    message: EmailMessage | Plain,
    addressed: Addressed,
    *,
    variables: Mapping[str, str],
    origins: Mapping[str, tuple[str, int]],
    verbose: bool,
    show_dialogue: bool,
    env: Environment,
    keeper: Keeper,
) -> int:
    """`relay.submit` in this process: delivered, queued, or kept by the relay itself.

    The configuration is the user's own account when `mta` names one (`mailx.account`),
    else the system's; never the system's in place of an account that cannot be used.
    A user who may not read the system's hands the message to the system relay
    (mailx-relayd(8)), which answers with the status and the lines to print.
    """
    import relay
    from mailx.account import account
    from mailx.cli import literal

    sender = addressed.sender
    envelope_from = sender.address
    # An address starting with '-' got here only as the user wrote it, `<-odd@...>`
    # or after `-.`: the relay refuses it bare (an option, for a downstream sendmail)
    # and takes it in that path form.
    recipients = tuple(literal(address) for address in addressed.recipients)
    try:
        mine = account(variables, origins, relay.current_identity().login)
        if mine is not None:
            config, password = mine.config, mine.password
            envelope_from = envelope_from or mine.envelope_from
            warnings = mine.warnings
        else:
            config = relay.load_config(environ=env.environ)
            warnings = list(config.warnings)
            password = relay.resolve_password(config) if config.auth_user else None
        for warning in warnings:
            env.say(warning)
    except RelayError as err:
        if relay.needs_service(err):
            request = relay.Request(
                recipients,
                envelope_from=envelope_from,
                full_name=sender.name,
                verbose=verbose,
            )
            return relay.hand_off(
                request,
                wire_input(message),
                prog="mail",
                dead_letter=keeper.path,
                environ=env.environ,
            )
        raise keeper.kept(err, lambda: bytes(message), sender.address or "") from None
    result = relay.submit(
        wire_input(message),
        relay.Envelope(recipients, envelope_from=envelope_from, full_name=sender.name),
        config=config,
        password=password,
        verbose=env.stderr if show_dialogue else None,
        dead_letter=keeper.path,
    )
    if verbose and result.recipients:  # as `sendmail -v` ends
        env.say(f"delivered to {', '.join(result.recipients)} via {result.mailhub}: {result.reply}")
    if result.queued_id and (config.queue != "always" or verbose):
        env.say(f"queued as {result.queued_id}: {result.queued_reason}")
    return os.EX_OK


def wire_input(message: EmailMessage | Plain) -> EmailMessage | Spooled | bytes:
    """The message for `relay.submit`: itself, or written to a temporary file when it
    has big attachments, so that they are encoded a piece at a time."""
    from mailx.plain import Plain

    if isinstance(message, Plain):
        return message.wire()
    from email.policy import SMTP

    import relay
    from mailx.compose import has_streamed_parts, render

    if not has_streamed_parts(message):
        return message
    spool = relay.Spooled()
    render(message, spool, SMTP)  # the policy relay.submit generates with
    return spool


def deliver_external(
    mta: str,
    message: EmailMessage | Plain,
    addressed: Addressed,
    *,
    verbose: bool,
    mta_args: Sequence[str],
    env: Environment,
    keeper: Keeper,
) -> None:
    """s-nail's invocation: `PROGRAM -i [-v] [-F name] [-f addr] [args] -- rcpt...`;
    the program's failure status is `mail`'s."""
    import subprocess

    from relay import MtaFailedError

    sender = addressed.sender
    argv = [env.expand_user(mta), "-i"]
    if verbose:
        argv.append("-v")
    if sender.name:
        argv += ["-F", sender.name]
    if sender.address:
        argv += ["-f", sender.address]
    argv += [*mta_args, "--", *addressed.recipients]
    data = lf_form(message)
    env.stderr.flush()  # the program writes to the same stderr: keep the order
    failure: RelayError
    try:
        done = subprocess.run(argv, input=data, check=False, env=env.environ)
    except OSError as err:
        failure = UnavailableError(f"cannot run mta {mta}: {err.strerror or err}")
    else:
        if done.returncode == 0:
            return
        failure = MtaFailedError(
            f"mta {mta} exited with status {done.returncode}", mta_status=done.returncode
        )
    raise keeper.kept(failure, lambda: bytes(message), sender.address or "")


def record(
    message: EmailMessage | Plain, sender: Sender, variables: Mapping[str, str], env: Environment
) -> None:
    """`record`: a copy of every sent message appended to that mbox (`+name`: in
    `folder`). A failure is a warning: the message is sent."""
    path = variables.get("record")
    if not path:
        return
    import relay

    if path.startswith("+"):
        folder = variables.get("folder") or "~"
        path = os.path.join(env.expand_user(folder), path[1:])
    try:
        relay.save_dead_letter(
            bytes(message), sender.address or "", env.expand_user(path), what="record"
        )
    except RelayError as err:
        env.say(f"warning: sent, but no copy recorded: {err}")
