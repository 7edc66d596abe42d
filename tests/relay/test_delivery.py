"""relay.smtp and relay.submission against real aiosmtpd servers: TLS, AUTH, faults.

Every test talks to a MailHub on 127.0.0.1; nothing here mocks smtplib.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import pytest

from relay import config as config_module
from relay.errors import RelayError
from tests import relayconf
from tests.mailhub import MailHub, MailHubFactory, RawRecorderFactory, closed_port
from tests.relayconf import MESSAGE, PASSWORD, write_config


def send(
    tmp_path: Path,
    hub: MailHub | None,
    *lines: str,
    message: bytes = MESSAGE,
    recipients: tuple[str, ...] = ("alice@example.com",),
    password: str | None = None,
    verbose: io.StringIO | None = None,
    **keys: Any,
) -> Any:
    # These tests pin immediate delivery and its exit codes: Queue=no. The queue policy
    # (fallback, always) is tested in test_queue.py and test_flush.py.
    keys.setdefault("Queue", "no")
    config = config_module.load(str(write_config(tmp_path, hub, *lines, **keys)))
    return relayconf.send(
        tmp_path,
        config,
        message=message,
        recipients=recipients,
        password=password,
        verbose=verbose,
    )


def fail(tmp_path: Path, hub: MailHub | None, *lines: str, **kwargs: Any) -> RelayError:
    with pytest.raises(RelayError) as caught:
        send(tmp_path, hub, *lines, **kwargs)
    err = caught.value
    # Nothing lost: whatever failed, the whole message is in dead.letter.
    assert err.saved_to == str(tmp_path / "dead.letter")
    kept = (tmp_path / "dead.letter").read_bytes()
    assert kwargs.get("message", MESSAGE).replace(b"\r\n", b"\n") in kept
    return err


def no_transaction(hub: MailHub) -> bool:
    return not any(c.startswith(("MAIL", "AUTH")) for c in hub.commands)


class TestPlain:
    def test_delivers_with_envelope_and_fixups(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        hub = mailhub()
        result = send(tmp_path, hub)
        (received,) = hub.wait_for(1)
        assert received.mail_from == "bob@example.org"
        assert received.rcpt_tos == ["alice@example.com"]
        parsed = received.message()
        assert parsed["From"] == "Bob Builder <bob@example.org>"
        assert parsed["Message-ID"] == result.message_id
        assert parsed["Date"] is not None
        assert "Bcc" not in parsed
        assert b"hidden@example.net" not in received.data
        assert received.helo == "box.example.net"
        assert result.recipients == ("alice@example.com",)

    def test_local_name_resolves_through_aliases_file(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        aliases = tmp_path / "aliases"
        aliases.write_text("ops: alice@example.com, carol@example.com\n")
        hub = mailhub()
        send(tmp_path, hub, recipients=("ops", "root"), Aliases=aliases)
        (received,) = hub.wait_for(1)
        assert received.rcpt_tos == ["alice@example.com", "carol@example.com", "admin@example.com"]

    def test_unknown_local_name_sends_nothing(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        hub = mailhub()
        err = fail(tmp_path, hub, recipients=("alice@example.com", "nosuchuser"))
        assert err.exit_code == os.EX_NOUSER
        assert "mail-alias add nosuchuser ADDRESS" in str(err)
        assert hub.connections == 0

    def test_mailhub_failover(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        hub = mailhub()
        send(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()},{hub.host}:{hub.port}")
        assert len(hub.wait_for(1)) == 1

    def test_eight_bit_without_8bitmime_is_encoded(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        hub = mailhub(eightbitmime=False)
        body = "Grüße\n".encode()
        send(tmp_path, hub, message=b"To: a@example.com\nSubject: s\n\n" + body)
        (received,) = hub.wait_for(1)
        assert received.data.isascii()
        assert received.message().get_payload(decode=True) == body.replace(b"\n", b"\r\n")

    def test_eight_bit_with_8bitmime_says_so(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        hub = mailhub()
        send(tmp_path, hub, message="To: a@example.com\n\nGrüße\n".encode())
        (received,) = hub.wait_for(1)
        assert "BODY=8BITMIME" in received.mail_options


class TestWire:
    def test_dot_stuffing_and_line_ends_byte_exact(
        self, tmp_path: Path, raw_recorder: RawRecorderFactory
    ) -> None:
        recorder = raw_recorder()
        message = b"To: a@example.com\n\n.\n..two\nx\n.\r\nQUIT\n\n.\n"
        send(tmp_path, None, message=message, mailhub=f"{recorder.host}:{recorder.port}")
        (data,) = recorder.data
        body = data.split(b"\r\n\r\n", 1)[1]
        assert body == b"..\r\n...two\r\nx\r\n..\r\nQUIT\r\n\r\n..\r\n"
        assert b"\n" not in data.replace(b"\r\n", b"")


class TestTLS:
    def test_starttls_verifies_and_says_ehlo_again(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca_file: Path,
    ) -> None:
        hub = tls_hub()
        send(tmp_path, hub, TLS_CA_File=ca_file)
        (received,) = hub.wait_for(1)
        assert received.tls
        verbs = [c.split()[0] for c in hub.commands]
        assert verbs[:3] == ["EHLO", "STARTTLS", "EHLO"]

    def test_implicit_tls(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca_file: Path,
    ) -> None:
        hub = tls_hub(tls="implicit")
        send(tmp_path, hub, TLS_CA_File=ca_file)
        assert hub.wait_for(1)[0].tls

    def test_starttls_not_offered_is_never_downgraded(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca_file: Path,
    ) -> None:
        hub = tls_hub(
            offer_starttls=False,
            auth=True,
            auth_require_tls=False,
        )
        err = fail(tmp_path, hub, TLS_CA_File=ca_file, AuthUser="alice", password=PASSWORD)
        # Deferred as Postfix does (kept here, Queue=no): STARTTLS may be back later.
        assert err.exit_code == os.EX_TEMPFAIL
        assert "does not offer STARTTLS" in str(err)
        assert no_transaction(hub)

    @pytest.mark.parametrize(
        ("cert_name", "words"),
        [
            ("self_signed_cert", "unable to get local issuer"),
            ("wrong_host_cert", "mismatch"),
            ("expired_cert", "expired"),
        ],
    )
    def test_bad_certificate_is_refused_before_anything_is_sent(
        self,
        tmp_path: Path,
        mailhub: MailHubFactory,
        ca_file: Path,
        cert_name: str,
        words: str,
        request: pytest.FixtureRequest,
    ) -> None:
        hub = mailhub(tls="starttls", cert=request.getfixturevalue(cert_name), auth=True)
        err = fail(tmp_path, hub, TLS_CA_File=ca_file, AuthUser="alice", password=PASSWORD)
        # Temporary (a lapsed certificate gets renewed): 75 and kept with Queue=no.
        assert err.exit_code == os.EX_TEMPFAIL
        assert "certificate" in str(err)
        assert words in str(err)
        assert no_transaction(hub)

    def test_default_trust_store_rejects_a_private_ca(
        self, tmp_path: Path, tls_hub: MailHubFactory
    ) -> None:
        # msmtp 1.8.3's hole was in the default configuration: test without TLS_CA_File.
        hub = tls_hub(tls="implicit")
        err = fail(tmp_path, hub)
        assert err.exit_code == os.EX_TEMPFAIL
        assert hub.messages == []


class TestAuth:
    @pytest.mark.parametrize("method", ["PLAIN", "LOGIN", "CRAM-MD5"])
    def test_each_method_logs_in_and_the_transcript_hides_the_secret(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca_file: Path,
        method: str,
    ) -> None:
        hub = tls_hub(auth=True)
        transcript = io.StringIO()
        send(
            tmp_path,
            hub,
            TLS_CA_File=ca_file,
            AuthUser="alice",
            AuthMethod=method,
            password=PASSWORD,
            verbose=transcript,
        )
        assert hub.wait_for(1)[0].auth_user is not None
        assert [(a.mechanism, a.success) for a in hub.auth_attempts] == [(method, True)]
        text = transcript.getvalue()
        assert f"--> AUTH {method}" in text
        for secret in secret_forms("alice", PASSWORD):
            assert secret not in text

    def test_strongest_common_method_is_chosen(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca_file: Path,
    ) -> None:
        hub = tls_hub(auth=True, mechanisms=["LOGIN", "PLAIN"])
        send(tmp_path, hub, TLS_CA_File=ca_file, AuthUser="alice", password=PASSWORD)
        assert hub.auth_attempts[0].mechanism == "PLAIN"

    def test_wrong_password_is_noperm(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca_file: Path,
    ) -> None:
        hub = tls_hub(auth=True)
        err = fail(tmp_path, hub, TLS_CA_File=ca_file, AuthUser="alice", password="wrong")
        assert err.exit_code == os.EX_NOPERM
        assert "rejected the login" in str(err)
        assert "wrong" not in str(err)

    def test_no_password_over_plaintext(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        hub = mailhub(auth=True, auth_require_tls=False)
        err = fail(tmp_path, hub, AuthUser="alice", password=PASSWORD)
        assert err.exit_code == os.EX_UNAVAILABLE
        assert "without TLS" in str(err)
        assert no_transaction(hub)

    def test_plaintext_allowed_when_config_says_so(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        hub = mailhub(auth=True, auth_require_tls=False)
        send(tmp_path, hub, AuthUser="alice", AuthOverPlaintext="yes", password=PASSWORD)
        assert hub.auth_attempts[0].success


def secret_forms(user: str, password: str) -> list[str]:
    """The password and the base64 forms AUTH PLAIN and LOGIN would carry it in."""
    forms = [password, base64.b64encode(password.encode()).decode()]
    forms.append(base64.b64encode(f"\0{user}\0{password}".encode()).decode())
    forms.append(base64.b64encode(f"{user}\0{user}\0{password}".encode()).decode())
    return forms


class TestFaults:
    @pytest.mark.parametrize(
        ("options", "code", "step"),
        [
            ({"faults": {"CONNECT": (421, "4.3.2 busy")}}, os.EX_TEMPFAIL, "greeting"),
            ({"faults": {"MAIL": (451, "4.3.0 try later")}}, os.EX_TEMPFAIL, "MAIL FROM"),
            ({"faults": {"MAIL": (550, "5.7.1 not you")}}, os.EX_UNAVAILABLE, "MAIL FROM"),
            ({"faults": {"RCPT": (451, "4.2.0 greylisted")}}, os.EX_TEMPFAIL, "RCPT TO"),
            ({"faults": {"RCPT": (550, "5.1.1 no such user")}}, os.EX_NOUSER, "RCPT TO"),
            ({"faults": {"DATA": (554, "5.3.0 no data")}}, os.EX_UNAVAILABLE, "DATA"),
            ({"faults": {"EOD": (451, "4.3.0 queue full")}}, os.EX_TEMPFAIL, "end of data"),
            ({"faults": {"EOD": (552, "5.3.4 too big")}}, os.EX_UNAVAILABLE, "end of data"),
            ({"disconnect_in_data": True}, os.EX_TEMPFAIL, "end of data"),
            ({"disconnect_after": "MAIL"}, os.EX_TEMPFAIL, "MAIL FROM"),
        ],
    )
    def test_each_fault_maps_to_its_exit_code(
        self,
        tmp_path: Path,
        mailhub: MailHubFactory,
        options: dict[str, Any],
        code: int,
        step: str,
    ) -> None:
        hub = mailhub(**options)
        err = fail(tmp_path, hub)
        assert err.exit_code == code, str(err)
        assert step in str(err)
        assert err.step == ("connect" if step == "greeting" else step)
        assert hub.messages == []

    @pytest.mark.parametrize(
        ("faults", "step", "code"),
        [
            ({"CONNECT": (421, "4.3.2 busy")}, "connect", 421),
            ({"MAIL": (550, "5.7.1 not you")}, "MAIL FROM", 550),
            ({"RCPT": (451, "4.2.0 greylisted")}, "RCPT TO", 451),
            ({"EOD": (552, "5.3.4 too big")}, "end of data", 552),
        ],
    )
    def test_a_server_reply_is_data_step_and_code(
        self,
        tmp_path: Path,
        mailhub: MailHubFactory,
        faults: dict[str, tuple[int, str]],
        step: str,
        code: int,
    ) -> None:
        """Callers classify by `code` and `step`, never by parsing the text."""
        err = fail(tmp_path, mailhub(faults=faults))
        assert err.code == code, str(err)
        assert err.step is not None and err.step.startswith(step)
        if step != "RCPT TO":  # refused recipients: each reply is listed in the text
            assert err.reply is not None and err.reply.startswith(str(code))

    def test_reply_text_is_in_the_error(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        hub = mailhub(faults={"RCPT": (550, "5.1.1 no such user")})
        assert "550 5.1.1 no such user" in str(fail(tmp_path, hub))

    def test_server_down(self, tmp_path: Path) -> None:
        err = fail(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()}")
        assert err.exit_code == os.EX_TEMPFAIL
        assert "Connection refused" in str(err)

    def test_partial_refusal_is_never_silent(self, tmp_path: Path, mailhub: MailHubFactory) -> None:
        hub = mailhub(rcpt_faults={"bad@example.com": (550, "5.1.1 unknown")})
        err = fail(tmp_path, hub, recipients=("alice@example.com", "bad@example.com"))
        assert err.exit_code == os.EX_NOUSER
        assert "delivered to alice@example.com only" in str(err)
        assert "<bad@example.com>: 550 5.1.1 unknown" in str(err)
        assert hub.wait_for(1)[0].rcpt_tos == ["alice@example.com"]


def test_a_message_read_by_the_caller_over_max_message_size_is_kept_whole(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    # `mail` reads the message itself: the relay refuses it whole (65) and keeps it whole.
    hub = mailhub()
    message = b"Subject: big\n\n" + b"line\n" * 500
    err = fail(tmp_path, hub, MaxMessageSize="1K", message=message)
    assert err.exit_code == os.EX_DATAERR
    assert "larger than MaxMessageSize (1024 bytes)" in str(err)
    assert "truncated" not in err.describe()
    assert hub.connections == 0
