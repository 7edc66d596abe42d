"""`mail` run in-process: `mailx.cli.main(argv, env)` with an injected Environment.

Delivery goes through a real aiosmtpd hub (tests.mailhub) or a real external `mta`
script; mail.rc, dead.letter, `record` and the queue are real files under tmp_path.
Nothing of this process is used: every test runs with `sys.stdin` set to None and checks
that nothing reached the real stdout or stderr. tests/e2e/test_mail.py runs the installed
command the same way a user does.
"""

from __future__ import annotations

import email.utils
import io
import json
import mailbox
import os
import stat
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mailx.cli
import mailx.compose
import mailx.plain
from mailx.cli import parse_args
from mailx.environment import Environment
from relay import UsageError
from relay.queue import Queue
from tests.mailhub import DEFAULT_USERS, MailHub, MailHubFactory, closed_port, read_mbox
from tests.relayconf import write_config

ARCHWIKI_RC = "set from=me@example.org\nalias archuser 'My Name'<someone@example.com>\n"
#: Tue, 14 Nov 2023 22:13:20 UTC: the Date every message here carries.
NOW = 1_700_000_000.0


class Mail:
    """`mail` with a home under tmp_path, streams in memory and a fixed clock."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = home
        self.capsys = capsys
        self.environ: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "MAILX_NO_SYSTEM_RC": "1",
        }
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()

    def rc(self, text: str, name: str = ".mailrc") -> Path:
        path = self.home / name
        path.write_text(text)
        return path

    def configure(self, hub: MailHub | None, **keys: object) -> Path:
        """An ssmtp.conf for `hub`, named by RELAY_CONFIG."""
        conf = write_config(self.home, hub, **keys)
        self.environ["RELAY_CONFIG"] = str(conf)
        return conf

    def env(self, body: bytes, *, tty: bool = False) -> Environment:
        return Environment(
            stdin=io.BytesIO(body),
            stdout=self.stdout,
            stderr=self.stderr,
            environ=dict(self.environ),
            isatty=tty,
            clock=lambda: NOW,
            home=str(self.home),
        )

    def __call__(self, *args: str, body: bytes = b"body\n", tty: bool = False) -> int:
        self.stdout.seek(0)
        self.stdout.truncate()
        self.stderr.seek(0)
        self.stderr.truncate()
        status = mailx.cli.main(list(args), self.env(body, tty=tty))
        # Everything went through the Environment, nothing through this process.
        assert self.capsys.readouterr() == ("", "")
        return status

    @property
    def err(self) -> str:
        return self.stderr.getvalue()

    def line(self) -> str:
        """The one line a failure prints: never a traceback, never two lines."""
        text = self.err
        assert "Traceback" not in text
        lines = text.splitlines()
        assert len(lines) == 1, text
        return lines[0]

    @property
    def dead_letter(self) -> Path:
        return self.home / "dead.letter"

    def kept(self, path: Path | None = None) -> list[mailbox.mboxMessage]:
        return read_mbox(path or self.dead_letter)

    def written(self) -> set[str]:
        """Every file under the home but the ones the test wrote (rc, conf, inputs)."""
        return {
            str(p.relative_to(self.home))
            for p in self.home.rglob("*")
            if p.is_file() and p.name not in {".mailrc", "ssmtp.conf"} and "input" not in p.name
        }


@pytest.fixture
def mail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Mail]:
    saved = sys.stdin
    sys.stdin = None  # reading the real stdin would be a bug
    try:
        yield Mail(tmp_path, capsys)
    finally:
        sys.stdin = saved


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def recorder(directory: Path, status: int = 0) -> tuple[Path, Path]:
    """An external `mta` that writes its argv and stdin to a JSON file, then exits."""
    script = directory / "fake-sendmail"
    log = directory / "mta-input.json"
    script.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'stdin': sys.stdin.read()}}, open({str(log)!r}, 'w'))\n"
        f"sys.exit({status})\n"
    )
    script.chmod(0o755)
    return script, log


# -- delivery through the relay --------------------------------------------------------


def test_alias_from_the_mailrc_file_named_by_MAILRC(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub, FromLineOverride="yes")  # the relay keeps mail's From
    mail.environ["MAILRC"] = str(mail.rc(ARCHWIKI_RC, "input.rc"))
    mail.rc("alias archuser wrong@example.com\n")  # ~/.mailrc is not read when MAILRC is set
    assert mail("-s", "subj", "archuser") == 0, mail.err
    assert mail.err == ""
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["someone@example.com"]
    message = parsed(received.data)
    assert message["To"] == "My Name <someone@example.com>"
    assert message["From"] == "me@example.org"
    assert message["Subject"] == "subj"
    assert message.get_content() == "body\n"
    # The Date is the Environment's clock.
    assert email.utils.parsedate_to_datetime(message["Date"]).timestamp() == NOW
    assert mail.written() == set()  # no dead.letter, no queue entry


def test_s_c_b_a_C_options(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    mail.rc(ARCHWIKI_RC + "alias team a@example.com b@example.com\n")
    attachment = mail.home / "input-report.csv"
    attachment.write_text("a,b\n1,2\n")
    status = mail(
        "-s", "Grüße", "-c", "team", "-b", "hidden@example.net", "-a", str(attachment),
        "-C", "X-Ticket: 42", "archuser",
    )  # fmt: skip
    assert status == 0, mail.err
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == [
        "someone@example.com",
        "a@example.com",
        "b@example.com",
        "hidden@example.net",
    ]
    assert b"hidden@example.net" not in received.data
    message = parsed(received.data)
    assert message["Subject"] == "Grüße"
    assert message["Cc"] == "a@example.com, b@example.com"
    assert message["X-Ticket"] == "42"
    body, part = message.iter_parts()
    assert body.get_content() == "body\n"
    assert part.get_filename() == "input-report.csv"
    assert part.get_content() == "a,b\n1,2\n"


def test_r_sets_from_and_the_envelope_sender(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub, FromLineOverride="yes")
    mail.rc(ARCHWIKI_RC)
    assert mail("-r", "Me Myself <me.myself@example.org>", "-s", "x", "archuser") == 0, mail.err
    (received,) = hub.wait_for(1)
    assert received.mail_from == "me.myself@example.org"
    assert parsed(received.data)["From"] == "Me Myself <me.myself@example.org>"


def test_S_beats_the_mailrc_and_noVAR_unsets(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub, FromLineOverride="yes")
    mail.rc(ARCHWIKI_RC + "set sender=boss@example.org\n")
    status = mail("-S", "from=other@example.org", "-S", "nosender", "-s", "x", "archuser")
    assert status == 0, mail.err
    message = parsed(hub.wait_for(1)[0].data)
    assert message["From"] == "other@example.org"
    assert message["Sender"] is None


def test_q_starts_the_body_with_the_file(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    quoted = mail.home / "input-quote.txt"
    quoted.write_text("quoted line\n")
    assert mail("-q", str(quoted), "-s", "x", "a@example.com", body=b"typed\n") == 0, mail.err
    assert parsed(hub.wait_for(1)[0].data).get_content() == "quoted line\ntyped\n"


def test_missing_q_file_is_66_and_sends_nothing(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-q", str(mail.home / "nope"), "a@example.com") == os.EX_NOINPUT
    assert "quote file (-q)" in mail.line()
    assert hub.connections == 0


def test_E_sends_nothing_for_an_empty_body(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-E", "-s", "x", "a@example.com", body=b" \n\n") == 0
    assert mail.err == ""
    assert hub.connections == 0
    assert mail("-E", "-s", "x", "a@example.com", body=b"not empty\n") == 0
    assert len(hub.wait_for(1)) == 1


def test_t_reads_recipients_and_headers_and_leaves_the_request_alone(
    mail: Mail, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    mail.configure(hub)
    mail.rc(ARCHWIKI_RC)
    body = (
        b"To: archuser\nCc: c@example.com\nFrom: Tpl <tpl@example.org>\n"
        b"Subject: from template\nX-Tag: t\nDate: ignored\n\nthe body\n"
    )
    argv = ["-t", "extra@example.com"]
    request = parse_args(argv)
    before = request.replace()  # a copy (a record, no longer a NamedTuple)
    assert mailx.cli.run(request, mail.env(body)) == 0, mail.err
    assert request == before  # the stages return new values, never change the request
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["extra@example.com", "someone@example.com", "c@example.com"]
    message = parsed(received.data)
    assert message["Subject"] == "from template"
    assert message["From"] == "Tpl <tpl@example.org>"
    assert message["X-Tag"] == "t"
    assert message["Date"] != "ignored"
    assert message.get_content() == "the body\n"


def test_t_without_any_recipient_is_a_usage_error(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-t", body=b"Subject: s\n\nbody\n") == os.EX_USAGE
    assert "-t: no To, Cc or Bcc" in mail.line()
    assert mail.written() == {"dead.letter"}  # a piped body is kept, whatever refused it
    (kept,) = mail.kept()
    assert b"body" in kept.as_bytes()


def test_v_shows_the_dialogue_on_the_environment_stderr(
    mail: Mail, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-v", "-s", "x", "a@example.com") == 0
    assert "recipients: a@example.com" in mail.err
    assert "RCPT TO:<a@example.com>" in mail.err
    # Ends as `sendmail -v` does: whom the server took, through which hub, its reply.
    last = mail.err.splitlines()[-1]
    assert last.startswith(f"mail: delivered to a@example.com via {hub.host}:{hub.port}: 250")


# -- the user's own SMTP account (`set mta=smtp://...`) ---------------------------------------


def test_an_mta_url_in_mailrc_sends_through_that_account_with_auth(
    mail: Mail, mailhub: MailHubFactory
) -> None:
    """Not through the system configuration: its hub sees nothing."""
    system, own = mailhub(), mailhub(auth=True, auth_require_tls=False)
    mail.configure(system)
    user, secret = next(iter(DEFAULT_USERS.items()))
    rc = mail.rc(
        f"set mta=smtp://{user}@{own.host}:{own.port}\nset smtp-auth-password='{secret}'\n"
    )
    rc.chmod(0o600)
    assert mail("-s", "mine", "someone@example.com") == 0, mail.err
    assert mail.err == ""
    (received,) = own.wait_for(1)
    assert received.rcpt_tos == ["someone@example.com"]
    assert [(a.user, a.success) for a in own.auth_attempts] == [(user, True)]
    assert system.connections == 0


def test_an_account_that_cannot_be_used_is_refused_never_replaced(
    mail: Mail, mailhub: MailHubFactory
) -> None:
    system = mailhub()
    mail.configure(system)
    mail.rc("set mta=lmtp://mail.example.org\n")
    assert mail("-s", "x", "someone@example.com") == os.EX_CONFIG
    assert "lmtp:// is not supported" in mail.line()
    assert "message kept in" in mail.line()
    assert system.connections == 0
    assert len(mail.kept()) == 1


def test_a_temporary_failure_of_the_account_is_not_queued(mail: Mail) -> None:
    """The queue is flushed with the system configuration: 75, kept, as s-nail."""
    mail.rc(f"set mta=smtp://127.0.0.1:{closed_port()}\n")
    assert mail("-s", "x", "someone@example.com") == os.EX_TEMPFAIL
    assert "message kept in" in mail.line()
    assert not (mail.home / ".local" / "state" / "mailx-relay").exists()


def test_a_readable_password_in_mailrc_is_warned_about(mail: Mail, mailhub: MailHubFactory) -> None:
    own = mailhub(auth=True, auth_require_tls=False)
    user, secret = next(iter(DEFAULT_USERS.items()))
    rc = mail.rc(
        f"set mta=smtp://{user}:{secret.replace(' ', '%20').replace('#', '%23')}"
        f"@{own.host}:{own.port}\n"
    )
    rc.chmod(0o644)
    assert mail("-s", "x", "someone@example.com") == 0
    assert mail.line() == (
        f"mail: warning: {rc}:1: holds a password (mta) but is readable by others "
        f"(mode 644); fix with: chmod 600 {rc}"
    )
    assert secret not in mail.err


def test_mailrc_diagnostics_are_printed_and_the_rest_read(
    mail: Mail, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    mail.configure(hub)
    mail.rc("alias broken 'unterminated\n" + ARCHWIKI_RC)
    assert mail("-s", "x", "archuser") == 0
    assert f"{mail.home / '.mailrc'}:1:" in mail.err
    assert hub.wait_for(1)[0].rcpt_tos == ["someone@example.com"]


# -- refusals and failures: status, one line, the message kept -------------------------


def test_refused_local_name_is_67_with_the_fix_once_and_the_message_kept(
    mail: Mail, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-s", "x", "nosuchuser1234", body=b"hi\n") == os.EX_NOUSER
    line = mail.line()
    assert line.startswith("mail: recipient 'nosuchuser1234' is a local name")
    # The hint is the fix, already in the message: printed once.
    assert line.count("mail-alias add nosuchuser1234 ADDRESS") == 1
    assert line.endswith(f"; message kept in {mail.dead_letter}")
    assert hub.connections == 0
    (kept,) = mail.kept()
    assert kept["Subject"] == "x"
    assert kept.get_payload() == "hi\n"
    assert stat.S_IMODE(mail.dead_letter.stat().st_mode) == 0o600


def test_a_5xx_refusal_names_the_server_reply_and_keeps_the_message(
    mail: Mail, mailhub: MailHubFactory
) -> None:
    hub = mailhub(rcpt_faults={"gone@example.com": (550, "5.1.1 no such mailbox")})
    mail.configure(hub)
    assert mail("-s", "x", "gone@example.com") == os.EX_NOUSER
    line = mail.line()
    assert "no such mailbox" in line
    assert line.endswith(f"message kept in {mail.dead_letter}")
    assert len(mail.kept()) == 1


#: Recipient arguments `mail` refuses (65) before anything is read or sent, and a word of
#: the line that says why; the black-box tests run the installed command on them too.
DANGEROUS_ARGUMENTS = [
    (["archuser", "-c", "x@example.com"], "options must come before"),
    # A leading '-' is refused unless placed after -. (option injection into a
    # downstream sendmail); the error says how to mean it.
    (["a@example.com", "-odd@example.org"], "really starts with '-' goes after -."),
    (["a@example.com\r\nRCPT TO:<evil@example.com>"], "CR, LF"),
    (["|touch /tmp/pwned"], "pipe recipient refused"),
    (["/tmp/file"], "file recipient refused"),
]


@pytest.mark.parametrize(("args", "words"), DANGEROUS_ARGUMENTS)
def test_dangerous_arguments_are_65_before_the_body_is_read(
    mail: Mail, mailhub: MailHubFactory, args: list[str], words: str
) -> None:
    hub = mailhub()
    mail.configure(hub)
    mail.rc(ARCHWIKI_RC)
    assert mail("-s", "x", *args) == os.EX_DATAERR
    assert words in mail.line()
    assert hub.connections == 0
    # A piped body is read before anything is refused, so that it is kept (cron's
    # report is not lost); on a terminal it is refused before anything is typed.
    assert "message kept in" in mail.line()
    (kept,) = mail.kept()
    assert kept.get_payload() == "body\n"
    assert mail("-s", "x", *args, tty=True) == os.EX_DATAERR
    assert len(mail.kept()) == 1


def test_alias_loop_is_65_and_the_draft_kept(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    mail.rc("alias a b\nalias b c\nalias c a\n")
    assert mail("-s", "loop", "a", body=b"draft\n") == os.EX_DATAERR
    line = mail.line()
    assert "alias loop: a -> b -> c -> a" in line
    assert line.endswith(f"message kept in {mail.dead_letter}")
    (kept,) = mail.kept()
    assert kept["Subject"] == "loop"
    assert kept["To"] is None  # the recipients are what failed
    assert kept.get_payload() == "draft\n"


def test_a_refused_header_prints_its_hint_and_keeps_the_draft(mail: Mail) -> None:
    assert mail("-C", "Date: x", "-s", "hdr", "a@example.com") == os.EX_DATAERR
    line = mail.line()
    assert "custom header Date: mail writes this header itself" in line
    assert "; use -s, -c, -b, -r, -a or the reply-to/sender variables instead; " in line
    assert line.endswith(f"message kept in {mail.dead_letter}")
    assert mail.kept()[0]["Subject"] == "hdr"


def test_down_hub_with_the_default_queue_queues(mail: Mail) -> None:
    conf = mail.configure(None, mailhub=f"127.0.0.1:{closed_port()}")
    assert mail("-s", "later", "a@example.com") == 0
    line = mail.line()
    assert line.startswith("mail: queued as ")
    with Queue.open(str(conf.parent / "queue"), create=False) as queue:
        assert queue.count() == 1
    assert not mail.dead_letter.exists()


def test_down_hub_without_a_queue_is_75_and_keeps_the_whole_message(mail: Mail) -> None:
    mail.configure(None, mailhub=f"127.0.0.1:{closed_port()}", Queue="no")
    mail.rc(ARCHWIKI_RC)
    assert mail("-s", "kept", "archuser", body=b"precious\n") == os.EX_TEMPFAIL
    assert mail.line().endswith(f"message kept in {mail.dead_letter}")
    (kept,) = mail.kept()
    assert kept["To"] == "My Name <someone@example.com>"
    assert kept.get_payload() == "precious\n"


def test_unreadable_relay_config_is_78_and_keeps_the_built_message(mail: Mail) -> None:
    mail.environ["RELAY_CONFIG"] = str(mail.home / "missing.conf")
    assert mail("-r", "me@example.org", "-s", "cfg", "a@example.com") == os.EX_CONFIG
    assert mail.line().endswith(f"message kept in {mail.dead_letter}")
    (kept,) = mail.kept()
    assert kept["To"] == "a@example.com"
    assert kept.get_from().startswith("me@example.org ")


def test_DEAD_names_the_dead_letter_file(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    mail.rc("set DEAD=~/saved/dead.mbox\n")
    (mail.home / "saved").mkdir()
    assert mail("-s", "x", "nosuchuser1234") == os.EX_NOUSER
    assert mail.line().endswith(f"message kept in {mail.home / 'saved' / 'dead.mbox'}")
    assert len(mail.kept(mail.home / "saved" / "dead.mbox")) == 1
    assert not mail.dead_letter.exists()


def test_when_even_keeping_fails_the_status_says_so(mail: Mail) -> None:
    mail.dead_letter.mkdir()  # cannot be opened for appending
    assert mail("-C", "Date: x", "a@example.com") == os.EX_CANTCREAT
    line = mail.line()
    assert "mail writes this header itself" in line
    assert "and the message could not be kept" in line
    assert "message kept in" not in line


# -- an external mta -------------------------------------------------------------------


def test_mta_variable_invokes_an_external_sendmail_as_s_nail(mail: Mail) -> None:
    script, log = recorder(mail.home)
    mail.rc(ARCHWIKI_RC)
    status = mail(
        "-S", f"mta={script}", "-r", "Me Myself <me@example.org>", "-s", "x", "archuser", "bob"
    )
    assert status == 0, mail.err
    seen = json.loads(log.read_text())
    assert seen["argv"] == [
        "-i", "-F", "Me Myself", "-f", "me@example.org", "--", "someone@example.com", "bob",
    ]  # fmt: skip
    assert "\r\n" not in seen["stdin"]
    assert "To: My Name <someone@example.com>, bob" in seen["stdin"]


def test_mta_arguments_pass_with_expandargv_only(mail: Mail) -> None:
    script, log = recorder(mail.home)
    assert mail("-S", f"mta={script}", "a@example.com", "--", "-oi") == os.EX_USAGE
    assert "expandargv" in mail.line()
    assert not log.exists()
    status = mail("-S", f"mta={script}", "-S", "expandargv", "-v", "a@example.com", "--", "-oi")
    assert status == 0, mail.err
    assert json.loads(log.read_text())["argv"] == ["-i", "-v", "-oi", "--", "a@example.com"]


def test_mta_exit_status_is_passed_on_and_the_message_kept(mail: Mail) -> None:
    script, _log = recorder(mail.home, status=69)
    assert mail("-S", f"mta={script}", "-s", "x", "a@example.com") == 69
    line = mail.line()
    assert f"mta {script} exited with status 69" in line
    assert line.endswith(f"message kept in {mail.dead_letter}")
    assert mail.kept()[0]["To"] == "a@example.com"


def test_mta_that_cannot_run_is_69_and_the_message_kept(mail: Mail) -> None:
    missing = mail.home / "no-such-sendmail"
    assert mail("-S", f"mta={missing}", "-s", "x", "a@example.com") == os.EX_UNAVAILABLE
    assert f"cannot run mta {missing}" in mail.line()
    assert len(mail.kept()) == 1


# -- record ----------------------------------------------------------------------------


def test_record_keeps_a_copy_of_what_was_sent(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    mail.rc(f"set folder={mail.home / 'Mail'}\nset record=+sent\n")
    (mail.home / "Mail").mkdir()
    assert mail("-s", "rec", "a@example.com") == 0, mail.err
    assert len(hub.wait_for(1)) == 1
    (copy,) = mail.kept(mail.home / "Mail" / "sent")
    assert copy["Subject"] == "rec"


def test_record_after_an_external_mta(mail: Mail) -> None:
    script, _log = recorder(mail.home)
    mail.rc(f"set record={mail.home / 'sent'}\n")
    assert mail("-S", f"mta={script}", "-s", "rec", "a@example.com") == 0, mail.err
    assert mail.kept(mail.home / "sent")[0]["Subject"] == "rec"


def test_record_that_cannot_be_written_is_a_warning(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    (mail.home / "sent").mkdir()
    mail.rc(f"set record={mail.home / 'sent'}\n")
    assert mail("-s", "rec", "a@example.com") == 0
    assert "warning: sent, but no copy recorded" in mail.line()
    assert len(hub.wait_for(1)) == 1


def test_no_record_when_sending_failed(mail: Mail) -> None:
    mail.configure(None, mailhub=f"127.0.0.1:{closed_port()}", Queue="no")
    mail.rc(f"set record={mail.home / 'sent'}\n")
    assert mail("-s", "x", "a@example.com") == os.EX_TEMPFAIL
    assert not (mail.home / "sent").exists()


# -- -d: print, send nothing, write nothing --------------------------------------------


def test_d_prints_the_message_and_sends_nothing(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub, Queue="always")
    mail.rc(ARCHWIKI_RC + f"set record={mail.home / 'sent'}\n")
    assert mail("-d", "-r", "me@example.org", "-s", "x", "archuser") == 0
    assert "envelope from: me@example.org\n" in mail.err
    assert "envelope to: someone@example.com\n" in mail.err
    assert "To: My Name <someone@example.com>\n" in mail.err
    assert hub.connections == 0
    assert mail.written() == set()  # no record, no queue entry


def test_d_keeps_nothing_after_a_data_error_and_prints_the_hint(mail: Mail) -> None:
    assert mail("-d", "-C", "Date: x", "a@example.com") == os.EX_DATAERR
    line = mail.line()
    assert line == (
        "mail: custom header Date: mail writes this header itself; "
        "use -s, -c, -b, -r, -a or the reply-to/sender variables instead"
    )
    assert mail.written() == set()


def test_d_keeps_nothing_after_an_alias_loop(mail: Mail) -> None:
    mail.rc("alias a b\nalias b a\n")
    assert mail("-d", "-s", "x", "a") == os.EX_DATAERR
    assert "message kept" not in mail.line()
    assert mail.written() == set()


def test_d_keeps_nothing_for_a_q_abandon(mail: Mail) -> None:
    assert mail("-d", "-~", "-s", "x", "a@example.com", body=b"text\n~q\n") == 0
    assert mail.line() == "mail: message abandoned (~q), nothing kept (-d)"
    assert mail.written() == set()


def test_d_keeps_nothing_after_a_bug(mail: Mail, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(mailx.compose, "build", broken)
    monkeypatch.setattr(mailx.plain, "build", broken)  # the builder of simple drafts
    assert mail("-d", "-s", "x", "a@example.com") == os.EX_SOFTWARE
    assert mail.line() == (
        "mail: internal error: RuntimeError: simulated bug"
        " (run with MAILX_RELAY_DEBUG=1 for details)"
    )
    assert mail.written() == set()


# -- compose ---------------------------------------------------------------------------


def test_tilde_escapes_on_a_pipe_with_the_option(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    marker = mail.home / "ran"
    body = f"~s changed\n~c cc@example.com\n~! touch {marker}\nline\n".encode()
    assert mail("-~", "-s", "x", "a@example.com", body=body) == 0, mail.err
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["a@example.com", "cc@example.com"]
    message = parsed(received.data)
    assert message["Subject"] == "changed"
    assert message.get_content() == "line\n"
    assert not marker.exists()
    assert "allowed only in an interactive session" in mail.stdout.getvalue()


def test_tilde_lines_are_text_without_the_option(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    body = b"~s changed\n.\nend\n"
    assert mail("-s", "x", "a@example.com", body=body) == 0
    message = parsed(hub.wait_for(1)[0].data)
    assert message["Subject"] == "x"
    assert message.get_content() == body.decode()


def test_q_abandons_and_keeps_the_draft(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-~", "-s", "abandoned", "a@example.com", body=b"draft text\n~q\n") == 0
    assert mail.line() == f"mail: message abandoned (~q), kept in {mail.dead_letter}"
    assert hub.connections == 0
    (kept,) = mail.kept()
    assert kept["Subject"] == "abandoned"
    assert kept.get_payload() == "draft text\n"


def test_x_abandons_and_keeps_nothing(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-~", "-s", "gone", "a@example.com", body=b"draft\n~x\n") == 0
    assert mail.line() == "mail: message abandoned (~x), nothing kept"
    assert hub.connections == 0
    assert mail.written() == set()


def test_interactive_compose_prompts_and_allows_the_shell(
    mail: Mail, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    mail.configure(hub)
    marker = mail.home / "ran"
    typed = f"typed subject\nfirst\n~! touch {marker}\n~p\nlast\n".encode()
    assert mail("a@example.com", body=typed, tty=True) == 0, mail.err
    out = mail.stdout.getvalue()
    assert out.startswith("Subject: ")
    assert "Message contains:" in out
    assert marker.exists()
    message = parsed(hub.wait_for(1)[0].data)
    assert message["Subject"] == "typed subject"
    assert message.get_content() == "first\nlast\n"


# -- the command line ------------------------------------------------------------------


@pytest.mark.parametrize("args", [["-s", "x"], ["-Z", "a@example.com"], ["-c", "a@example.com"]])
def test_usage_errors_go_to_the_environment_stderr(mail: Mail, args: list[str]) -> None:
    assert mail(*args) == os.EX_USAGE
    assert mail.err.startswith("mail: ")
    assert "Usage: mail" in mail.err
    assert "Traceback" not in mail.err


def test_subject_newlines_become_spaces_with_a_warning(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-s", "Hi\nBcc: evil@example.net", "a@example.com") == 0
    assert "replaced by spaces" in mail.line()
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["a@example.com"]
    assert parsed(received.data)["Subject"] == "Hi Bcc: evil@example.net"


def test_parse_args_returns_an_immutable_request() -> None:
    request = parse_args(["-s", "x", "-S", "from=a@example.org", "-S", "noverbose", "b"])
    assert request.to == ("b",)
    assert dict(request.settings) == {"from": "a@example.org", "verbose": None}
    with pytest.raises(AttributeError):
        request.to = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        request.settings["x"] = "y"  # type: ignore[index]


# -- s-nail's option conventions ------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_v_prints_the_version(mail: Mail, flag: str) -> None:
    assert mail(flag) == 0
    assert mail.stdout.getvalue().startswith("mailx-relay mail ")
    assert mail.err == ""


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_the_usage(mail: Mail, flag: str) -> None:
    assert mail(flag) == 0
    assert mail.stdout.getvalue().startswith("Usage: mail ")
    assert "Options:" in mail.stdout.getvalue()


def test_i_is_accepted_and_ignored_and_the_last_s_wins(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-i", "-s", "first", "-vi", "-s", "second", "a@example.com") == 0
    (received,) = hub.wait_for(1)
    assert parsed(received.data)["Subject"] == "second"


def test_dash_dot_ends_the_options(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-s", "t", "-.", "a@example.com", "b@example.com") == 0
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["a@example.com", "b@example.com"]


def test_dash_dot_sends_to_an_address_starting_with_a_dash(
    mail: Mail, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-s", "t", "-c", "c@example.com", "-.", "-odd@example.org", "a@example.com") == 0
    assert mail.err == ""
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["-odd@example.org", "a@example.com", "c@example.com"]
    assert "RCPT TO:<-odd@example.org>" in hub.commands
    message = parsed(received.data)
    assert message["To"] == "-odd@example.org, a@example.com"  # as s-nail writes it
    assert message["Cc"] == "c@example.com"
    assert mail.written() == set()


def test_dash_dot_recipients_go_to_an_external_mta_after_the_double_dash(mail: Mail) -> None:
    script, log = recorder(mail.home)
    assert mail("-S", f"mta={script}", "-s", "t", "-.", "-odd@example.org") == 0
    assert json.loads(log.read_text())["argv"] == ["-i", "--", "-odd@example.org"]


def test_dash_dot_recipients_with_d_show_the_bare_envelope(mail: Mail) -> None:
    assert mail("-d", "-s", "t", "-.", "-odd@example.org") == 0
    assert "envelope to: -odd@example.org\n" in mail.err
    assert "To: -odd@example.org\n" in mail.err
    assert mail.written() == set()


def test_the_path_form_of_a_dash_address_works_in_an_alias_and_in_t(mail: Mail) -> None:
    mail.rc("alias odd '<-odd@example.org>'\n")
    body = b"~t <-tilde@example.org>\nbody\n"
    assert mail("-d", "-~", "-s", "t", "odd", body=body) == 0, mail.err
    assert "envelope to: -odd@example.org, -tilde@example.org\n" in mail.err
    assert "To: -odd@example.org, -tilde@example.org\n" in mail.err


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["-.", "-odd"], os.EX_DATAERR, "invalid recipient '<-odd>': not a valid address"),
        (["-.", "-odd@localhost"], os.EX_NOUSER, "local name starting with '-'"),
    ],
)
def test_dash_dot_still_refuses_what_is_not_an_address(
    mail: Mail, mailhub: MailHubFactory, args: list[str], status: int, words: str
) -> None:
    hub = mailhub()
    mail.configure(hub)
    assert mail("-s", "t", *args) == status
    assert words in mail.line()
    assert hub.connections == 0
    assert len(mail.kept()) == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-x", "a@example.com"], "mail: unknown option -x"),
        (["--frob", "a@example.com"], "mail: unknown option --frob"),
        (["-s"], "mail: option -s needs a value"),
        (["-dvq"], "mail: option -q needs a value"),
    ],
)
def test_usage_errors_name_the_option_never_the_parser(
    mail: Mail, args: list[str], says: str
) -> None:
    assert mail(*args) == os.EX_USAGE
    first, *usage = mail.err.splitlines()
    assert first == says
    assert usage and usage[0].startswith("Usage: mail")
    assert "Option(" not in mail.err and "Argument(" not in mail.err


def test_a_message_refused_before_the_relay_had_it_keeps_the_draft(
    mail: Mail, mailhub: MailHubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big attachment replaced between build and send: 66, and the text is kept."""
    import mailx.delivery
    from relay import NoInputError

    def changed(_message: object) -> object:
        raise NoInputError("attachment changed while the message was sent", path="dump.bin")

    hub = mailhub()
    mail.configure(hub)
    monkeypatch.setattr(mailx.delivery, "wire_input", changed)
    assert mail("-s", "dump", "a@example.com", body=b"see attached\n") == os.EX_NOINPUT
    assert "message kept in" in mail.line()
    (kept,) = mail.kept()
    assert kept["Subject"] == "dump"
    assert hub.messages == []


# -- display names from the command line (fullnames) ------------------------------------


def test_command_line_names_are_dropped_without_fullnames(
    mail: Mail, mailhub: MailHubFactory
) -> None:
    """As s-nail: To and Cc show the bare addresses of the arguments; names from the
    alias book, a -t template or ~t/~c stay."""
    hub = mailhub()
    mail.configure(hub)
    mail.rc(ARCHWIKI_RC)
    status = mail(
        "-~", "-s", "n", "-c", "Jane Roe <jane@example.org>", "-b", "Hid <h@example.org>",
        '"Doe, John" <john@example.org>', "j2@example.org (J Two)", "archuser",
        body=b"~t Tilde Person <tp@example.org>\nbody\n",
    )  # fmt: skip
    assert status == 0, mail.err
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == [
        "john@example.org",
        "j2@example.org",
        "someone@example.com",
        "tp@example.org",
        "jane@example.org",
        "h@example.org",
    ]
    message = parsed(received.data)
    assert message["To"] == (
        "john@example.org, j2@example.org, My Name <someone@example.com>,"
        " Tilde Person <tp@example.org>"
    )
    assert message["Cc"] == "jane@example.org"
    assert b"Hid" not in received.data and b"h@example.org" not in received.data


def test_fullnames_keeps_the_command_line_names(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    mail.rc("set fullnames\n")
    status = mail(
        "-s", "n", "-c", "Jane Roe <jane@example.org>", '"Doe, John" <john@example.org>'
    )  # fmt: skip
    assert status == 0, mail.err
    message = parsed(hub.wait_for(1)[0].data)
    assert message["To"] == '"Doe, John" <john@example.org>'
    assert message["Cc"] == "Jane Roe <jane@example.org>"
    # -S nofullnames beats the mail.rc.
    assert mail("-S", "nofullnames", "-s", "n", '"Doe, John" <john@example.org>') == 0
    assert parsed(hub.wait_for(2)[1].data)["To"] == "john@example.org"


def test_template_names_are_kept_without_fullnames(mail: Mail, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    mail.configure(hub)
    template = b'To: "Doe, John" <john@example.org>\nSubject: t\n\nbody\n'
    assert mail("-t", "Arg Name <arg@example.org>", body=template) == 0, mail.err
    message = parsed(hub.wait_for(1)[0].data)
    assert message["To"] == 'arg@example.org, "Doe, John" <john@example.org>'


def test_a_broken_editor_command_never_costs_the_piped_text(
    mail: Mail, mailhub: MailHubFactory
) -> None:
    """`~e` with unbalanced quotes in EDITOR: the escape fails, with one line; the text
    stays in the draft and is sent (it used to be a bug that kept nothing)."""
    hub = mailhub()
    mail.configure(hub)
    mail.environ["EDITOR"] = 'vi "unbalanced'
    body = b"important piped text\n~e\nmore text\n"
    assert mail("-~", "-s", "x", "a@example.com", body=body) == 0, mail.err
    (received,) = hub.wait_for(1)
    assert parsed(received.data).get_content() == "important piped text\nmore text\n"
    said = mail.stdout.getvalue() + mail.err
    assert "unbalanced" in said and "Traceback" not in said


def test_a_password_in_a_bad_set_line_is_not_echoed(mail: Mail, mailhub: MailHubFactory) -> None:
    """s-nail's old `set smtp-auth-password s3cr(et` (no `=`): the diagnostic names the
    word's position, never the word, which may be the password."""
    hub = mailhub()
    mail.configure(hub)
    mail.rc("set smtp-auth-password s3cr(et\nset bad(name\n")
    assert mail("-s", "x", "a@example.com") == 0
    assert "s3cr(et" not in mail.err
    assert "invalid variable name (word 2, not shown)" in mail.err
    assert "'bad(name'" in mail.err  # no password near it: shown as before


# -- the common command lines, parsed without docopt ----------------------------------------

ARG_POOL = [
    "-s", "-ssubj", "subj", "two words", "-c", "-cc@example.org", "c@example.org", "-b",
    "-a", "/etc/hostname", "-r", "me@example.org", "-S", "x=1", "noverbose", "-C",
    "X-Tag: t", "-q", "/dev/null", "-d", "-E", "-n", "-t", "-v", "-~", "-i", "-.", "--",
    "-", "-dv", "-ns", "-nsx", "-dEntv~", "-Z", "-sx", "a@example.com", "user", "-x@y",
    "-V", "--help", "--long", "",
]  # fmt: skip


def both_parsers(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    """parse_args's result (or refusal) with the common-path parser, and with docopt only."""

    def outcome() -> object:
        try:
            return parse_args(argv)
        except (UsageError, mailx.cli.Shown) as err:
            return (type(err).__name__, str(err))

    fast = outcome()
    with monkeypatch.context() as patch:
        patch.setattr(mailx.cli, "parse_common", lambda args: None)
        slow = outcome()
    return fast, slow


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "-s", "subj", "user"],
        ["-ns", "subj", "user"],
        ["-nssubj", "user"],
        ["-s", "a", "-s", "b", "user"],
        ["-c", "c@example.org", "-c", "d@example.org", "-b", "e@example.org", "a@example.com"],
        ["-a", "/etc/hostname", "-a", "/etc/hosts", "-r", "me@example.org", "a@example.com"],
        ["-r", "a@example.org", "-r", "b@example.org", "a@example.com"],
        ["-d", "-d", "a@example.com"],
        ["-q", "--", "a@example.com"],
        ["-S", "expandargv", "a@example.com", "--", "-oi"],
        ["-.", "-odd@example.org"],
        ["-t"],
        ["-", "a@example.com"],
        ["--", "a@example.com"],
        ["a@example.com", "-s", "late"],
        ["-~", "-E", "-v", "-i", "a@example.com"],
        [],
    ],
)
def test_the_common_parser_agrees_with_docopt(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = both_parsers(argv, monkeypatch)
    assert fast == slow


def test_the_common_parser_takes_the_common_command_lines() -> None:
    args, _ = mailx.cli.normalise(["-n", "-s", "subj", "-c", "c@example.org", "user"])
    assert mailx.cli.parse_common(args) is not None
    assert mailx.cli.parse_common(["-r", "a", "-r", "b", "x"]) is None  # docopt refuses


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(ARG_POOL), max_size=8))
def test_generated_command_lines_parse_alike(argv: list[str]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, slow = both_parsers(argv, monkeypatch)
    assert fast == slow
