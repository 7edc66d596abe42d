"""The exact sendmail command lines of the two crons, with the messages they write.

Debian's cron (3.0pl1): `sendmail -FCronDaemon -i -B8BITMIME -oem USER`, USER being
MAILTO or the crontab's owner. cronie (Fedora, Arch): `sendmail -FCronDaemon -i -odi -oem
-oi -t`, recipients in the To header. Both write 8-bit UTF-8 output as is. The crons
themselves need a running daemon and a minute to pass, so their command lines are run
directly; the messages are the ones their source writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.interop.conftest import LOGIN, REWRITE_DOMAIN, ROOT_ADDRESS, RelayFactory, parsed

pytestmark = pytest.mark.interop

DEBIAN_CRON = ["-FCronDaemon", "-i", "-B8BITMIME", "-oem"]
CRONIE = ["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t"]

OUTPUT = "backup: 3 files, 1,2 Go — terminé\n.\n..leading dots\nFrom the tape\n"


def debian_cron_message(user: str) -> bytes:
    """As do_command.c writes it (the X-Cron-Env lines are the job's environment)."""
    return (
        f"From: root (Cron Daemon)\nTo: {user}\n"
        f"Subject: Cron <{user}@host1> /usr/local/bin/backup\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n"
        "Content-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\n"
        f"X-Cron-Env: <HOME=/root>\nX-Cron-Env: <LOGNAME={user}>\n\n{OUTPUT}"
    ).encode()


def cronie_message(to: str, sender: str = "root") -> bytes:
    """As cronie's do_command.c writes it: From "(Cron Daemon)" <MAILFROM or the user>."""
    return (
        f'From: "(Cron Daemon)" <{sender}>\nTo: {to}\n'
        "Subject: Cron <root@host1> /usr/local/bin/backup\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n"
        "Precedence: bulk\nX-Cron-Env: <SHELL=/bin/sh>\n\n" + OUTPUT
    ).encode()


def test_debian_cron_to_root(relay: RelayFactory) -> None:
    r = relay()
    done = r.run([r.sendmail, *DEBIAN_CRON, "root"], stdin=debian_cron_message("root"))
    received = r.one_message(done)
    assert done.stderr == b""
    assert received.mail_from == f"{LOGIN}@{REWRITE_DOMAIN}"
    assert received.rcpt_tos == [ROOT_ADDRESS]  # root is a system account: root=
    message = parsed(received.data)
    assert message["To"] == "root"
    # FromLineOverride=no: ssmtp's From, with -F as the display name.
    assert message["From"] == f"CronDaemon <{LOGIN}@{REWRITE_DOMAIN}>"
    assert len(message.get_all("From")) == 1
    assert message["Subject"] == "Cron <root@host1> /usr/local/bin/backup"
    assert message.get_all("X-Cron-Env") == ["<SHELL=/bin/sh>", "<HOME=/root>", "<LOGNAME=root>"]
    assert message["Message-ID"]
    assert message.get_content() == OUTPUT


def test_debian_cron_to_a_user_with_an_alias(relay: RelayFactory, tmp_path: Path) -> None:
    """MAILTO unset: cron mails the crontab's owner, a login name: it needs an alias."""
    aliases = tmp_path / "aliases"
    aliases.write_text("backupuser: backups@example.com\n")
    r = relay(Aliases=aliases)
    done = r.run([r.sendmail, *DEBIAN_CRON, "backupuser"], stdin=debian_cron_message("backupuser"))
    received = r.one_message(done)
    assert received.rcpt_tos == ["backups@example.com"]
    assert parsed(received.data).get_content() == OUTPUT


def test_debian_cron_to_a_user_without_an_alias_is_refused_and_kept(
    relay: RelayFactory,
) -> None:
    """Never sent to a stranger at rewriteDomain (ssmtp's trap); cron sees a failure."""
    r = relay()
    done = r.run(
        [r.sendmail, *DEBIAN_CRON, "nosuchuser1234"], stdin=debian_cron_message("nosuchuser1234")
    )
    assert done.returncode == os.EX_NOUSER
    assert b"mail-alias add nosuchuser1234 ADDRESS" in done.stderr
    assert r.hub.connections == 0
    kept = (r.home / "dead.letter").read_bytes()
    assert b"Subject: Cron <nosuchuser1234@host1>" in kept
    assert "1,2 Go — terminé\n.\n..leading dots\n>From the tape\n".encode() in kept  # mbox


def test_cronie_t_with_mailto(relay: RelayFactory) -> None:
    r = relay()
    done = r.run([r.sendmail, *CRONIE], stdin=cronie_message("ops@example.com, root"))
    received = r.one_message(done)
    assert done.stderr == b""
    assert received.mail_from == f"{LOGIN}@{REWRITE_DOMAIN}"
    assert received.rcpt_tos == ["ops@example.com", ROOT_ADDRESS]
    message = parsed(received.data)
    assert message["To"] == "ops@example.com, root"
    assert message["From"] == f"CronDaemon <{LOGIN}@{REWRITE_DOMAIN}>"
    assert message["Precedence"] == "bulk"
    assert message.get_content() == OUTPUT


def test_cronie_with_mailfrom_and_from_line_override(relay: RelayFactory) -> None:
    """MAILFROM=backup@example.com in the crontab, FromLineOverride=yes: that is the sender."""
    r = relay(FromLineOverride="yes")
    done = r.run(
        [r.sendmail, *CRONIE], stdin=cronie_message("ops@example.com", "backup@example.com")
    )
    received = r.one_message(done)
    assert received.mail_from == "backup@example.com"
    assert parsed(received.data)["From"] == '"(Cron Daemon)" <backup@example.com>'


def test_cronie_bare_sender_with_from_line_override_gets_a_domain(relay: RelayFactory) -> None:
    """The ArchWiki config (FromLineOverride=YES) with cronie's default MAILFROM."""
    r = relay(FromLineOverride="yes")
    done = r.run([r.sendmail, *CRONIE], stdin=cronie_message("ops@example.com"))
    received = r.one_message(done)
    assert received.mail_from == f"root@{REWRITE_DOMAIN}"


def test_bare_f_with_from_line_override_gets_a_domain(relay: RelayFactory) -> None:
    r = relay(FromLineOverride="yes")
    done = r.run([r.sendmail, "-f", "root", "-i", "ops@example.com"], stdin=b"Subject: x\n\nhi\n")
    received = r.one_message(done)
    assert received.mail_from == f"root@{REWRITE_DOMAIN}"
    assert parsed(received.data)["From"].addresses[0].addr_spec == f"root@{REWRITE_DOMAIN}"
