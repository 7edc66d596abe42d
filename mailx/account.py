"""A user's own SMTP account from their mail.rc: s-nail's `mta=smtp://...` and friends.

People arriving from s-nail have their provider in `~/.mailrc`:

    set mta=smtps://me%40example.org@smtp.example.org:465 smtp-auth=login
    set password-me@example.org@smtp.example.org='secret'

`mail` must send through that account, never silently through the system's. This module
reads the variables s-nail documents (s-nail(1), "On URL syntax and credential lookup";
the supported list is in mail.rc(5)) and turns them into a relay configuration built by
the relay's own parsers (`relay.config.from_settings`), so TLS verification, AUTH and
exit statuses are the relay's. What it cannot honour it refuses with a ConfigError (78)
naming the variable: never a fallback to the system configuration.

Decisions where s-nail leaves a choice:
- Scheme and port: `smtp://` (25) and `submission://` (587) are plain SMTP, STARTTLS with
  `smtp-use-starttls`, as in s-nail; `smtps://` and `submissions://` (465) are TLS from
  the first byte. Other schemes, a path in the URL, `socks-proxy` and the AUTH methods
  `external`, `externanon` and `gssapi` are refused.
- Credentials: the user from the URL (percent-decoded), else the chain `user-HOST`,
  `user`, else `smtp-auth-user`, else the login name; the password from the URL, else
  `password-USER@HOST`, `password-HOST`, `password`, else `smtp-auth-password`. Without
  `smtp-auth` a password found means AUTH with the best method the server offers, no
  password means no AUTH; an `smtp-auth` method with no password is refused (s-nail
  would ask on the terminal; a cron job has none).
- `tls-verify`: `ignore` turns verification off (with the relay's warning); `strict`,
  `ask` and `warn` all verify: a failed check is never accepted silently.
- `tls-fingerprint` only with `tls-fingerprint-digest=sha256` (s-nail's default digest
  is BLAKE2s256, whose 64 hex digits would be mistaken for a SHA-256 pin).
- A temporary failure is not queued: the queue is flushed later with the system
  configuration, which would send the message through another account. It is exit 75
  with the message in dead.letter, as s-nail does.
- AUTH over a connection without TLS is refused as in the relay, except to a loopback
  address (nothing leaves the host).
"""

from __future__ import annotations

import os
import stat

from relay import ConfigError

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Mapping

    from relay import Config

SCHEMES = {
    "smtp": (25, False),
    "submission": (587, False),
    "smtps": (465, True),
    "submissions": (465, True),
}
AUTH_METHODS = {
    "plain": "PLAIN",
    "login": "LOGIN",
    "cram-md5": "CRAM-MD5",
    "oauthbearer": "OAUTHBEARER",
    "xoauth2": "XOAUTH2",
}
LOOPBACK = ("localhost", "::1")


class Account:
    """The relay configuration and the secrets for one `mta=` URL."""

    __slots__ = ("config", "envelope_from", "password", "url", "warnings")

    def __init__(
        self,
        config: Config,
        password: str | None,
        envelope_from: str | None,
        url: str,
        warnings: list[str],
    ) -> None:
        self.config = config
        self.password = password
        self.envelope_from = envelope_from
        #: The URL without its password, for messages.
        self.url = url
        self.warnings = warnings


def is_url(mta: str) -> bool:
    """An `mta` value that names a network account rather than a program."""
    return "://" in mta and not mta.startswith("file://")


def account(
    variables: Mapping[str, str],
    origins: Mapping[str, tuple[str, int]],
    login: str,
    local_hostname: str | None = None,
) -> Account | None:
    """The account `mta` names, None when it names a program (or is unset)."""
    mta = variables.get("mta") or variables.get("smtp")
    if not mta or not is_url(mta):
        return None
    where = _where(origins, "mta" if "mta" in variables else "smtp")
    scheme, _, rest = mta.partition("://")
    if scheme.lower() not in SCHEMES:
        supported = ", ".join(f"{name}://" for name in SCHEMES)
        raise ConfigError(
            f"mta={_shown(mta)}: {scheme}:// is not supported (use {supported}, or a program)",
            path=where[0],
            line=where[1],
        )
    default_port, implicit_tls = SCHEMES[scheme.lower()]
    url_user, url_password, host, port = _split_authority(rest, mta, where)
    port_given = port is not None
    host_key = f"{host}:{port}" if port_given else host

    def chain(name: str, user: str | None = None) -> tuple[str, str] | None:
        """s-nail's variable chain: NAME-USER@HOST, NAME-HOST, NAME; (value, name)."""
        names = ([f"{name}-{user}@{host_key}"] if user else []) + [f"{name}-{host_key}", name]
        for candidate in names:
            if candidate in variables:
                return variables[candidate], candidate
        return None

    for refused in ("socks-proxy",):
        if chain(refused):
            raise ConfigError(f"{refused} is not supported by mail's SMTP client", path=where[0])

    user = url_user
    if user is None:
        found = chain("user") or (
            (variables["smtp-auth-user"], "smtp-auth-user")
            if "smtp-auth-user" in variables
            else None
        )
        user = found[0] if found else None
    password = url_password
    password_from = "mta" if url_password is not None else None
    if password is None:
        found = chain("password", user or login)
        if found is None and "smtp-auth-password" in variables:
            found = variables["smtp-auth-password"], "smtp-auth-password"
        if found is not None:
            password, password_from = found
    method_found = chain("smtp-auth", user or login)
    method = method_found[0].lower() if method_found else None

    settings: dict[str, tuple[str, str, int | None]] = {}

    def put(key: str, value: str, variable: str) -> None:
        file, line = _where(origins, variable)
        settings[key] = (value, file or "mail.rc", line)

    put("mailhub", _hostport(host, port or default_port), "mta")
    if implicit_tls:
        put("UseTLS", "yes", "mta")
    elif chain("smtp-use-starttls", user or login):
        put("UseSTARTTLS", "yes", "smtp-use-starttls")
    if method not in (None, "none"):
        if method not in AUTH_METHODS:
            raise ConfigError(
                f"smtp-auth={method}: not supported by mail's SMTP client (use one of "
                f"{', '.join(AUTH_METHODS)}, or none)",
                path=_where(origins, method_found[1] if method_found else "smtp-auth")[0],
            )
        if password is None:
            raise ConfigError(
                f"smtp-auth={method} needs a password: set it in the mta URL or as "
                f"password-{user or login}@{host_key}",
                path=where[0],
            )
        put("AuthMethod", AUTH_METHODS[method], method_found[1] if method_found else "smtp-auth")
    if password is not None and method != "none":
        put("AuthUser", user or login, "mta")
    verify = chain("tls-verify", user or login)
    if verify is not None:
        if verify[0].lower() not in ("strict", "ask", "warn", "ignore"):
            raise ConfigError(f"{verify[1]}={verify[0]}: expected strict, ask, warn or ignore")
        if verify[0].lower() == "ignore":
            put("TLSVerify", "no", verify[1])
    for variable, key in (("tls-ca-file", "TLS_CA_File"), ("tls-ca-dir", "TLS_CA_Dir")):
        found = chain(variable, user or login)
        if found is not None:
            put(key, os.path.expanduser(found[0]), found[1])
    pin = chain("tls-fingerprint", user or login)
    if pin is not None:
        digest = chain("tls-fingerprint-digest", user or login)
        if digest is None or digest[0].lower().replace("-", "") != "sha256":
            raise ConfigError(
                f"{pin[1]} needs tls-fingerprint-digest=sha256 (s-nail's default digest is "
                "BLAKE2s256; mail pins SHA-256 fingerprints, as `sendmail --serverinfo` "
                "prints them)",
                path=_where(origins, pin[1])[0],
            )
        put("TLSFingerprint", pin[0], pin[1])
    timeout = variables.get("socket-connect-timeout")
    if timeout:
        put("Timeout", timeout, "socket-connect-timeout")
    if password is not None and _is_loopback(host):
        put("AuthOverPlaintext", "yes", "mta")
    put("Queue", "no", "mta")
    put("FromLineOverride", "yes", "mta")
    shown_url = _shown(mta)
    config = _build(settings, f"mta={shown_url}")
    envelope_from = None
    smtp_hostname = variables.get("smtp-hostname")
    if smtp_hostname is not None:
        envelope_from = f"{user or login}@{smtp_hostname or local_hostname or _hostname()}"
    warnings = []
    if password is not None and password_from is not None:
        warning = _readable_secret(origins, password_from)
        if warning:
            warnings.append(warning)
    if verify is not None and verify[0].lower() == "ignore" and config.secure:
        warnings.append(
            f"warning: {verify[1]}=ignore accepts any certificate: anyone on the path can "
            "read the password and the mail"
        )
    return Account(config, password, envelope_from, shown_url, warnings)


def _hostport(host: str, port: int) -> str:
    """`mailhub=` as the relay writes it (IPv6 in brackets), for the relay to read."""
    import relay

    return relay.format_hostport(relay.Mailhub(host, port))


def _build(settings: dict[str, tuple[str, str, int | None]], name: str) -> Config:
    import relay

    return relay.config_from_settings(settings, name)


def _split_authority(
    rest: str, mta: str, where: tuple[str | None, int | None]
) -> tuple[str | None, str | None, str, int | None]:
    """`[user[:password]@]host[:port]` of the URL, user and password percent-decoded."""
    from urllib.parse import unquote

    if "/" in rest.rstrip("/"):
        raise ConfigError(
            f"mta={_shown(mta)}: a path in an SMTP URL is not supported",
            path=where[0],
            line=where[1],
        )
    rest = rest.rstrip("/")
    userinfo, at, hostport = rest.rpartition("@")
    user = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        user = unquote(name) or None
        password = unquote(secret) if colon else None
    if not hostport:
        raise ConfigError(f"mta={_shown(mta)}: no server in the URL", path=where[0], line=where[1])
    import relay

    try:
        # The relay's own reader of mailhub=: port 0 stands for "none given", since a
        # port given is 1 to 65535 (and which one is the default depends on the scheme).
        hub = relay.parse_hostport(hostport, 0)
    except ValueError as err:
        raise ConfigError(f"mta={_shown(mta)}: {err}", path=where[0], line=where[1]) from None
    return user, password, hub.host, hub.port or None


def _shown(mta: str) -> str:
    """The URL with its password replaced by `*`: for messages and `-v`."""
    scheme, sep, rest = mta.partition("://")
    userinfo, at, hostport = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":*"
    return f"{scheme}{sep}{userinfo}{at}{hostport}"


def _where(origins: Mapping[str, tuple[str, int]], name: str) -> tuple[str | None, int | None]:
    found = origins.get(name)
    return (found[0], found[1]) if found else ("-S " + name, None)


def _readable_secret(origins: Mapping[str, tuple[str, int]], variable: str) -> str | None:
    """The relay's warning for a password in a file every local user can read."""
    found = origins.get(variable)
    if found is None:
        return None
    path, line = found
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if not mode & stat.S_IROTH:
        return None
    return (
        f"warning: {path}:{line}: holds a password ({variable}) but is readable by others "
        f"(mode {stat.S_IMODE(mode):o}); fix with: chmod 600 {path}"
    )


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def _hostname() -> str:
    import socket

    return socket.getfqdn()
