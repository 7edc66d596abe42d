"""mutt in batch mode (`mutt -s subj -a file -- rcpt < body`), `set sendmail=` ours.

With `use_envelope_from` mutt runs `sendmail -f FROM -- recipient...`: with
FromLineOverride=yes that address is the envelope sender. Its own MIME must arrive intact.
"""

from __future__ import annotations

import pytest

from tests.interop.conftest import LOGIN, REWRITE_DOMAIN, RelayFactory, need, parsed

pytestmark = pytest.mark.interop

BINARY = bytes(range(256)) * 4


def muttrc(sendmail: str, home: str) -> str:
    return "\n".join(
        [
            f'set sendmail="{sendmail}"',
            "set use_from=yes",
            'set from="Tester <tester@example.com>"',
            "set use_envelope_from=yes",
            "set copy=no",
            'set record=""',
            f'set folder="{home}/Mail"',
            f'set spoolfile="{home}/Mail/inbox"',
            'set charset="utf-8"',
            'set send_charset="us-ascii:utf-8"',
            "",
        ]
    )


def test_mutt_with_an_attachment(relay: RelayFactory) -> None:
    mutt = need("mutt", "mutt")
    r = relay(FromLineOverride="yes")
    rc = r.home / "muttrc"
    rc.write_text(muttrc(r.sendmail, str(r.home)))
    attachment = r.home / "dump.bin"
    attachment.write_bytes(BINARY)
    done = r.run(
        [
            mutt,
            "-n",
            "-F",
            str(rc),
            "-s",
            "weekly dump",
            "-c",
            "cc@example.com",
            "-b",
            "audit@example.net",
            "-a",
            str(attachment),
            "--",
            "boss@example.com",
        ],
        stdin="Attached, with a naïve résumé.\n".encode(),
    )
    received = r.one_message(done)
    assert received.mail_from == "tester@example.com"
    assert sorted(received.rcpt_tos) == ["audit@example.net", "boss@example.com", "cc@example.com"]
    message = parsed(received.data)
    assert message["From"] == "Tester <tester@example.com>"
    assert message["To"] == "boss@example.com"
    assert message["Cc"] == "cc@example.com"
    assert "Bcc" not in message
    assert message["Subject"] == "weekly dump"
    assert message["Message-ID"]  # mutt's own
    assert message.get_content_type() == "multipart/mixed"
    body, attached = message.iter_parts()
    assert body.get_content() == "Attached, with a naïve résumé.\n"
    assert attached.get_filename() == "dump.bin"
    assert attached.get_content() == BINARY


def test_mutt_without_override_keeps_the_relays_sender(relay: RelayFactory) -> None:
    """FromLineOverride=no (ssmtp's default): -f only names the From header."""
    mutt = need("mutt", "mutt")
    r = relay(FromLineOverride="no")
    rc = r.home / "muttrc"
    rc.write_text(muttrc(r.sendmail, str(r.home)))
    done = r.run(
        [mutt, "-n", "-F", str(rc), "-s", "plain", "--", "boss@example.com"], stdin=b"hi\n"
    )
    received = r.one_message(done)
    assert received.mail_from == f"{LOGIN}@{REWRITE_DOMAIN}"
    message = parsed(received.data)
    # ssmtp's rule: mutt's From header is replaced; -f gives its address, GECOS the name.
    assert message["From"].addresses[0].addr_spec == "tester@example.com"
    assert len(message.get_all("From")) == 1
    assert message.get_content() == "hi\n"
