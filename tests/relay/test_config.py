"""relay.config: ssmtp.conf and revaliases parsing, quoting, file:line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relay import config
from relay.errors import ConfigError

DATA = Path(__file__).parent.parent / "data" / "relay"


def write(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "ssmtp.conf"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_archwiki_gmail_example_verbatim() -> None:
    text = (DATA / "archwiki-gmail.conf").read_text()
    parsed = config.parse(text, "archwiki.conf")
    assert parsed.root == "username@gmail.com"
    assert parsed.mailhubs == (config.Mailhub("smtp.gmail.com", 465),)
    assert parsed.rewrite_domain == "gmail.com"
    assert parsed.auth_user == "username"
    assert parsed.auth_pass == "password"
    assert parsed.from_line_override is True
    assert parsed.use_tls is True
    assert parsed.use_starttls is False
    assert parsed.sources["auth_pass"] == "archwiki.conf:6"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('AuthPass="pa#ss=word with spaces"', "pa#ss=word with spaces"),
        ('AuthPass="quote \\" and backslash \\\\"', 'quote " and backslash \\'),
        ("AuthPass=pa#ss=word", "pa#ss=word"),  # ssmtp truncates this to nothing
        ("AuthPass=secret # a trailing comment", "secret"),
        ('AuthPass="with # inside" # and a comment', "with # inside"),
        ("AuthPass = spaced  ", "spaced"),
        ("AuthPass=a=b=c", "a=b=c"),
    ],
)
def test_values_are_taken_whole(line: str, expected: str) -> None:
    assert config.parse(f"mailhub=h\n{line}\n", "f").auth_pass == expected


def test_keys_are_case_insensitive_and_booleans_loose() -> None:
    parsed = config.parse("MAILHUB=h:587\nusestarttls=YES\nFromLineOverride=off\n", "f")
    assert parsed.mailhubs[0].port == 587
    assert parsed.use_starttls is True
    assert parsed.from_line_override is False


def test_mailhub_list_and_defaults() -> None:
    parsed = config.parse("mailhub=a.example:587, b.example ,[::1]:2525\n", "f")
    assert [str(h) for h in parsed.mailhubs] == ["a.example:587", "b.example:25", "::1:2525"]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("mailhub=h\nnonsense line\n", 2, "expected key=value"),
        ("mailhub=h\nUseTLS=maybe\n", 2, "expected yes or no"),
        ("mailhub=h:99999\n", 1, "bad port"),
        ('# c\nAuthPass="open\n', 2, "unterminated double quote"),
        ('AuthPass="x" y\n', 1, "after the closing quote"),
        ("Timeout=-1\n", 1, "positive"),
        ("Queue=sometimes\n", 1, "fallback, always or no"),
        ("QueueBackoff=60,10\n", 1, "FIRST,MAX"),
        ("MaxMessageSize=ten\n", 1, "such as 10M"),
        ("MaxMessageSize=0\n", 1, "such as 10M"),
        ("MaxMessageSize=-5M\n", 1, "such as 10M"),
    ],
)
def test_errors_name_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse(text, "/etc/ssmtp/ssmtp.conf")
    assert caught.value.exit_code == os.EX_CONFIG
    assert caught.value.line == line
    assert str(caught.value).startswith(f"/etc/ssmtp/ssmtp.conf:{line}: ")
    assert words in str(caught.value)


def test_secret_is_not_in_error_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse('AuthPass="hunter2\n', "f")
    assert "hunter2" not in str(caught.value)


def test_unknown_key_is_a_warning_not_an_error() -> None:
    parsed = config.parse("mailhub=h\nFrobnicate=yes\nDebug=YES\n", "f")
    assert parsed.warnings == ("f:2: unknown key 'Frobnicate' ignored",)


@pytest.mark.parametrize(
    ("value", "octets"),
    [
        ("1048576", 1 << 20),
        ("512K", 512 << 10),
        ("10M", 10 << 20),
        ("10m", 10 << 20),
        ("1G", 1 << 30),
        ("20MB", 20 << 20),
    ],
)
def test_max_message_size(value: str, octets: int) -> None:
    assert config.parse(f"MaxMessageSize={value}\n", "f").max_message_size == octets


def test_max_message_size_default_is_unset() -> None:
    # Unset: the mailhub's SIZE when it announces one (checked before MAIL), else none.
    assert config.parse("mailhub=h\n", "f").max_message_size is None


def test_durations() -> None:
    parsed = config.parse("QueueMaxAge=2d\nQueueBackoff=1,8\nTimeout=2.5\n", "f")
    assert parsed.queue_max_age == 2 * 86400
    assert parsed.queue_backoff == (1, 8)
    assert parsed.timeout == 2.5


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(str(tmp_path / "nope.conf"))
    assert "nope.conf" in str(caught.value)
    assert "No such file" in str(caught.value)


def test_load_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        path = tmp_path / "dir.conf"
        path.mkdir()  # root reads anything; a directory is unreadable as a file
    else:
        path = Path(write(tmp_path, "mailhub=h\n", 0o000))
    with pytest.raises(ConfigError) as caught:
        config.load(str(path))
    assert str(path) in str(caught.value)


def test_load_requires_a_mailhub(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no mailhub"):
        config.load(write(tmp_path, "root=a@b.example\n"))


def test_load_reads_revaliases_beside_it(tmp_path: Path) -> None:
    path = write(tmp_path, "mailhub=h\n")
    (tmp_path / "revaliases").write_text(
        "# comment\nroot:admin@example.org:smtp.example.org:587\nbob:bob@example.org\n"
    )
    loaded = config.load(path)
    assert loaded.revaliases["root"].address == "admin@example.org"
    assert loaded.revaliases["root"].mailhub == config.Mailhub("smtp.example.org", 587)
    assert loaded.revaliases["bob"].mailhub is None
    assert loaded.revaliases["bob"].line == 3


def test_bad_revaliases_line(tmp_path: Path) -> None:
    path = write(tmp_path, "mailhub=h\n")
    (tmp_path / "revaliases").write_text("justaname\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert str(caught.value).startswith(f"{tmp_path / 'revaliases'}:1: ")


def test_world_readable_secret_is_refused_by_default_naming_the_fixes(tmp_path: Path) -> None:
    # StrictPermissions=yes is the default now (it was no, and this only warned).
    path = write(tmp_path, "mailhub=h\nAuthPass=hunter2\n", 0o644)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    text = str(caught.value)
    assert caught.value.exit_code == os.EX_CONFIG
    assert "every local user can read it (mode 644)" in text
    assert f"chmod 640 {path}" in text and "mailx-relayd" in text and "AuthPassFile" in text
    assert "hunter2" not in text


def test_world_readable_secret_only_warns_without_strict_permissions(tmp_path: Path) -> None:
    path = write(tmp_path, "mailhub=h\nAuthPass=hunter2\nStrictPermissions=no\n", 0o644)
    loaded = config.load(path)
    assert any(f"chmod 640 {path}" in w for w in loaded.warnings)
    assert not any("hunter2" in w for w in loaded.warnings)


@pytest.mark.parametrize("strict", ["yes", "no"])
def test_group_readable_secret_is_fine(tmp_path: Path, strict: str) -> None:
    # 0640 root:mail is how ssmtp ships it: readable by group mail, not by others.
    path = write(tmp_path, f"mailhub=h\nAuthPass=hunter2\nStrictPermissions={strict}\n", 0o640)
    assert config.load(path).warnings == ()


def test_config_path_order() -> None:
    assert config.config_path("x.conf", {"RELAY_CONFIG": "y.conf"}) == "x.conf"
    assert config.config_path(None, {"RELAY_CONFIG": "y.conf"}) == "y.conf"
    assert config.config_path(None, {}) == "/etc/ssmtp/ssmtp.conf"
