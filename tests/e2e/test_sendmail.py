"""The installed `sendmail`, run exactly as cron and scripts run it, against a real server."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from tests.e2e.tools import assert_one_clean_line, run
from tests.mailhub import MailHubFactory, closed_port, dead_letters
from tests.relayconf import PASSWORD, write_config

CRON_MAIL = (
    b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@box> backup\n"
    b"Bcc: auditor@example.net\n\nbackup done\n.\nstill body\n"
)


def test_cron_style_t_oi_delivers_to_root_address(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    done = run("sendmail", ["-C", str(conf), "-t", "-oi"], home=tmp_path, stdin=CRON_MAIL)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["admin@example.com", "auditor@example.net"]
    assert received.mail_from == f"{pwd.getpwuid(os.getuid()).pw_name}@example.org"
    parsed = received.message()
    assert parsed["To"] == "root"  # headers are not rewritten; the envelope is resolved
    assert "Bcc" not in parsed
    assert parsed["Message-ID"]
    assert b"backup done\r\n.\r\nstill body\r\n" in received.data


def test_cronie_flags(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    done = run(
        "sendmail",
        ["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t"],
        home=tmp_path,
        stdin=b"To: ops@example.com\nSubject: x\n\nhi\n",
        env={"RELAY_CONFIG": str(conf)},
    )
    assert done.returncode == 0, done.stderr
    assert hub.wait_for(1)[0].rcpt_tos == ["ops@example.com"]


def test_unaliased_local_user_is_refused_and_kept(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    message = b"Subject: for a local user\n\nhi bob\n"
    done = run("sendmail", ["-C", str(conf), "nosuchuser1234"], home=tmp_path, stdin=message)
    assert done.returncode == os.EX_NOUSER
    line = assert_one_clean_line(done.stderr)
    assert "nosuchuser1234" in line
    assert "mail-alias add nosuchuser1234 ADDRESS" in line
    assert f"kept in {tmp_path / 'dead.letter'}" in line
    assert "example.org" not in line  # never rewritten to rewriteDomain
    assert hub.connections == 0
    (kept,) = dead_letters(tmp_path)
    assert kept["Subject"] == "for a local user"


def test_no_recipient_is_a_usage_error(tmp_path: Path, mailhub: MailHubFactory) -> None:
    conf = write_config(tmp_path, mailhub())
    done = run("sendmail", ["-C", str(conf)], home=tmp_path, stdin=b"Subject: x\n\nhi\n")
    assert done.returncode == os.EX_USAGE
    assert "no recipients" in assert_one_clean_line(done.stderr)
    assert len(dead_letters(tmp_path)) == 1


def test_missing_config_is_78(tmp_path: Path) -> None:
    path = tmp_path / "missing.conf"
    done = run("sendmail", ["-C", str(path), "a@example.com"], home=tmp_path, stdin=b"x\n")
    assert done.returncode == os.EX_CONFIG
    line = assert_one_clean_line(done.stderr)
    assert str(path) in line
    assert "No such file" in line
    # Nothing lost: the message cron piped in is in dead.letter, and stderr says so.
    assert f"message kept in {tmp_path / 'dead.letter'}" in line
    (kept,) = dead_letters(tmp_path)
    assert kept.get_payload() == "x\n"


def test_malformed_config_is_78_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("mailhub=h\nUseTLS=perhaps\n")
    done = run("sendmail", ["-C", str(path), "a@example.com"], home=tmp_path, stdin=b"x\n")
    assert done.returncode == os.EX_CONFIG
    line = assert_one_clean_line(done.stderr)
    assert f"{path}:2: UseTLS: expected yes or no" in line
    assert "message kept in" in line


def test_server_down_with_queue_off_is_tempfail_and_kept(tmp_path: Path) -> None:
    conf = write_config(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()}", Queue="no")
    done = run("sendmail", ["-C", str(conf), "a@example.com"], home=tmp_path, stdin=b"S: x\n\nhi\n")
    assert done.returncode == os.EX_TEMPFAIL
    line = assert_one_clean_line(done.stderr)
    assert "Connection refused" in line
    assert "dead.letter" in line


def test_malformed_recipient_is_65(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    done = run(
        "sendmail", ["-C", str(conf), "--", "-oQ/tmp/x"], home=tmp_path, stdin=b"S: x\n\nhi\n"
    )
    assert done.returncode == os.EX_DATAERR
    assert "looks like an option" in assert_one_clean_line(done.stderr)
    assert hub.connections == 0


def test_bv_explains_each_recipient_and_sends_nothing(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    done = run(
        "sendmail",
        ["-C", str(conf), "-bv", "root", "nosuchuser1234", "alice@example.com"],
        home=tmp_path,
    )
    assert done.returncode == os.EX_NOUSER
    out = done.stdout.decode().splitlines()
    assert out[0] == "root -> admin@example.com (system account: root=)"
    assert out[1].startswith("nosuchuser1234: refused: ")
    assert out[2] == "alice@example.com -> alice@example.com (remote address)"
    assert out[3].startswith("sender: ")
    assert hub.connections == 0


def test_verbose_auth_never_shows_the_password(
    tmp_path: Path, tls_hub: MailHubFactory, ca_file: Path
) -> None:
    hub = tls_hub(auth=True)
    conf = write_config(
        tmp_path, hub, AuthUser="alice", AuthPass=f'"{PASSWORD}"', TLS_CA_File=ca_file
    )
    done = run(
        "sendmail",
        ["-C", str(conf), "-v", "a@example.com"],
        home=tmp_path,
        stdin=b"Subject: v\n\nhi\n",
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode()
    assert "--> AUTH " in err
    assert PASSWORD not in err
    assert "cyBjcmV0" not in err  # no base64 of the secret's start either
    assert hub.auth_attempts[0].success


def test_pretend_masks_the_secret(tmp_path: Path, mailhub: MailHubFactory) -> None:
    conf = write_config(tmp_path, mailhub(), AuthUser="alice", AuthPass=f'"{PASSWORD}"')
    done = run("sendmail", ["-C", str(conf), "-P"], home=tmp_path)
    assert done.returncode == 0
    out = done.stdout.decode()
    assert "auth_pass = ***" in out
    assert PASSWORD not in out


def test_version_and_usage(tmp_path: Path) -> None:
    assert run("sendmail", ["-V"], home=tmp_path).stdout.startswith(b"mailx-relay sendmail ")
    done = run("sendmail", ["-Z"], home=tmp_path)
    assert done.returncode == os.EX_USAGE
    assert b"Traceback" not in done.stderr
