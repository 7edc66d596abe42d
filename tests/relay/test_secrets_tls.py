"""Secrets and TLS against real servers: TLSFingerprint pins, XOAUTH2/OAUTHBEARER with a
token command, --serverinfo, and the attempt log (never a secret)."""

from __future__ import annotations

import hashlib
import io
import os
import ssl
import sys
from pathlib import Path

import pytest
import trustme

from relay import config as config_module
from relay.errors import RelayError
from relay.log import Attempt, format_attempt, record
from relay.serverinfo import describe
from relay.smtp import fingerprint
from tests.mailhub import MailHubFactory
from tests.relayconf import send, write_config

TOKEN = "ya29.token-with/odd+chars=="


def cert_fingerprint(cert: trustme.LeafCert) -> str:
    pem = cert.cert_chain_pems[0].bytes().decode()
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def load(path: Path) -> config_module.Config:
    return config_module.load(str(path))


class TestFingerprint:
    def test_matching_pin_replaces_the_chain(
        self, tmp_path: Path, mailhub: MailHubFactory, self_signed_cert: trustme.LeafCert
    ) -> None:
        hub = mailhub(tls="implicit", cert=self_signed_cert)
        pin = cert_fingerprint(self_signed_cert).replace(":", "").lower()
        send(tmp_path, load(write_config(tmp_path, hub, TLSFingerprint=pin)))
        assert hub.wait_for(1)[0].tls

    def test_wrong_pin_is_deferred_showing_expected_and_got(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        server_cert: trustme.LeafCert,
        ca_file: Path,
    ) -> None:
        hub = tls_hub(auth=True)
        wrong = "AB:" * 31 + "AB"
        config = load(
            write_config(
                tmp_path,
                hub,
                TLSFingerprint=wrong,
                TLS_CA_File=ca_file,
                AuthUser="alice",
                Queue="no",  # deferred: with a queue it would be queued (tests/e2e)
            )
        )
        with pytest.raises(RelayError) as caught:
            send(tmp_path, config, password="s3cret #=pass word")
        # Deferred, as Postfix does: nothing was sent, and a re-keyed hub gets re-pinned.
        assert caught.value.exit_code == os.EX_TEMPFAIL
        assert f"expected {wrong}, got {cert_fingerprint(server_cert)}" in str(caught.value)
        assert not any(c.startswith(("AUTH", "MAIL")) for c in hub.commands)

    def test_malformed_pin_is_a_config_error(self, tmp_path: Path) -> None:
        with pytest.raises(RelayError) as caught:
            load(write_config(tmp_path, None, mailhub="h", TLSFingerprint="abc"))
        assert caught.value.exit_code == os.EX_CONFIG


class TestClientCertAndVerify:
    def test_client_certificate_is_presented(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca: trustme.CA,
        ca_file: Path,
    ) -> None:
        client = ca.issue_cert("client.example.org", common_name="client.example.org")
        cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
        client.cert_chain_pems[0].write_to_path(cert_file)
        client.private_key_pem.write_to_path(key_file)
        hub = tls_hub(client_ca=ca)
        config = load(
            write_config(
                tmp_path,
                hub,
                TLS_CA_File=ca_file,
                UseTLSCert="yes",
                TLSCert=cert_file,
                TLSKey=key_file,
            )
        )
        send(tmp_path, config)
        assert hub.wait_for(1)[0].client_cert == "client.example.org"

    def test_without_a_client_certificate_the_server_refuses(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca: trustme.CA,
        ca_file: Path,
    ) -> None:
        hub = tls_hub(client_ca=ca)
        config = load(write_config(tmp_path, hub, TLS_CA_File=ca_file, Queue="no"))
        with pytest.raises(RelayError):
            send(tmp_path, config)
        assert hub.messages == []

    def test_tls_verify_no_accepts_but_warns(
        self, tmp_path: Path, mailhub: MailHubFactory, self_signed_cert: trustme.LeafCert
    ) -> None:
        hub = mailhub(tls="implicit", cert=self_signed_cert)
        config = load(write_config(tmp_path, hub, TLSVerify="no"))
        assert any("TLSVerify=no accepts any certificate" in w for w in config.warnings)
        send(tmp_path, config)
        assert hub.wait_for(1)[0].tls


def token_command(tmp_path: Path, text: str) -> str:
    script = tmp_path / "token.py"
    script.write_text(f"print({text!r})\n")
    return f"{sys.executable} {script}"


class TestOAuth:
    @pytest.mark.parametrize("offered", [["XOAUTH2"], ["OAUTHBEARER"], ["XOAUTH2", "OAUTHBEARER"]])
    def test_token_from_command_logs_in(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca_file: Path,
        offered: list[str],
    ) -> None:
        from relay.credentials import resolve

        hub = tls_hub(
            auth=True,
            mechanisms=offered,
            users={"alice@gmail.example": TOKEN},
        )
        config = load(
            write_config(
                tmp_path,
                hub,
                TLS_CA_File=ca_file,
                AuthUser="alice@gmail.example",
                AuthMethod="XOAUTH2",
                AuthPassCommand=token_command(tmp_path, TOKEN),
            )
        )
        transcript = io.StringIO()
        send(tmp_path, config, password=resolve(config), verbose=transcript)
        attempt = hub.auth_attempts[0]
        expected = "OAUTHBEARER" if "OAUTHBEARER" in offered else "XOAUTH2"
        assert (attempt.mechanism, attempt.success) == (expected, True)
        assert TOKEN not in transcript.getvalue()

    def test_bad_token_is_77_and_never_shown(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        ca_file: Path,
    ) -> None:
        hub = tls_hub(
            auth=True,
            mechanisms=["XOAUTH2"],
            users={"alice@gmail.example": TOKEN},
        )
        config = load(
            write_config(
                tmp_path,
                hub,
                TLS_CA_File=ca_file,
                AuthUser="alice@gmail.example",
                AuthMethod="XOAUTH2",
            )
        )
        with pytest.raises(RelayError) as caught:
            send(tmp_path, config, password="expired-token")
        assert caught.value.exit_code == os.EX_NOPERM
        assert "expired-token" not in str(caught.value)


class TestServerInfo:
    def test_fields_of_a_starttls_server(
        self,
        tmp_path: Path,
        tls_hub: MailHubFactory,
        server_cert: trustme.LeafCert,
        ca_file: Path,
    ) -> None:
        hub = tls_hub(auth=True)
        config = load(write_config(tmp_path, hub, TLS_CA_File=ca_file, AuthUser="alice"))
        lines = describe(config).splitlines()
        assert lines[0] == f"mailhub: {hub.host}:{hub.port}"
        assert "tls mode: STARTTLS" in lines
        assert any(line.startswith("tls version: TLSv1.") for line in lines)
        assert any(line.startswith("tls cipher: ") for line in lines)
        assert any(line.startswith("certificate subject: ") for line in lines)
        assert any(line.startswith("certificate issuer: O=trustme") for line in lines)
        assert "certificate names: 127.0.0.1, localhost" in lines
        assert any(line.startswith("certificate valid until: ") for line in lines)
        assert f"certificate sha256 fingerprint: {cert_fingerprint(server_cert)}" in lines
        assert "auth methods offered: CRAM-MD5 LOGIN PLAIN" in lines
        assert "auth method the relay would use: CRAM-MD5" in lines
        assert "  STARTTLS" not in lines  # learnt after TLS: no STARTTLS offered any more
        assert hub.messages == []
        assert not any(c.startswith(("AUTH", "MAIL")) for c in hub.commands)


class TestLog:
    def test_one_line_per_attempt_without_secrets(
        self, tmp_path: Path, mailhub: MailHubFactory
    ) -> None:
        log = tmp_path / "relay.log"
        config = load(write_config(tmp_path, None, mailhub="h", LogFile=log))
        attempt = Attempt(
            None,
            "<1@x>",
            "me@x.org",
            ["a@y.org", "b@y.org"],
            "h:25",
            True,
            "PLAIN",
            "delivered",
            "250 2.0.0 ok queued as X",
            0,
            0.25,
        )
        record(config, attempt)
        (line,) = log.read_text().splitlines()
        assert line.startswith("time=")
        assert " id=- msgid=<1@x> from=me@x.org to=a@y.org,b@y.org mailhub=h:25 tls=yes " in line
        assert 'reply="250 2.0.0 ok queued as X" exit=0 duration=0.250' in line
        assert oct(log.stat().st_mode & 0o777) == "0o600"

    def test_quoting(self) -> None:
        attempt = Attempt("q1", None, "", [], "h", False, None, "failed", 'a "b"\nc', 75, 1)
        text = format_attempt(attempt, now=0)
        assert 'reply="a \\"b\\"\\nc"' in text
        assert 'from=""' in text


def test_fingerprint_format() -> None:
    assert fingerprint(b"x") == ":".join(
        hashlib.sha256(b"x").hexdigest().upper()[i : i + 2] for i in range(0, 64, 2)
    )
