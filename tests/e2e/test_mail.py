"""The installed `mail`, as a user types it, against a real server (mail(1))."""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import stat
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.e2e.tools import assert_one_clean_line, run, run_measured
from tests.mailhub import MailHub, MailHubFactory, closed_port, dead_letters, read_mbox
from tests.mailx.test_cli import DANGEROUS_ARGUMENTS
from tests.relayconf import write_config

ARCHWIKI_RC = "set from=me@example.org\nalias archuser 'My Name'<someone@example.com>\n"


def setup(
    tmp_path: Path, hub: MailHub | None, rc: str = ARCHWIKI_RC, **keys: object
) -> dict[str, str]:
    conf = write_config(tmp_path, hub, **keys)
    (tmp_path / ".mailrc").write_text(rc)
    return {"RELAY_CONFIG": str(conf)}


def mail(
    tmp_path: Path, env: dict[str, str], *args: str, body: bytes = b"body\n"
) -> subprocess.CompletedProcess[bytes]:
    return run("mail", list(args), home=tmp_path, stdin=body, env=env)


def parsed(data: bytes) -> EmailMessage:
    """The message as a reader sees it: wire CRLF line ends read as LF."""
    message = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_archwiki_alias_reaches_the_address_with_its_display_name(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    done = mail(tmp_path, setup(tmp_path, hub), "-s", "subj", "archuser")
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["someone@example.com"]
    message = parsed(received.data)
    assert message["To"] == "My Name <someone@example.com>"
    assert message["Subject"] == "subj"
    assert message["From"]
    assert message["Message-ID"]
    assert message.get_content() == "body\n"
    names = [name.lower() for name in message]
    assert names.index("date") < names.index("to") < names.index("subject")


@pytest.mark.parametrize(
    "body", [b"a\rb\r\nc", b"no final newline", b"crlf\r\nlines\r\n", b"lf\nlines\n"]
)
def test_the_body_arrives_byte_for_byte(
    tmp_path: Path, mailhub: MailHubFactory, body: bytes
) -> None:
    """`printf 'a\\rb\\r\\nc' | mail -s t user@example.org`: the reader decodes exactly the
    bytes that were piped in (lone CR, CRLF, no final newline), as with s-nail."""
    hub = mailhub()
    done = mail(tmp_path, setup(tmp_path, hub), "-s", "t", "user@example.org", body=body)
    assert done.returncode == 0, done.stderr
    (received,) = hub.wait_for(1)
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    payload = message.get_payload(decode=True)
    if message["Content-Transfer-Encoding"] != "base64":  # line-based: CRLF breaks are LF
        assert isinstance(payload, bytes)
        payload = payload.replace(b"\r\n", b"\n")
    assert payload == body


def test_big_attachment_is_sent_in_small_memory_and_arrives_intact(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    attachment = tmp_path / "dump.bin"
    data = os.urandom(20 << 20)
    attachment.write_bytes(data)
    done, peak_kib = run_measured(
        "mail",
        ["-s", "dump", "-a", str(attachment), "archuser"],
        home=tmp_path,
        stdin=b"see attached\n",
        env=setup(tmp_path, hub),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    # The message is 27 MiB on the wire; the interpreter and its imports alone take
    # about 17 MiB, so a copy of the attachment anywhere would cross the line.
    assert 8 << 10 < peak_kib < 32 << 10
    (received,) = hub.wait_for(1, timeout=30)
    body, part = parsed(received.data).iter_parts()
    assert body.get_content() == "see attached\n"
    assert part.get_filename() == "dump.bin"
    assert part.get_content_type() == "application/octet-stream"
    sent = part.get_payload(decode=True)
    assert hashlib.sha256(sent).hexdigest() == hashlib.sha256(data).hexdigest()


def test_unaliased_local_user_is_refused_and_kept(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    done = mail(tmp_path, setup(tmp_path, hub), "-s", "x", "nosuchuser1234", body=b"hi\n")
    assert done.returncode == os.EX_NOUSER
    line = assert_one_clean_line(done.stderr)
    assert "mail-alias add nosuchuser1234 ADDRESS" in line
    assert str(tmp_path / "dead.letter") in line
    assert hub.connections == 0
    (kept,) = dead_letters(tmp_path)
    assert kept["Subject"] == "x"
    assert stat.S_IMODE((tmp_path / "dead.letter").stat().st_mode) == 0o600


def test_cc_bcc_attachment_and_custom_header(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    attachment = tmp_path / "Übersicht 2024.csv"
    attachment.write_text("a,b\n1,2\n")
    env = setup(tmp_path, hub, ARCHWIKI_RC + "alias team a@example.com b@example.com\n")
    done = mail(
        tmp_path,
        env,
        "-s",
        "Grüße",
        "-c",
        "team",
        "-b",
        "hidden@example.net",
        "-a",
        str(attachment),
        "-C",
        "X-Ticket: 42",
        "archuser",
    )
    assert done.returncode == 0, done.stderr
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == [
        "someone@example.com",
        "a@example.com",
        "b@example.com",
        "hidden@example.net",
    ]
    assert b"hidden@example.net" not in received.data
    assert b"=?utf-8?" in received.data  # the subject is RFC 2047-encoded on the wire
    message = parsed(received.data)
    assert message["Subject"] == "Grüße"
    assert message["Cc"] == "a@example.com, b@example.com"
    assert message["X-Ticket"] == "42"
    body, part = message.iter_parts()
    assert body.get_content() == "body\n"
    assert part.get_filename() == "Übersicht 2024.csv"
    assert part.get_content_type() == "text/csv"
    assert b"filename*=utf-8''%C3%9Cbersicht" in received.data


def test_missing_attachment_sends_nothing(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    done = mail(tmp_path, setup(tmp_path, hub), "-a", str(tmp_path / "nope"), "archuser")
    assert done.returncode == os.EX_NOINPUT
    assert "nope" in assert_one_clean_line(done.stderr)
    assert hub.connections == 0


@pytest.mark.parametrize(("args", "words"), DANGEROUS_ARGUMENTS)
def test_dangerous_recipients_are_refused_before_sending(
    tmp_path: Path, mailhub: MailHubFactory, args: list[str], words: str
) -> None:
    hub = mailhub()
    done = mail(tmp_path, setup(tmp_path, hub), "-s", "x", *args)
    assert done.returncode == os.EX_DATAERR
    assert words in assert_one_clean_line(done.stderr)
    assert hub.connections == 0
    assert not Path("/tmp/pwned").exists()


def test_alias_loop_is_refused_naming_the_cycle(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    env = setup(tmp_path, hub, "alias a b\nalias b c\nalias c a\n")
    done = mail(tmp_path, env, "-s", "x", "a")
    assert done.returncode == os.EX_DATAERR
    assert "alias loop: a -> b -> c -> a" in assert_one_clean_line(done.stderr)
    assert hub.connections == 0


def test_usage_errors(tmp_path: Path) -> None:
    for args in (["-s", "x"], ["-Z", "a@example.com"], ["-c", "a@example.com"]):
        done = run("mail", args, home=tmp_path)
        assert done.returncode == os.EX_USAGE, args
        assert b"Usage: mail" in done.stderr
        assert b"Traceback" not in done.stderr


def test_subject_newlines_become_spaces(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    done = mail(tmp_path, setup(tmp_path, hub), "-s", "Hi\nBcc: evil@example.net", "archuser")
    assert done.returncode == 0
    assert b"replaced by spaces" in done.stderr
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["someone@example.com"]
    assert parsed(received.data)["Subject"] == "Hi Bcc: evil@example.net"


def test_invalid_utf8_body_is_sent_safely(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    body = b"caf\xe9 cr\xe8me\n\x00nul\n"
    done = mail(tmp_path, setup(tmp_path, hub), "-s", "x", "archuser", body=body)
    assert done.returncode == 0, done.stderr
    (received,) = hub.wait_for(1)
    payload = parsed(received.data).get_payload(decode=True)
    assert payload == body


def test_empty_body_with_E_sends_nothing(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    done = mail(tmp_path, setup(tmp_path, hub), "-E", "-s", "x", "archuser", body=b"")
    assert done.returncode == 0
    assert hub.connections == 0


def test_dry_run_prints_and_sends_nothing(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    done = mail(tmp_path, setup(tmp_path, hub), "-d", "-s", "x", "archuser")
    assert done.returncode == 0
    err = done.stderr.decode()
    assert "envelope to: someone@example.com" in err
    assert "To: My Name <someone@example.com>" in err
    assert hub.connections == 0


def test_dry_run_error_prints_the_hint_and_keeps_nothing(tmp_path: Path) -> None:
    (tmp_path / ".mailrc").write_text(ARCHWIKI_RC)
    done = run("mail", ["-d", "-C", "Date: x", "archuser"], home=tmp_path, stdin=b"hi\n")
    assert done.returncode == os.EX_DATAERR
    line = assert_one_clean_line(done.stderr)
    assert line.endswith("; use -s, -c, -b, -r, -a or the reply-to/sender variables instead")
    assert not (tmp_path / "dead.letter").exists()


def test_template_t_reads_headers_from_stdin(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    body = b"To: archuser\nCc: c@example.com\nSubject: from template\nX-Tag: t\n\nthe body\n"
    done = mail(tmp_path, setup(tmp_path, hub), "-t", "extra@example.com", body=body)
    assert done.returncode == 0, done.stderr
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["extra@example.com", "someone@example.com", "c@example.com"]
    message = parsed(received.data)
    assert message["Subject"] == "from template"
    assert message["X-Tag"] == "t"
    assert message.get_content() == "the body\n"


def test_tilde_lines_are_text_from_a_pipe(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    marker = tmp_path / "ran"
    body = f"~! touch {marker}\n~s changed\n.\nend\n".encode()
    done = mail(tmp_path, setup(tmp_path, hub), "-s", "x", "archuser", body=body)
    assert done.returncode == 0
    message = parsed(hub.wait_for(1)[0].data)
    assert message["Subject"] == "x"
    assert message.get_content() == body.decode()
    assert not marker.exists()


def test_tilde_option_on_a_pipe_never_runs_a_shell(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    marker = tmp_path / "ran"
    body = f"~s changed\n~! touch {marker}\nline\n".encode()
    done = mail(tmp_path, setup(tmp_path, hub), "-~", "-s", "x", "archuser", body=body)
    assert done.returncode == 0, done.stderr
    message = parsed(hub.wait_for(1)[0].data)
    assert message["Subject"] == "changed"
    assert message.get_content() == "line\n"
    assert not marker.exists()


def test_relay_failure_keeps_the_whole_message(tmp_path: Path) -> None:
    env = setup(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()}", Queue="no")
    done = mail(tmp_path, env, "-s", "kept", "archuser", body=b"precious\n")
    assert done.returncode == os.EX_TEMPFAIL
    assert "dead.letter" in assert_one_clean_line(done.stderr)
    (kept,) = dead_letters(tmp_path)
    assert kept["To"] == "My Name <someone@example.com>"
    assert kept.get_payload() == "precious\n"


def test_mta_variable_invokes_an_external_sendmail_as_s_nail(tmp_path: Path) -> None:
    recorder = tmp_path / "fake-sendmail"
    log = tmp_path / "argv.json"
    recorder.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'stdin': sys.stdin.read()}}, open({str(log)!r}, 'w'))\n"
    )
    recorder.chmod(0o755)
    (tmp_path / ".mailrc").write_text(ARCHWIKI_RC)
    done = run(
        "mail",
        ["-S", f"mta={recorder}", "-r", "Me Myself <me@example.org>", "-s", "x", "archuser", "bob"],
        home=tmp_path,
        stdin=b"hi\n",
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(log.read_text())
    assert seen["argv"] == [
        "-i",
        "-F",
        "Me Myself",
        "-f",
        "me@example.org",
        "--",
        "someone@example.com",
        "bob",
    ]
    assert "\r\n" not in seen["stdin"]
    assert "To: My Name <someone@example.com>, bob" in seen["stdin"]


def test_mta_exit_status_is_honoured_and_message_kept(tmp_path: Path) -> None:
    failing = tmp_path / "failing-sendmail"
    failing.write_text("#!/bin/sh\ncat >/dev/null\nexit 69\n")
    failing.chmod(0o755)
    (tmp_path / ".mailrc").write_text(ARCHWIKI_RC)
    done = run(
        "mail", ["-S", f"mta={failing}", "-s", "x", "archuser"], home=tmp_path, stdin=b"hi\n"
    )
    assert done.returncode == 69
    assert len(dead_letters(tmp_path)) == 1


def test_mta_arguments_need_expandargv(tmp_path: Path) -> None:
    (tmp_path / ".mailrc").write_text(ARCHWIKI_RC)
    done = run("mail", ["-s", "x", "archuser", "--", "-oi"], home=tmp_path, stdin=b"hi\n")
    assert done.returncode == os.EX_USAGE
    assert "expandargv" in done.stderr.decode()


def test_record_keeps_a_copy(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    env = setup(tmp_path, hub, ARCHWIKI_RC + f"set record={tmp_path / 'sent'}\n")
    assert mail(tmp_path, env, "-s", "rec", "archuser").returncode == 0
    (copy,) = read_mbox(tmp_path / "sent")
    assert copy["Subject"] == "rec"


def test_mailrc_syntax_error_is_reported_and_the_rest_read(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    env = setup(tmp_path, hub, "alias broken 'unterminated\n" + ARCHWIKI_RC)
    done = mail(tmp_path, env, "-s", "x", "archuser")
    assert done.returncode == 0
    assert f"{tmp_path / '.mailrc'}:1:" in done.stderr.decode()
    assert hub.wait_for(1)[0].rcpt_tos == ["someone@example.com"]


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["-s", "x", "-a", "/nonexistent/report.pdf", "ops@example.org"], os.EX_NOINPUT),
        (["-s", "x", "-q", "/nonexistent/quote", "ops@example.org"], os.EX_NOINPUT),
        (["-s", "x", "-x", "ops@example.org"], os.EX_USAGE),
        (["-s", "x", "ops@example.org", "--", "-oi"], os.EX_USAGE),
    ],
)
def test_a_refused_command_line_keeps_the_piped_body(
    tmp_path: Path, args: list[str], status: int
) -> None:
    """`cmd | mail -s x -a missing.pdf ops`: the report is not lost."""
    done = mail(tmp_path, setup(tmp_path, None), *args, body=b"nightly report\n")
    assert done.returncode == status
    assert f"message kept in {tmp_path / 'dead.letter'}" in done.stderr.decode()
    (kept,) = dead_letters(tmp_path)
    assert kept.get_payload() == "nightly report\n"


def test_a_refused_command_line_with_d_keeps_nothing(tmp_path: Path) -> None:
    done = mail(tmp_path, setup(tmp_path, None), "-dx", "ops@example.org", body=b"report\n")
    assert done.returncode == os.EX_USAGE
    assert not (tmp_path / "dead.letter").exists()
