"""relay.envelope: sender rules and recipient resolution (docs/architecture.md, "Recipients")."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from relay.aliases import parse_alias_file
from relay.config import Config, Mailhub, RevAlias
from relay.envelope import (
    Identity,
    Resolver,
    parse_recipient_args,
    resolve_sender,
    validate_address,
)
from relay.errors import DataError, NoUserError

USERS = {"root": 0, "daemon": 1, "bob": 1000, "alice": 1001}


def getpwnam(name: str) -> SimpleNamespace:
    """The edge of the operating system: a fixed passwd table."""
    return SimpleNamespace(pw_uid=USERS[name])


def conf(**values: object) -> Config:
    values.setdefault("mailhubs", (Mailhub("h", 25),))
    values.setdefault("hostname", "box.example.net")
    return Config(path="/etc/ssmtp/ssmtp.conf", **values)  # type: ignore[arg-type]


def resolver(config: Config, aliases: str | None = None) -> Resolver:
    table = parse_alias_file(aliases, "/etc/aliases") if aliases else None
    return Resolver(config, table, getpwnam=getpwnam)


ME = Identity("bob", 1000, "Bob Builder")


class TestRecipients:
    def test_remote_address_is_used_as_is(self) -> None:
        config = conf(rewrite_domain="example.org")
        assert resolver(config).resolve_all(["alice@example.com"]) == ["alice@example.com"]

    def test_idna_for_non_ascii_domain(self) -> None:
        assert resolver(conf()).resolve_all(["u@bücher.example"]) == ["u@xn--bcher-kva.example"]

    def test_unaliased_user_is_refused_never_rewritten(self) -> None:
        config = conf(rewrite_domain="example.org", root="admin@example.org")
        with pytest.raises(NoUserError) as caught:
            resolver(config).resolve_all(["bob"])
        assert caught.value.exit_code == os.EX_NOUSER
        assert "mail-alias add bob ADDRESS" in str(caught.value)
        assert "example.org" not in str(caught.value)

    def test_system_account_goes_to_root(self) -> None:
        config = conf(root="admin@example.org")
        assert resolver(config).resolve_all(["root", "daemon@localhost"]) == ["admin@example.org"]

    def test_system_account_without_root_is_refused(self) -> None:
        with pytest.raises(NoUserError, match="or set root="):
            resolver(conf()).resolve_all(["root"])

    def test_this_host_counts_as_local(self) -> None:
        with pytest.raises(NoUserError):
            resolver(conf()).resolve_all(["bob@box.example.net"])

    def test_alias_file_then_default(self) -> None:
        r = resolver(conf(), "bob: bob@example.com\nops: bob, carol@x.org\ndefault: it@x.org\n")
        assert r.resolve_all(["ops", "alice", "zed"]) == [
            "bob@example.com",
            "carol@x.org",
            "it@x.org",
        ]

    def test_alias_to_system_account_uses_root(self) -> None:
        r = resolver(conf(root="admin@x.org"), "postmaster: root\n")
        assert r.resolve_all(["postmaster"]) == ["admin@x.org"]

    def test_alias_loop_is_refused(self) -> None:
        r = resolver(conf(), "a: b\nb: a\n")
        with pytest.raises(DataError, match="alias loop: a -> b -> a"):
            r.resolve_all(["a"])

    def test_every_failure_counted_before_sending(self) -> None:
        with pytest.raises(NoUserError, match=r"and 1 more refused"):
            resolver(conf()).resolve_all(["bob", "x@y.org", "alice"])

    def test_how_explains_for_bv(self) -> None:
        r = resolver(conf(root="admin@x.org"), "ops: root, a@x.org\n")
        resolved = r.resolve("ops")
        assert resolved.addresses == ("admin@x.org", "a@x.org")
        assert "system account: root=" in resolved.how
        assert "/etc/aliases" in resolved.how

    @pytest.mark.parametrize(
        "bad",
        ["a@b\r\nRCPT TO:<evil@x>", "a\n@b", "nul\0@x.org", "-oQ/tmp/x", "<a@b>", "a b@c", ""],
    )
    def test_malformed_addresses_are_refused(self, bad: str) -> None:
        with pytest.raises(DataError):
            validate_address(bad)


def test_recipient_args_accept_lists_and_names() -> None:
    assert parse_recipient_args(["a@x.org, b@y.org", "Carol <c@z.org>", "bob"]) == [
        "a@x.org",
        "b@y.org",
        "c@z.org",
        "bob",
    ]


def test_a_leading_dash_passes_only_in_its_path_form() -> None:
    """`mail -. -odd@example.org` hands the relay `<-odd@example.org>`: it reaches the
    envelope (RCPT TO only) bare; written bare it is still refused as an option."""
    wanted = parse_recipient_args(["<-odd@Example.ORG>", "Odd <-odd@example.org>"])
    assert wanted == ["<-odd@example.org>"]  # the same recipient twice, kept once
    assert resolver(conf()).resolve_all(wanted) == ["-odd@example.org"]
    for bare in ("-odd@example.org", "a@x.org, -odd@example.org"):
        with pytest.raises(DataError, match="starts with '-'"):
            parse_recipient_args([bare])
    with pytest.raises(DataError, match="starts with '-'"):
        resolver(conf()).resolve_all(["-odd@example.org"])


@pytest.mark.parametrize("bad", ["<-odd>", "<-odd@example.org> x", "<-a@b\r\n>", "<-odd@>"])
def test_a_malformed_path_form_is_refused(bad: str) -> None:
    with pytest.raises(DataError):
        resolver(conf()).resolve_all(parse_recipient_args([bad]))


def test_a_local_name_starting_with_a_dash_is_refused() -> None:
    with pytest.raises(NoUserError, match="local name starting with '-'"):
        resolver(conf()).resolve_all(["<-odd@localhost>"])


def test_recipient_args_refuse_crlf() -> None:
    with pytest.raises(DataError, match="control character"):
        parse_recipient_args(["a@x.org\r\nDATA"])


class TestSender:
    def test_rewrite_domain_and_gecos(self) -> None:
        sender = resolve_sender(conf(rewrite_domain="example.org"), ME)
        assert sender.envelope == "bob@example.org"
        assert sender.from_header == "Bob Builder <bob@example.org>"
        assert sender.replace_from is True

    def test_hostname_when_no_rewrite_domain(self) -> None:
        assert resolve_sender(conf(), ME).envelope == "bob@box.example.net"

    def test_full_name_flag_beats_gecos(self) -> None:
        sender = resolve_sender(conf(), ME, full_name="CronDaemon")
        assert sender.from_header == "CronDaemon <bob@box.example.net>"

    def test_revaliases_override(self) -> None:
        config = conf(
            revaliases={"bob": RevAlias("b.builder@corp.example", Mailhub("corp", 587), 1)}
        )
        sender = resolve_sender(config, ME)
        assert sender.envelope == "b.builder@corp.example"
        assert sender.mailhub == Mailhub("corp", 587)

    def test_without_override_f_names_only_the_header(self) -> None:
        sender = resolve_sender(conf(rewrite_domain="example.org"), ME, envelope_from="x@y.org")
        assert sender.envelope == "bob@example.org"
        assert sender.from_header == "Bob Builder <x@y.org>"
        assert "-f names only the From header" in sender.explanation

    def test_with_override_f_sets_envelope(self) -> None:
        sender = resolve_sender(conf(from_line_override=True), ME, envelope_from="x@y.org")
        assert sender.envelope == "x@y.org"
        assert sender.replace_from is False

    def test_with_override_the_from_header_is_kept_and_used(self) -> None:
        sender = resolve_sender(conf(from_line_override=True), ME, header_from="me@home.org")
        assert sender.envelope == "me@home.org"
        assert sender.from_header is None

    def test_bare_sender_names_get_the_sender_domain(self) -> None:
        config = conf(from_line_override=True, rewrite_domain="example.org")
        assert resolve_sender(config, ME, envelope_from="root").envelope == "root@example.org"
        sender = resolve_sender(config, ME, header_from="root")
        assert sender.envelope == "root@example.org"
        plain = resolve_sender(conf(rewrite_domain="example.org"), ME, envelope_from="root")
        assert plain.from_header == "Bob Builder <root@example.org>"

    def test_bad_f_is_refused(self) -> None:
        with pytest.raises(DataError):
            resolve_sender(conf(), ME, envelope_from="-X/tmp/log")
