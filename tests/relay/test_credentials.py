"""relay.credentials: AuthPass, AuthPassFile (owner-only), AuthPassCommand (no shell,
stdin closed, timeout, first line); every failure names the key and never the secret."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from relay import credentials
from relay.config import Config, Mailhub
from relay.errors import ConfigError, NoPermError

SECRET = "pa#ss=word with spaces"


def conf(**values: object) -> Config:
    return Config(path="/etc/ssmtp/ssmtp.conf", mailhubs=(Mailhub("h", 25),), **values)  # type: ignore[arg-type]


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "helper.py"
    path.write_text(body)
    return f"{sys.executable} {path}"


def test_order_override_then_authpass() -> None:
    assert credentials.resolve(conf(auth_pass="a"), override="b") == "b"
    assert credentials.resolve(conf(auth_pass="a")) == "a"
    assert credentials.resolve(conf()) is None


def test_pass_file_first_line(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\nsecond line\n")
    path.chmod(0o600)
    assert credentials.resolve(conf(auth_pass_file=str(path))) == SECRET


def test_pass_file_readable_by_its_group_is_fine(tmp_path: Path) -> None:
    # 0640 with the service's group (it was refused: AuthPassFile had to be 0600).
    path = tmp_path / "secret"
    path.write_text(SECRET)
    path.chmod(0o640)
    assert credentials.resolve(conf(auth_pass_file=str(path))) == SECRET


def test_pass_file_readable_by_everyone_is_refused_with_78(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET)
    path.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        credentials.resolve(conf(auth_pass_file=str(path)))
    assert caught.value.exit_code == os.EX_CONFIG
    assert f"chmod 640 {path}" in str(caught.value) and "mailx-relayd" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_pass_file_readable_by_everyone_without_strict_is_77_as_before(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET)
    path.chmod(0o604)
    with pytest.raises(NoPermError) as caught:
        credentials.resolve(conf(auth_pass_file=str(path), strict_permissions=False))
    assert f"chmod 640 {path}" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_pass_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AuthPassFile"):
        credentials.resolve(conf(auth_pass_file=str(tmp_path / "nope")))


def test_command_first_line_no_shell(tmp_path: Path) -> None:
    command = script(tmp_path, f"print({SECRET!r}); print('other')\n")
    assert credentials.resolve(conf(auth_pass_command=command)) == SECRET
    # No shell: metacharacters are plain arguments, nothing is expanded or run.
    echo = f"{sys.executable} -c \"import sys; print(sys.argv[1])\" '$HOME;id'"
    assert credentials.resolve(conf(auth_pass_command=echo)) == "$HOME;id"


def test_command_stdin_is_closed(tmp_path: Path) -> None:
    command = script(tmp_path, "import sys; print(repr(sys.stdin.read()) or 'x')\n")
    assert credentials.resolve(conf(auth_pass_command=command)) == "''"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("import sys; print('leak-me'); sys.exit(2)\n", "exited with status 2"),
        ("print('')\n", "printed nothing"),
    ],
)
def test_command_failures_name_the_key_not_the_output(
    tmp_path: Path, body: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        credentials.resolve(conf(auth_pass_command=script(tmp_path, body)))
    assert caught.value.exit_code == os.EX_CONFIG
    assert "AuthPassCommand" in str(caught.value)
    assert words in str(caught.value)
    assert "leak-me" not in str(caught.value)


def test_command_missing() -> None:
    with pytest.raises(ConfigError, match="program not found: /no/such/helper"):
        credentials.resolve(conf(auth_pass_command="/no/such/helper --token"))


def test_command_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials, "COMMAND_TIMEOUT", 0.5)
    command = script(tmp_path, "import time; time.sleep(30)\n")
    with pytest.raises(ConfigError, match="did not finish within"):
        credentials.resolve(conf(auth_pass_command=command))
