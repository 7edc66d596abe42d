"""s-nail (Debian's `mail`) with `-S mta=` pointing at our sendmail.

s-nail invokes its MTA as `MTA -i [-F name -f addr] -- recipient...` with LF line ends and
the recipients of -c and -b in argv; it never writes a Bcc header.
"""

from __future__ import annotations

import pytest

from tests.interop.conftest import LOGIN, REWRITE_DOMAIN, RelayFactory, need, parsed

pytestmark = pytest.mark.interop


def test_snail_mta_delivers_to_and_cc_and_bcc(relay: RelayFactory) -> None:
    snail = need("s-nail", "s-nail")
    r = relay()
    done = r.run(
        [
            snail,
            "-S",
            f"mta={r.sendmail}",
            "-s",
            "disk full on host1",
            "-c",
            "cc@example.com",
            "-b",
            "bcc@example.net",
            "rcpt@example.com",
        ],
        stdin="line one\nÜnïcödé line\n".encode(),
    )
    received = r.one_message(done)
    assert done.stderr == b""
    assert received.mail_from == f"{LOGIN}@{REWRITE_DOMAIN}"
    assert sorted(received.rcpt_tos) == ["bcc@example.net", "cc@example.com", "rcpt@example.com"]
    message = parsed(received.data)
    assert message["To"] == "rcpt@example.com"
    assert message["Cc"] == "cc@example.com"
    assert message["Subject"] == "disk full on host1"
    assert "Bcc" not in message
    assert message["Message-ID"]  # s-nail wrote none without `from`: ours added it
    assert message["Date"]
    assert message["From"].addresses[0].addr_spec == f"{LOGIN}@{REWRITE_DOMAIN}"
    assert "s-nail" in message["User-Agent"]
    assert message.get_content() == "line one\nÜnïcödé line\n"


def test_snail_r_sets_the_envelope_with_from_line_override(relay: RelayFactory) -> None:
    snail = need("s-nail", "s-nail")
    r = relay(FromLineOverride="yes")
    attachment = r.home / "report.csv"
    attachment.write_bytes(b"host,disk\nhost1,97%\n")
    done = r.run(
        [
            snail,
            "-S",
            f"mta={r.sendmail}",
            "-r",
            "Ops Robot <ops@example.com>",
            "-s",
            "report",
            "-a",
            str(attachment),
            "boss@example.com",
        ],
        stdin=b"see attached\n",
    )
    received = r.one_message(done)
    assert received.mail_from == "ops@example.com"  # from s-nail's `-f`
    assert received.rcpt_tos == ["boss@example.com"]
    message = parsed(received.data)
    assert message["From"] == "Ops Robot <ops@example.com>"
    assert message["Message-ID"].endswith("@example.com>")  # s-nail's own, kept
    body, attached = message.iter_parts()
    assert body.get_content() == "see attached\n"
    assert attached.get_filename() == "report.csv"
    assert attached.get_content().encode() == b"host,disk\nhost1,97%\n"


def test_snail_failure_is_reported_and_kept(relay: RelayFactory) -> None:
    """A local name our relay refuses: s-nail sees our exit status, says so, keeps it.

    s-nail then writes $DEAD itself, replacing the file (so the copy our sendmail appended
    there is replaced by s-nail's own, which is the same message).
    """
    snail = need("s-nail", "s-nail")
    r = relay()
    done = r.run(
        [snail, "-S", f"mta={r.sendmail}", "-s", "x", "nosuchuser1234"], stdin=b"kept body\n"
    )
    assert done.returncode != 0
    assert b"mail-alias add nosuchuser1234 ADDRESS" in done.stderr
    assert b"message not sent" in done.stderr  # s-nail saw our exit status
    assert r.hub.connections == 0
    assert b"kept body" in (r.home / "dead.letter").read_bytes()
