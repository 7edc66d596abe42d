"""mailx.account: s-nail's `mta=smtp://...` account variables become a relay config.

Table-driven for the mapping, then a real aiosmtpd hub for what the mapping is for:
the message goes through the user's own account (its AUTH, its TLS), never through
the system configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trustme

import relay
from mailx.account import Account, account
from relay import ConfigError
from relay.envelope import Identity
from tests.mailhub import DEFAULT_USERS, MailHubFactory

USER, SECRET = next(iter(DEFAULT_USERS.items()))
ME = Identity("bob", 1000, "Bob Builder")


def make(variables: dict[str, str], origins: dict[str, tuple[str, int]] | None = None) -> Account:
    found = account(variables, origins or {}, "bob", "box.example.net")
    assert found is not None
    return found


@pytest.mark.parametrize(
    "variables",
    [{}, {"mta": "/usr/sbin/sendmail"}, {"mta": "file:///usr/sbin/sendmail"}, {"mta": "msmtp"}],
)
def test_a_program_or_nothing_is_not_an_account(variables: dict[str, str]) -> None:
    assert account(variables, {}, "bob") is None


@pytest.mark.parametrize(
    ("url", "hub", "use_tls", "starttls"),
    [
        ("smtp://mail.example.org", ("mail.example.org", 25), False, False),
        ("submission://mail.example.org", ("mail.example.org", 587), False, False),
        ("smtps://mail.example.org", ("mail.example.org", 465), True, False),
        ("submissions://mail.example.org:2465", ("mail.example.org", 2465), True, False),
        ("smtp://[2001:db8::1]:26", ("2001:db8::1", 26), False, False),
        ("submissions://[2001:db8::1]", ("2001:db8::1", 465), True, False),
    ],
)
def test_schemes_and_ports(url: str, hub: tuple[str, int], use_tls: bool, starttls: bool) -> None:
    config = make({"mta": url}).config
    assert tuple(config.mailhubs[0]) == hub
    assert config.use_tls is use_tls
    assert config.use_starttls is starttls
    assert config.queue == "no"  # the queue is flushed with the system config: never
    assert config.auth_user is None


def test_starttls_user_password_and_method_from_the_chains() -> None:
    found = make(
        {
            "mta": "submission://mail.example.org",
            "smtp-use-starttls": "",
            "user-mail.example.org": "me@example.org",
            "password-me@example.org@mail.example.org": "pw",
            "password": "not this one",
            "smtp-auth": "login",
            "tls-ca-file": "~/ca.pem",
        }
    )
    assert found.config.use_starttls
    assert found.config.auth_user == "me@example.org"
    assert found.config.auth_method == "LOGIN"
    assert found.password == "pw"
    assert found.config.tls_ca_file == os.path.expanduser("~/ca.pem")


def test_credentials_in_the_url_are_percent_decoded_and_never_shown() -> None:
    found = make({"mta": "smtps://me%40example.org:p%3Ass@mail.example.org:465"})
    assert found.config.auth_user == "me@example.org"
    assert found.password == "p:ss"
    assert "p:ss" not in found.url and "p%3Ass" not in found.url
    assert found.url == "smtps://me%40example.org:*@mail.example.org:465"
    assert "p%3Ass" not in found.config.path


def test_pre_v15_variables() -> None:
    found = make(
        {
            "mta": "smtp://mail.example.org",
            "smtp-auth-user": "old",
            "smtp-auth-password": "pw",
        }
    )
    assert (found.config.auth_user, found.password) == ("old", "pw")
    assert found.config.auth_method is None  # the best method the server offers


def test_smtp_hostname_sets_the_envelope_sender() -> None:
    found = make({"mta": "smtp://me@mail.example.org", "smtp-hostname": "example.org"})
    assert found.envelope_from == "me@example.org"
    assert make({"mta": "smtp://mail.example.org", "smtp-hostname": ""}).envelope_from == (
        "bob@box.example.net"
    )


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        ({"mta": "lmtp://mail.example.org"}, "lmtp:// is not supported"),
        ({"mta": "test://./out"}, "test:// is not supported"),
        ({"mta": "smtp://mail.example.org/path"}, "a path in an SMTP URL"),
        ({"mta": "smtp://mail.example.org:0"}, "bad port"),
        ({"mta": "smtp://"}, "no server"),
        ({"mta": "smtp://a.example", "smtp-auth": "gssapi"}, "smtp-auth=gssapi: not supported"),
        ({"mta": "smtp://a.example", "smtp-auth": "plain"}, "needs a password"),
        ({"mta": "smtp://a.example", "socks-proxy": "socks5://x"}, "socks-proxy is not"),
        ({"mta": "smtp://a.example", "tls-verify": "sometimes"}, "expected strict"),
        ({"mta": "smtps://a.example", "tls-fingerprint": "ab" * 32}, "tls-fingerprint-digest"),
    ],
)
def test_what_cannot_be_honoured_is_refused(variables: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        account(variables, {}, "bob")
    assert caught.value.exit_code == os.EX_CONFIG


def test_tls_verify_ignore_warns_and_sha256_pin_is_taken() -> None:
    found = make({"mta": "smtps://a.example", "tls-verify": "ignore"})
    assert found.config.tls_verify is False
    assert any("accepts any certificate" in w for w in found.warnings)
    pin = "ab" * 32
    pinned = make(
        {"mta": "smtps://a.example", "tls-fingerprint": pin, "tls-fingerprint-digest": "SHA256"}
    )
    assert pinned.config.tls_fingerprint is not None
    assert pinned.config.tls_fingerprint.replace(":", "").lower() == pin


def test_a_password_in_a_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    rc = tmp_path / "mailrc"
    rc.write_text("set password=pw\n")
    rc.chmod(0o644)
    variables = {"mta": "smtp://me@a.example", "password": "pw"}
    found = make(variables, {"password": (str(rc), 1)})
    assert found.warnings == [
        f"warning: {rc}:1: holds a password (password) but is readable by others "
        f"(mode 644); fix with: chmod 600 {rc}"
    ]
    rc.chmod(0o640)
    assert make(variables, {"password": (str(rc), 1)}).warnings == []


# -- through a real server -------------------------------------------------------------------


def test_delivers_with_auth_through_the_users_account_on_loopback(
    mailhub: MailHubFactory,
) -> None:
    """`set mta=smtp://alice@127.0.0.1:PORT` + smtp-auth-password: AUTH, to that server."""
    hub = mailhub(auth=True, auth_require_tls=False)
    found = make({"mta": f"smtp://{USER}@{hub.host}:{hub.port}", "smtp-auth-password": SECRET})
    result = relay.submit(
        b"Subject: mine\n\nhi\n",
        config=found.config,
        recipients=["someone@example.com"],
        identity=ME,
        password=found.password,
    )
    assert result.recipients == ("someone@example.com",)
    assert [(a.user, a.success) for a in hub.auth_attempts] == [(USER, True)]
    assert len(hub.messages) == 1


def test_the_relays_tls_verification_applies(
    mailhub: MailHubFactory, server_cert: trustme.LeafCert, ca_file: Path
) -> None:
    # aiosmtpd does not count implicit TLS as TLS for its AUTH rule: it is TLS here.
    hub = mailhub(tls="implicit", cert=server_cert, auth=True, auth_require_tls=False)
    url = f"smtps://{USER}:{SECRET.replace('#', '%23').replace(' ', '%20')}@{hub.host}:{hub.port}"
    untrusted = make({"mta": url})
    with pytest.raises(relay.RelayError, match="certificate") as caught:
        relay.submit(
            b"Subject: s\n\nhi\n",
            config=untrusted.config,
            recipients=["someone@example.com"],
            identity=ME,
            password=untrusted.password,
        )
    assert caught.value.exit_code == os.EX_TEMPFAIL  # deferred, as Postfix does
    trusted = make({"mta": url, "tls-ca-file": str(ca_file)})
    relay.submit(
        b"Subject: s\n\nhi\n",
        config=trusted.config,
        recipients=["someone@example.com"],
        identity=ME,
        password=trusted.password,
    )
    assert len(hub.messages) == 1
    assert hub.auth_attempts[-1].success
