"""TLS failures through the installed `sendmail` and `mailq`: deferred, as Postfix does.

A certificate that fails verification or its pin, and a STARTTLS the server does not
offer, are temporary: under `Queue=fallback` the message is queued (exit 0, the reason
on stderr and in `mailq`), with `Queue=no` it is kept in dead.letter with 75. The flush
leaves such entries queued without charging them a failed attempt. A TLS protocol
mismatch on first contact is queued too, but says it is a configuration error.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.e2e.tools import assert_one_clean_line, run
from tests.mailhub import MailHub, MailHubFactory, dead_letters
from tests.relayconf import write_config

MESSAGE = b"Subject: tls\nMessage-ID: <tls-1@test>\n\nbody\n"


def sendmail(tmp_path: Path, conf: Path) -> subprocess.CompletedProcess[bytes]:
    return run(
        "sendmail", ["-C", str(conf), "-oi", "alice@example.com"], home=tmp_path, stdin=MESSAGE
    )


def entries(tmp_path: Path, conf: Path) -> list[dict[str, Any]]:
    done = run("mailq", ["-C", str(conf), "--json"], home=tmp_path)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)["entries"]
    return found


def untrusted_hub(mailhub: MailHubFactory, cert: trustme.LeafCert) -> MailHub:
    return mailhub(tls="starttls", cert=cert)


@pytest.mark.parametrize("cert_name", ["self_signed_cert", "expired_cert", "wrong_host_cert"])
def test_a_rejected_certificate_is_queued_with_its_reason(
    tmp_path: Path,
    mailhub: MailHubFactory,
    ca_file: Path,
    cert_name: str,
    request: pytest.FixtureRequest,
) -> None:
    hub = untrusted_hub(mailhub, request.getfixturevalue(cert_name))
    conf = write_config(tmp_path, hub, TLS_CA_File=ca_file)
    done = sendmail(tmp_path, conf)
    assert done.returncode == 0, done.stderr
    line = assert_one_clean_line(done.stderr)
    assert line.startswith("sendmail: queued as ") and "certificate" in line, line
    (entry,) = entries(tmp_path, conf)
    assert "certificate" in entry["last_error"]
    assert entry["attempts"] == 1
    # Not the message's fault: due again at once, as after a hub that is down.
    assert entry["due"] is True
    shown = run("mailq", ["-C", str(conf)], home=tmp_path).stdout.decode()
    assert "certificate" in shown
    assert hub.messages == [] and not (tmp_path / "dead.letter").exists()


def test_a_rejected_certificate_with_queue_no_is_75_and_kept(
    tmp_path: Path, mailhub: MailHubFactory, ca_file: Path, self_signed_cert: trustme.LeafCert
) -> None:
    hub = untrusted_hub(mailhub, self_signed_cert)
    conf = write_config(tmp_path, hub, TLS_CA_File=ca_file, Queue="no")
    done = sendmail(tmp_path, conf)
    assert done.returncode == os.EX_TEMPFAIL
    line = assert_one_clean_line(done.stderr)
    assert "certificate" in line and "dead.letter" in line
    (kept,) = dead_letters(tmp_path)
    assert kept["Message-ID"] == "<tls-1@test>"
    assert entries(tmp_path, conf) == []


def test_starttls_not_offered_is_queued(
    tmp_path: Path, tls_hub: MailHubFactory, ca_file: Path
) -> None:
    hub = tls_hub(offer_starttls=False)
    conf = write_config(tmp_path, hub, TLS_CA_File=ca_file)
    done = sendmail(tmp_path, conf)
    assert done.returncode == 0, done.stderr
    line = assert_one_clean_line(done.stderr)
    assert line.startswith("sendmail: queued as ") and "does not offer STARTTLS" in line
    (entry,) = entries(tmp_path, conf)
    assert "does not offer STARTTLS" in entry["last_error"]
    assert not any(c.startswith("MAIL") for c in hub.commands)


def test_a_pin_mismatch_is_queued(tmp_path: Path, tls_hub: MailHubFactory, ca_file: Path) -> None:
    hub = tls_hub()
    wrong = "AB:" * 31 + "AB"
    conf = write_config(tmp_path, hub, TLS_CA_File=ca_file, TLSFingerprint=wrong)
    done = sendmail(tmp_path, conf)
    assert done.returncode == 0, done.stderr
    line = assert_one_clean_line(done.stderr)
    assert "does not match TLSFingerprint" in line and f"expected {wrong}" in line
    (entry,) = entries(tmp_path, conf)
    assert "does not match TLSFingerprint" in entry["last_error"]
    assert not any(c.startswith("MAIL") for c in hub.commands)


def test_the_flush_keeps_them_queued_then_delivers_once_the_certificate_is_good(
    tmp_path: Path,
    mailhub: MailHubFactory,
    ca_file: Path,
    self_signed_cert: trustme.LeafCert,
    server_cert: trustme.LeafCert,
) -> None:
    bad = untrusted_hub(mailhub, self_signed_cert)
    conf = write_config(tmp_path, bad, TLS_CA_File=ca_file, QueueBackoff="60,3600")
    assert sendmail(tmp_path, conf).returncode == 0
    done = run("mailq", ["-C", str(conf), "--flush"], home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert b"certificate" in done.stdout + done.stderr
    (entry,) = entries(tmp_path, conf)
    assert entry["attempts"] == 1  # the flush charged nothing: the hub, not the message
    good = mailhub(tls="starttls", cert=server_cert)
    write_config(tmp_path, good, TLS_CA_File=ca_file, QueueBackoff="60,3600")
    done = run("mailq", ["-C", str(conf), "--flush"], home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [str(m.message()["Message-ID"]) for m in good.messages] == ["<tls-1@test>"]
    assert entries(tmp_path, conf) == []


def test_implicit_tls_against_a_starttls_port_names_the_configuration(
    tmp_path: Path, tls_hub: MailHubFactory, ca_file: Path
) -> None:
    hub = tls_hub()  # speaks plain SMTP first, then STARTTLS
    conf = write_config(tmp_path, hub, TLS_CA_File=ca_file, UseSTARTTLS="no", UseTLS="yes")
    done = sendmail(tmp_path, conf)
    assert done.returncode == 0, done.stderr
    line = assert_one_clean_line(done.stderr)
    assert line.startswith("sendmail: queued as ")
    assert "almost certainly a configuration error" in line
    assert "UseTLS" in line and "UseSTARTTLS" in line and f"port {hub.port}" in line


def test_serverinfo_still_says_69_for_an_untrusted_certificate(
    tmp_path: Path, mailhub: MailHubFactory, ca_file: Path, self_signed_cert: trustme.LeafCert
) -> None:
    hub = untrusted_hub(mailhub, self_signed_cert)
    conf = write_config(tmp_path, hub, TLS_CA_File=ca_file)
    done = run("sendmail", ["-C", str(conf), "--serverinfo"], home=tmp_path)
    assert done.returncode == os.EX_UNAVAILABLE, done.stderr
    assert b"NOT TRUSTED" in done.stdout
