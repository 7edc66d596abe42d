"""The relay's configuration: ssmtp.conf and revaliases, read into a frozen `Config`.

Format (ssmtp.conf, kept compatible so existing files work unchanged):
- one `key=value` per line; keys case-insensitive; `#` starts a comment line;
- a value is taken whole, `=` and `#` included (ssmtp truncates at both and then logs in
  with the wrong password); whitespace followed by `#` after an unquoted value starts a
  trailing comment, as in existing ssmtp.conf files;
- a double-quoted value keeps everything inside the quotes (`\\"` and `\\\\` escape);
- booleans are yes/no, true/false, on/off, 1/0 in any case.
revaliases: `local:from-address[:mailhub[:port]]`, beside the config or at `RevAliases`.

Every error names the file and line. Where each value came from is kept for `-P`.
"""

from __future__ import annotations

import os
import stat

from relay.errors import ConfigError
from relay.records import ReadOnlyMapping, Record, TupleValue

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

DEFAULT_PATH = "/etc/ssmtp/ssmtp.conf"
DEFAULT_BACKOFF = (60, 3600)
DEFAULT_MAX_AGE = 5 * 24 * 3600
_NOTHING: Mapping[str, Any] = ReadOnlyMapping({})


class Mailhub(TupleValue):
    """Where to send: a host and a port (a value, used as a key; it was a NamedTuple)."""

    __slots__ = ("host", "port")
    _order = ("host", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class RevAlias(Record):
    """A revaliases line: the sender address for one local user, maybe their own mailhub."""

    __slots__ = ("address", "line", "mailhub")

    def __init__(self, address: str, mailhub: Mailhub | None, line: int) -> None:
        self.address = address
        self.mailhub = mailhub
        self.line = line


class Config(Record):
    """The relay's settings, a read-only value (build a changed copy with `replace`).

    A `Record`, not a NamedTuple (needs `typing` at run time) nor a dataclass (imports
    `inspect`): either costs every `sendmail` its start-up."""

    # In the order of the constructor's arguments and of `sendmail -P`'s lines.
    __slots__ = (  # noqa: RUF023
        "path",
        "mailhubs",
        "root",
        "rewrite_domain",
        "hostname",
        "use_tls",
        "use_starttls",
        "auth_user",
        "auth_pass",
        "auth_pass_file",
        "auth_pass_command",
        "auth_method",
        "auth_over_plaintext",
        "from_line_override",
        "use_tls_cert",
        "tls_cert",
        "tls_key",
        "tls_ca_file",
        "tls_ca_dir",
        "tls_verify",
        "tls_fingerprint",
        "aliases",
        "timeout",
        "queue",
        "queue_dir",
        "queue_max_age",
        "queue_backoff",
        "max_message_size",
        "log_file",
        "syslog",
        "strict_permissions",
        "revaliases",
        "revaliases_path",
        "sources",
        "warnings",
    )

    path: str
    mailhubs: tuple[Mailhub, ...]
    root: str | None
    rewrite_domain: str | None
    hostname: str | None
    use_tls: bool
    use_starttls: bool
    auth_user: str | None
    auth_pass: str | None
    auth_pass_file: str | None
    auth_pass_command: str | None
    auth_method: str | None
    auth_over_plaintext: bool
    from_line_override: bool
    use_tls_cert: bool
    tls_cert: str | None
    tls_key: str | None
    tls_ca_file: str | None
    tls_ca_dir: str | None
    tls_verify: bool
    tls_fingerprint: str | None
    aliases: str | None
    timeout: float
    queue: str
    queue_dir: str | None
    queue_max_age: int
    queue_backoff: tuple[int, int]
    #: MaxMessageSize in octets; None: the mailhub's SIZE if it announces one, else none.
    max_message_size: int | None
    log_file: str | None
    syslog: bool
    #: A secret every local user can read is refused (78), not only warned about.
    strict_permissions: bool
    revaliases: Mapping[str, RevAlias]
    revaliases_path: str | None
    #: key -> "path:line" where it was set, for `sendmail -P`.
    sources: Mapping[str, str]
    #: Non-fatal findings (unknown keys, readable secrets) to print once on stderr.
    warnings: tuple[str, ...]

    def __init__(
        self,
        path: str,
        mailhubs: tuple[Mailhub, ...] = (),
        root: str | None = None,
        rewrite_domain: str | None = None,
        hostname: str | None = None,
        use_tls: bool = False,
        use_starttls: bool = False,
        auth_user: str | None = None,
        auth_pass: str | None = None,
        auth_pass_file: str | None = None,
        auth_pass_command: str | None = None,
        auth_method: str | None = None,
        auth_over_plaintext: bool = False,
        from_line_override: bool = False,
        use_tls_cert: bool = False,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca_file: str | None = None,
        tls_ca_dir: str | None = None,
        tls_verify: bool = True,
        tls_fingerprint: str | None = None,
        aliases: str | None = None,
        timeout: float = 30.0,
        queue: str = "fallback",
        queue_dir: str | None = None,
        queue_max_age: int = DEFAULT_MAX_AGE,
        queue_backoff: tuple[int, int] = DEFAULT_BACKOFF,
        max_message_size: int | None = None,
        log_file: str | None = None,
        syslog: bool = False,
        strict_permissions: bool = True,
        revaliases: Mapping[str, RevAlias] = _NOTHING,
        revaliases_path: str | None = None,
        sources: Mapping[str, str] = _NOTHING,
        warnings: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self.mailhubs = mailhubs
        self.root = root
        self.rewrite_domain = rewrite_domain
        self.hostname = hostname
        self.use_tls = use_tls
        self.use_starttls = use_starttls
        self.auth_user = auth_user
        self.auth_pass = auth_pass
        self.auth_pass_file = auth_pass_file
        self.auth_pass_command = auth_pass_command
        self.auth_method = auth_method
        self.auth_over_plaintext = auth_over_plaintext
        self.from_line_override = from_line_override
        self.use_tls_cert = use_tls_cert
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.tls_ca_file = tls_ca_file
        self.tls_ca_dir = tls_ca_dir
        self.tls_verify = tls_verify
        self.tls_fingerprint = tls_fingerprint
        self.aliases = aliases
        self.timeout = timeout
        self.queue = queue
        self.queue_dir = queue_dir
        self.queue_max_age = queue_max_age
        self.queue_backoff = queue_backoff
        self.max_message_size = max_message_size
        self.log_file = log_file
        self.syslog = syslog
        self.strict_permissions = strict_permissions
        self.revaliases = revaliases
        self.revaliases_path = revaliases_path
        self.sources = sources
        self.warnings = warnings

    @property
    def secure(self) -> bool:
        return self.use_tls or self.use_starttls


def _parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"expected yes or no, got '{value}'")


def _parse_mailhubs(value: str) -> tuple[Mailhub, ...]:
    hubs = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        hubs.append(parse_hostport(item))
    if not hubs:
        raise ValueError("no host given")
    return tuple(hubs)


def parse_hostport(item: str, default_port: int = 25) -> Mailhub:
    """`host`, `host:port` or `[v6addr]:port`; the port checked as 1-65535."""
    host, port_text = item, ""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif item.count(":") == 1:
        host, _, port_text = item.partition(":")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"bad host '{item}'")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port in '{item}'")
        port = int(port_text)
    return Mailhub(host, port)


def _parse_positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"expected a positive number, got '{value}'")
    return number


def _parse_backoff(value: str) -> tuple[int, int]:
    first, _, cap = value.partition(",")
    low = int(first)
    high = int(cap) if cap else max(low, DEFAULT_BACKOFF[1])
    if low < 1 or high < low:
        raise ValueError(f"expected FIRST,MAX seconds with 1 <= FIRST <= MAX, got '{value}'")
    return (low, high)


def _parse_duration(value: str) -> int:
    """Seconds, or a number with s/m/h/d (`5d` is five days)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip().lower()
    scale = units.get(text[-1:], 0)
    number = int(text[:-1]) if scale else int(text)
    seconds = number * (scale or 1)
    if seconds < 1:
        raise ValueError(f"expected a positive duration, got '{value}'")
    return seconds


def _parse_size(value: str) -> int:
    """Octets: `1048576`, or a number followed by K, M or G (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = value.strip().lower().removesuffix("b")
    scale = units.get(text[-1:], 0)
    digits = text[:-1] if scale else text
    if not digits.isdigit() or int(digits) < 1:
        raise ValueError(f"expected a size such as 10M, 512K or 1048576, got '{value}'")
    return int(digits) * (scale or 1)


def _parse_queue(value: str) -> str:
    mode = value.lower()
    if mode not in ("fallback", "always", "no"):
        raise ValueError(f"expected fallback, always or no, got '{value}'")
    return mode


def _text(value: str) -> str:
    return value


def _parse_fingerprint(value: str) -> str:
    """A SHA-256 fingerprint: 64 hex digits, colons allowed (`AA:BB:...`)."""
    digits = value.replace(":", "").strip()
    if len(digits) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError("expected a SHA-256 fingerprint: 64 hex digits, colons allowed")
    return value


# key (lowercase) -> (Config field, parser). Keys are ssmtp's, the common patched ones, ours.
_KEYS: dict[str, tuple[str, Callable[[str], object]]] = {
    "root": ("root", _text),
    "mailhub": ("mailhubs", _parse_mailhubs),
    "rewritedomain": ("rewrite_domain", _text),
    "hostname": ("hostname", _text),
    "usetls": ("use_tls", _parse_bool),
    "usestarttls": ("use_starttls", _parse_bool),
    "authuser": ("auth_user", _text),
    "authpass": ("auth_pass", _text),
    "authpassfile": ("auth_pass_file", _text),
    "authpasscommand": ("auth_pass_command", _text),
    "authmethod": ("auth_method", _text),
    "authoverplaintext": ("auth_over_plaintext", _parse_bool),
    "fromlineoverride": ("from_line_override", _parse_bool),
    "usetlscert": ("use_tls_cert", _parse_bool),
    "tlscert": ("tls_cert", _text),
    "tlskey": ("tls_key", _text),
    "tls_ca_file": ("tls_ca_file", _text),
    "tls_ca_dir": ("tls_ca_dir", _text),
    "tlsverify": ("tls_verify", _parse_bool),
    "tlsfingerprint": ("tls_fingerprint", _parse_fingerprint),
    "aliases": ("aliases", _text),
    "revaliases": ("revaliases_path", _text),
    "timeout": ("timeout", _parse_positive),
    "queue": ("queue", _parse_queue),
    "queuedir": ("queue_dir", _text),
    "queuemaxage": ("queue_max_age", _parse_duration),
    "queuebackoff": ("queue_backoff", _parse_backoff),
    "maxmessagesize": ("max_message_size", _parse_size),
    "logfile": ("log_file", _text),
    "syslog": ("syslog", _parse_bool),
    "strictpermissions": ("strict_permissions", _parse_bool),
}

#: ssmtp keys we accept and deliberately ignore (they have no meaning here).
_IGNORED = {"debug", "addheader", "remoteport"}

#: Keys whose value is a secret: never printed, and a reason to check the file's mode.
SECRET_KEYS = frozenset({"auth_pass"})


def split_value(raw: str, path: str, number: int) -> str:
    """The value part of `key=value`: quoted whole, or unquoted up to a ` # comment`."""
    text = raw.strip()
    if text.startswith('"'):
        out: list[str] = []
        index = 1
        while index < len(text):
            char = text[index]
            if char == "\\" and index + 1 < len(text) and text[index + 1] in '"\\':
                out.append(text[index + 1])
                index += 2
                continue
            if char == '"':
                rest = text[index + 1 :].strip()
                if rest and not rest.startswith("#"):
                    raise ConfigError(
                        f"unexpected text after the closing quote: '{rest}'", path=path, line=number
                    )
                return "".join(out)
            out.append(char)
            index += 1
        raise ConfigError("unterminated double quote", path=path, line=number)
    for index, char in enumerate(text):
        if char == "#" and index > 0 and text[index - 1] in " \t":
            return text[:index].rstrip()
    return text


def parse(text: str, path: str) -> Config:
    """Parse ssmtp.conf text; revaliases are not read here (see `load`)."""
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, rest = line.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ConfigError(f"expected key=value, got '{_shorten(line)}'", path=path, line=number)
        spec = _KEYS.get(key.lower())
        if spec is None:
            if key.lower() not in _IGNORED:
                warnings.append(f"{path}:{number}: unknown key '{key}' ignored")
            continue
        _set(values, spec, key, split_value(rest, path, number), path, number)
        sources[spec[0]] = f"{path}:{number}"
    return Config(path=path, sources=sources, warnings=tuple(warnings), **values)  # type: ignore[arg-type]


def from_settings(settings: Mapping[str, tuple[str, str, int | None]], path: str) -> Config:
    """A config from ssmtp.conf keys given by another front end (mail's `mta=smtp://...`
    account in a mail.rc): key -> (value, file, line). The same parsers and checks as
    the file; `path` names the settings as a whole in messages."""
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key, (value, where, number) in settings.items():
        spec = _KEYS.get(key.lower())
        if spec is None:
            raise ValueError(f"not a relay setting: {key}")
        _set(values, spec, key, value, where, number)
        sources[spec[0]] = f"{where}:{number}" if number is not None else where
    config = Config(path=path, sources=sources, **values)  # type: ignore[arg-type]
    if not config.mailhubs:
        raise ConfigError("no mailhub set", path=path)
    return config


def _set(
    values: dict[str, object],
    spec: tuple[str, Callable[[str], object]],
    key: str,
    value: str,
    path: str,
    number: int | None,
) -> None:
    name, convert = spec
    try:
        # An empty text value (`rewriteDomain=`) means unset, as in ssmtp.
        values[name] = None if convert is _text and not value else convert(value)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}", path=path, line=number) from None


def parse_revaliases(text: str, path: str) -> dict[str, RevAlias]:
    entries: dict[str, RevAlias] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ConfigError(
                "expected local:from-address[:mailhub[:port]]", path=path, line=number
            )
        hub = None
        if len(parts) >= 3 and parts[2]:
            try:
                hub = parse_hostport(":".join(parts[2:4]))
            except ValueError as err:
                raise ConfigError(str(err), path=path, line=number) from None
        entries[parts[0].strip()] = RevAlias(parts[1].strip(), hub, number)
    return entries


def config_path(explicit: str | None, environ: Mapping[str, str]) -> str:
    """`sendmail -C FILE`, else `$RELAY_CONFIG`, else the ssmtp path."""
    return explicit or environ.get("RELAY_CONFIG") or DEFAULT_PATH


def load(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the config and its revaliases; every failure is a ConfigError naming the file."""
    env = os.environ if environ is None else environ
    path = config_path(path, env)
    text, info = _read(path)
    config = parse(text, path)
    if not config.mailhubs:
        raise ConfigError("no mailhub set (mailhub=host[:port])", path=path)
    warnings = list(config.warnings)
    if config.auth_pass is not None and info.st_mode & stat.S_IROTH:
        # Group-readable is how ssmtp ships it (0640 root:mail) and fine: only "other"
        # means every local user can read the password.
        readable = (
            f"holds AuthPass but every local user can read it (mode {stat.S_IMODE(info.st_mode):o})"
        )
        if config.strict_permissions:
            raise ConfigError(
                f"{readable}; refused (StrictPermissions=yes, the default). Fix: chmod 640 "
                f"{path} and let users send through mailx-relayd, or move the password to an "
                "AuthPassFile (mode 600 or 640)",
                path=path,
            )
        warnings.append(f"warning: {path}: {readable}; fix with: chmod 640 {path}")
    if not config.tls_verify and config.secure:
        warnings.append(
            f"warning: {config.sources.get('tls_verify', path)}: TLSVerify=no accepts any "
            "certificate: anyone on the path can read the password and the mail"
        )
    rev_path = config.revaliases_path or os.path.join(os.path.dirname(path), "revaliases")
    revaliases: dict[str, RevAlias] = {}
    if os.path.exists(rev_path):
        rev_text, _ = _read(rev_path)
        revaliases = parse_revaliases(rev_text, rev_path)
    return config.replace(revaliases=revaliases, revaliases_path=rev_path, warnings=tuple(warnings))


def _read(path: str) -> tuple[str, os.stat_result]:
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read()
    except OSError as err:
        failure = ConfigError(f"cannot read: {err.strerror or err}", path=path)
        failure.errno = err.errno
        raise failure from None
    try:
        return data.decode("utf-8"), info
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError("not valid UTF-8", path=path, line=line) from None


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
