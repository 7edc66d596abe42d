"""The SMTP test servers do what other tests rely on, checked with the stdlib client.

smtplib is the right client here: these tests are about the fixtures, not about relay/.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from tests.mailhub import (
    AuthAttempt,
    MailHub,
    MailHubFactory,
    RawRecorderFactory,
    Received,
    closed_port,
    free_port,
)

SENDER = "sender@example.com"
RECIPIENT = "rcpt@example.com"
MESSAGE = b"From: sender@example.com\r\nSubject: test\r\n\r\nline one\r\n.leading dot\r\n"
PASSWORD = "s3cret #=pass word"
TRY_LATER = (451, "4.3.0 try again later")


def connect(hub: MailHub) -> smtplib.SMTP:
    return smtplib.SMTP(hub.host, hub.port, timeout=5)


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def transaction(client: smtplib.SMTP) -> dict[str, tuple[int, bytes]]:
    """One mail transaction, step by step; stops at the first refusal."""
    replies: dict[str, tuple[int, bytes]] = {}
    steps = [
        ("EHLO", "client.test"),
        ("MAIL", f"FROM:<{SENDER}>"),
        ("RCPT", f"TO:<{RECIPIENT}>"),
        ("DATA", ""),
    ]
    for verb, arg in steps:
        replies[verb] = client.docmd(verb, arg)
        if replies[verb][0] >= 400:
            return replies
    client.send(MESSAGE + b".\r\n")
    replies["EOD"] = client.getreply()
    return replies


def test_ports_are_on_loopback_and_closed_port_refuses() -> None:
    assert 0 < free_port() < 65536
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port()), timeout=2)


def test_plain_delivery_is_recorded_with_envelope_and_exact_bytes(
    mailhub: MailHubFactory,
) -> None:
    hub = mailhub()
    with connect(hub) as client:
        assert client.sendmail(SENDER, [RECIPIENT, "two@example.com"], MESSAGE) == {}

    [received] = hub.wait_for(1)
    assert received == Received(
        mail_from=SENDER,
        rcpt_tos=[RECIPIENT, "two@example.com"],
        data=MESSAGE,  # un-dot-stuffed again by the server
        mail_options=[f"SIZE={len(MESSAGE)}"],
        rcpt_options=[],
        tls=False,
        auth_user=None,
        helo=received.helo,
    )
    assert received.message()["Subject"] == "test"
    assert hub.commands[0].startswith("EHLO ")
    assert hub.commands[1:] == [
        f"MAIL FROM:<{SENDER}> size={len(MESSAGE)}",
        f"RCPT TO:<{RECIPIENT}>",
        "RCPT TO:<two@example.com>",
        "DATA",
        "QUIT",
    ]
    assert hub.connections == 1


def test_connections_are_counted_and_wait_for_times_out(mailhub: MailHubFactory) -> None:
    hub = mailhub()
    for _ in range(3):
        with connect(hub) as client:
            client.noop()
    assert hub.connections == 3
    with pytest.raises(TimeoutError, match="0 of 1"):
        hub.wait_for(1, timeout=0.05)


def test_starttls_with_trusted_ca_delivers_over_tls(
    mailhub: MailHubFactory, server_cert: trustme.LeafCert, ca_file: Path
) -> None:
    hub = mailhub(tls="starttls", cert=server_cert)
    with connect(hub) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert client.starttls(context=client_context(ca_file))[0] == 220
        client.sendmail(SENDER, [RECIPIENT], MESSAGE)

    [received] = hub.wait_for(1)
    assert received.tls
    assert "STARTTLS" in hub.commands


@pytest.mark.parametrize(
    ("cert_fixture", "reason"),
    [
        ("self_signed_cert", "unable to get local issuer certificate"),
        ("wrong_host_cert", "mismatch"),
        ("expired_cert", "certificate has expired"),
    ],
)
def test_starttls_refuses_bad_certificates(
    mailhub: MailHubFactory,
    ca_file: Path,
    request: pytest.FixtureRequest,
    cert_fixture: str,
    reason: str,
) -> None:
    hub = mailhub(tls="starttls", cert=request.getfixturevalue(cert_fixture))
    client = connect(hub)
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match=reason):
            client.starttls(context=client_context(ca_file))
    finally:
        client.close()
    assert hub.messages == []


def test_starttls_can_be_withheld_to_test_downgrade_refusal(
    mailhub: MailHubFactory, server_cert: trustme.LeafCert, ca_file: Path
) -> None:
    hub = mailhub(tls="starttls", cert=server_cert, offer_starttls=False)
    with connect(hub) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.docmd("STARTTLS")[0] == 454


def test_implicit_tls_delivers(
    mailhub: MailHubFactory, server_cert: trustme.LeafCert, ca_file: Path
) -> None:
    hub = mailhub(tls="implicit", cert=server_cert)
    context = client_context(ca_file)
    with smtplib.SMTP_SSL(hub.host, hub.port, context=context, timeout=5) as client:
        client.sendmail(SENDER, [RECIPIENT], MESSAGE)
    [received] = hub.wait_for(1)
    assert received.tls
    assert hub.connections == 1


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
@pytest.mark.parametrize(("password", "ok"), [(PASSWORD, True), ("wrong", False)])
def test_auth_mechanisms_check_the_password(
    mailhub: MailHubFactory,
    server_cert: trustme.LeafCert,
    ca_file: Path,
    mechanism: str,
    password: str,
    ok: bool,
) -> None:
    hub = mailhub(tls="starttls", cert=server_cert, auth=True, mechanisms=[mechanism])
    with connect(hub) as client:
        client.starttls(context=client_context(ca_file))
        client.ehlo()
        assert client.esmtp_features["auth"].split() == [mechanism]
        if ok:
            assert client.login("alice", password)[0] == 235
            client.sendmail(SENDER, [RECIPIENT], MESSAGE)
        else:
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.login("alice", password)
            assert refused.value.smtp_code == 535

    assert hub.auth_attempts == [AuthAttempt(mechanism, "alice", ok)]
    assert [m.auth_user for m in hub.messages] == (["alice"] if ok else [])


def test_auth_commands_are_recorded_redacted_and_raw(
    mailhub: MailHubFactory, server_cert: trustme.LeafCert, ca_file: Path
) -> None:
    hub = mailhub(tls="starttls", cert=server_cert, auth=True, mechanisms=["PLAIN"])
    with connect(hub) as client:
        client.starttls(context=client_context(ca_file))
        client.login("alice", PASSWORD)
    assert "AUTH PLAIN ***" in hub.commands
    [raw] = [c for c in hub.commands_unredacted if c.startswith("AUTH")]
    assert raw.startswith("AUTH PLAIN ")
    assert raw != "AUTH PLAIN ***"


def test_auth_needs_tls_unless_told_and_mail_needs_auth(
    mailhub: MailHubFactory, server_cert: trustme.LeafCert
) -> None:
    strict = mailhub(tls="starttls", cert=server_cert, auth=True)
    with connect(strict) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        assert client.docmd("AUTH", "PLAIN")[0] == 538
        assert client.mail(SENDER)[0] == 530

    lax = mailhub(auth=True, auth_require_tls=False)
    with connect(lax) as client:
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["CRAM-MD5", "LOGIN", "PLAIN"]
        client.login("alice", PASSWORD)
        client.sendmail(SENDER, [RECIPIENT], MESSAGE)
    assert [m.tls for m in lax.messages] == [False]


def test_without_auth_none_is_offered(
    mailhub: MailHubFactory, server_cert: trustme.LeafCert, ca_file: Path
) -> None:
    hub = mailhub(tls="starttls", cert=server_cert)
    with connect(hub) as client:
        client.starttls(context=client_context(ca_file))
        client.ehlo()
        assert not client.has_extn("auth")
        assert client.docmd("AUTH", "PLAIN")[0] == 502


NORMAL = {"EHLO": 250, "MAIL": 250, "RCPT": 250, "DATA": 354, "EOD": 250}


@pytest.mark.parametrize("step", list(NORMAL))
def test_fault_answers_at_its_step(mailhub: MailHubFactory, step: str) -> None:
    hub = mailhub(faults={step: TRY_LATER})
    with connect(hub) as client:
        replies = transaction(client)

    steps = list(NORMAL)
    expected = {s: NORMAL[s] for s in steps[: steps.index(step)]} | {step: TRY_LATER[0]}
    assert {s: code for s, (code, _text) in replies.items()} == expected
    assert replies[step][1] == TRY_LATER[1].encode()
    assert hub.messages == []


def test_fault_at_connect_greets_with_the_code(mailhub: MailHubFactory) -> None:
    hub = mailhub(faults={"CONNECT": (421, "4.3.2 not now")})
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        connect(hub)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (421, b"4.3.2 not now")
    assert hub.connections == 1


def test_faults_at_helo_starttls_and_auth(
    mailhub: MailHubFactory, server_cert: trustme.LeafCert, ca_file: Path
) -> None:
    hub = mailhub(
        tls="starttls",
        cert=server_cert,
        auth=True,
        faults={"HELO": (550, "5.7.1 go away"), "STARTTLS": (454, "4.7.0 TLS not available")},
    )
    with connect(hub) as client:
        assert client.helo()[0] == 550
        client.ehlo()
        with pytest.raises(smtplib.SMTPResponseException) as refused:
            client.starttls(context=client_context(ca_file))
        assert refused.value.smtp_code == 454

    hub = mailhub(
        tls="starttls", cert=server_cert, auth=True, faults={"AUTH": (454, "4.7.0 try later")}
    )
    with connect(hub) as client:
        client.starttls(context=client_context(ca_file))
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("alice", PASSWORD)
        assert refused.value.smtp_code == 454
    assert hub.auth_attempts == []


def test_rcpt_faults_refuse_only_the_named_recipient(mailhub: MailHubFactory) -> None:
    hub = mailhub(rcpt_faults={"bad@example.com": (550, "5.1.1 no such user")})
    with connect(hub) as client:
        refused = client.sendmail(SENDER, ["bad@example.com", RECIPIENT], MESSAGE)
    assert refused == {"bad@example.com": (550, b"5.1.1 no such user")}
    assert [m.rcpt_tos for m in hub.wait_for(1)] == [[RECIPIENT]]


@pytest.mark.parametrize("tls", ["none", "starttls"])
def test_disconnect_in_data_loses_the_connection(
    mailhub: MailHubFactory, server_cert: trustme.LeafCert, ca_file: Path, tls: str
) -> None:
    hub = mailhub(tls=tls, cert=server_cert, disconnect_in_data=True)
    client = connect(hub)
    try:
        if tls == "starttls":
            client.starttls(context=client_context(ca_file))
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail(SENDER, [RECIPIENT], MESSAGE)
    finally:
        client.close()
    assert hub.messages == []


@pytest.mark.parametrize("step", list(NORMAL))
def test_disconnect_after_a_step_gives_no_reply(mailhub: MailHubFactory, step: str) -> None:
    hub = mailhub(disconnect_after=step)
    client = connect(hub)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            transaction(client)
    finally:
        client.close()
    assert hub.messages == []


def test_stop_drops_sessions_a_client_left_open(
    server_cert: trustme.LeafCert, ca_file: Path
) -> None:
    hub = MailHub(tls="starttls", cert=server_cert).start()
    client = connect(hub)
    try:
        client.starttls(context=client_context(ca_file))
        client.ehlo()
        hub.stop()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    finally:
        client.close()


def test_extensions_can_be_switched_off(mailhub: MailHubFactory) -> None:
    hub = mailhub(smtputf8=False, eightbitmime=False, size_limit=100)
    with connect(hub) as client:
        client.ehlo()
        assert not client.has_extn("smtputf8")
        assert not client.has_extn("8bitmime")
        assert client.esmtp_features["size"] == "100"
        assert client.mail(SENDER, ["BODY=8BITMIME"])[0] == 555
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(SENDER, [RECIPIENT], b"x" * 200 + b"\r\n")  # MAIL ... SIZE=202
        assert refused.value.smtp_code == 552


def test_unknown_fault_step_is_refused() -> None:
    with pytest.raises(ValueError, match="RCTP"):
        MailHub(faults={"RCTP": TRY_LATER})


def test_raw_recorder_keeps_dot_stuffing_and_needs_an_exact_end(
    raw_recorder: RawRecorderFactory,
) -> None:
    recorder = raw_recorder(capabilities=["8BITMIME"])
    with smtplib.SMTP(recorder.host, recorder.port, timeout=5) as client:
        client.ehlo("client.test")
        assert client.esmtp_features == {"8bitmime": ""}
        client.sendmail(SENDER, [RECIPIENT], b"Subject: t\r\n\r\n.\r\n.dot\r\n")
        # A bare LF before the dot is not an end of data (RFC 5321 4.1.1.4).
        client.mail(SENDER)
        client.rcpt(RECIPIENT)
        assert client.docmd("DATA")[0] == 354
        client.send(b"smuggled\n.\nMAIL FROM:<evil@example.com>\r\n.\r\n")
        assert client.getreply()[0] == 250

    assert recorder.data == [
        b"Subject: t\r\n\r\n..\r\n..dot\r\n",
        b"smuggled\n.\nMAIL FROM:<evil@example.com>\r\n",
    ]
    [raw] = recorder.raw
    assert raw.startswith(b"ehlo client.test\r\nmail FROM:<sender@example.com>")
    assert b"\r\n..\r\n..dot\r\n.\r\n" in raw
    assert raw.endswith(b"QUIT\r\n")
    assert recorder.connections == 1
