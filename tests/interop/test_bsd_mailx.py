"""bsd-mailx with `set sendmail=` pointing at our sendmail.

bsd-mailx writes every header itself, Bcc included, and runs `sendmail -i -t`: the
recipients come from the headers, and Bcc must reach its address without being shown.
"""

from __future__ import annotations

import pytest

from tests.interop.conftest import LOGIN, REWRITE_DOMAIN, ROOT_ADDRESS, RelayFactory, need, parsed

pytestmark = pytest.mark.interop


def bsd_mailx() -> str:
    return need("bsd-mailx", "bsd-mailx", "/usr/bin/bsd-mailx")


def test_bsd_mailx_t_keeps_bcc_off_the_headers(relay: RelayFactory) -> None:
    program = bsd_mailx()
    r = relay()
    mailrc = r.home / "mailrc"
    mailrc.write_text(f"set sendmail={r.sendmail}\n")
    done = r.run(
        # -n: not /etc/mail.rc, so the test sees only its own settings.
        [
            program,
            "-n",
            "-s",
            "nightly backup",
            "-c",
            "cc@example.com",
            "-b",
            "audit@example.net",
            "ops@example.com",
        ],
        stdin="backup finished\n8-bit: café\n".encode(),
        env={"MAILRC": str(mailrc)},
    )
    received = r.one_message(done)
    assert received.mail_from == f"{LOGIN}@{REWRITE_DOMAIN}"
    assert sorted(received.rcpt_tos) == ["audit@example.net", "cc@example.com", "ops@example.com"]
    message = parsed(received.data)
    assert message["To"] == "ops@example.com"
    assert message["Cc"] == "cc@example.com"
    assert "Bcc" not in message
    assert b"audit@example.net" not in received.data
    assert message["Subject"] == "nightly backup"
    assert message["Message-ID"]  # bsd-mailx writes none
    assert message["Date"]
    assert message["From"].addresses[0].addr_spec == f"{LOGIN}@{REWRITE_DOMAIN}"
    assert message.get_content() == "backup finished\n8-bit: café\n"


def test_bsd_mailx_to_root_goes_to_the_root_address(relay: RelayFactory) -> None:
    """`echo ... | mail root`, as scripts on Debian do: root is a system account."""
    program = bsd_mailx()
    r = relay()
    (r.home / ".mailrc").write_text(f"set sendmail={r.sendmail}\n")
    done = r.run([program, "-n", "-s", "smartd: /dev/sda", "root"], stdin=b"SMART error\n")
    received = r.one_message(done)
    assert received.rcpt_tos == [ROOT_ADDRESS]
    message = parsed(received.data)
    assert message["To"] == "root"  # the header is not rewritten, the envelope is
    assert message.get_content() == "SMART error\n"
