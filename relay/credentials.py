"""The mailhub secret: `-ap`, `AuthPass`, `AuthPassFile` or `AuthPassCommand`.

`AuthPassFile` may be read by its owner and group (0600, or 0640 with the group the
mailx-relayd service runs as), never by every local user: that is refused with 78 under
`StrictPermissions=yes` (the default), 77 without it. Its first line is the secret.
`AuthPassCommand` runs with an argument vector (split like a shell would, but no shell
runs unless the value starts with `sh -c`), stdin closed, a timeout, and its first output
line is the secret or OAuth token. Failures name the key, never the
secret or the command's output.
"""

from __future__ import annotations

import os
import stat

from relay.config import Config
from relay.errors import ConfigError, NoPermError

COMMAND_TIMEOUT = 30.0


def resolve(config: Config, override: str | None = None) -> str | None:
    """The secret to log in with, or None when the config asks for no AUTH."""
    if override is not None:
        return override
    if config.auth_pass is not None:
        return config.auth_pass
    if config.auth_pass_file:
        return _from_file(config)
    if config.auth_pass_command:
        return _from_command(config)
    return None


def _from_file(config: Config) -> str:
    path = config.auth_pass_file
    assert path is not None
    where = config.sources.get("auth_pass_file", config.path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(f"AuthPassFile {path}: {err.strerror or err}", path=where) from None
    try:
        info = os.fstat(fd)
        if info.st_mode & stat.S_IRWXO:
            _readable_by_everyone(config, path, info, where)
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    secret = data.decode("utf-8", "replace").splitlines()[0] if data.strip() else ""
    if not secret:
        raise ConfigError(f"AuthPassFile {path} is empty", path=where)
    return secret


def _readable_by_everyone(config: Config, path: str, info: os.stat_result, where: str) -> None:
    mode = f"{stat.S_IMODE(info.st_mode):o}"
    if config.strict_permissions:
        raise ConfigError(
            f"AuthPassFile {path} can be read by every local user (mode {mode}); refused "
            f"(StrictPermissions=yes, the default). Fix: chmod 640 {path} with the group of "
            f"mailx-relayd (or chmod 600 {path}), and let users send through the service",
            path=where,
        )
    raise NoPermError(
        f"AuthPassFile {path} is readable by others (mode {mode}); fix with: chmod 640 {path}",
        path=where,
    )


def _from_command(config: Config) -> str:
    import shlex
    import subprocess

    command = config.auth_pass_command
    assert command is not None
    where = config.sources.get("auth_pass_command", config.path)
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise ConfigError(f"AuthPassCommand: cannot split the command: {err}", path=where) from None
    if not argv:
        raise ConfigError("AuthPassCommand is empty", path=where)
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError(f"AuthPassCommand: program not found: {argv[0]}", path=where) from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"AuthPassCommand: {argv[0]} did not finish within {COMMAND_TIMEOUT:.0f} s", path=where
        ) from None
    except OSError as err:
        raise ConfigError(
            f"AuthPassCommand: cannot run {argv[0]}: {err.strerror}", path=where
        ) from None
    if done.returncode != 0:
        raise ConfigError(
            f"AuthPassCommand: {argv[0]} exited with status {done.returncode}", path=where
        )
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConfigError(f"AuthPassCommand: {argv[0]} printed nothing", path=where)
    return secret
