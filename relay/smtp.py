"""One SMTP session to the mailhub: TLS mode, AUTH choice, sending, error classification.

Built on `smtplib`, with what it leaves to its caller done here:
- a verifying `ssl` context (smtplib's default for `starttls()` and `SMTP_SSL` checks
  nothing); STARTTLS is required when configured, never downgraded (RFC 3207 section 6),
  and EHLO is sent again after it, discarding what was learnt before (RFC 3207 4.2);
- no AUTH over a connection without TLS unless `AuthOverPlaintext=yes`;
- MAIL, RCPT and DATA issued one by one so every failure names its step, and a partial
  refusal is reported, not silently returned (smtplib's `sendmail` returns it);
- a `-v` transcript on stderr with AUTH data replaced by `***` and server text escaped.

Every failure leaves as a `RelayError` subclass: 4xx, timeouts and dropped connections
are temporary (EX_TEMPFAIL), 5xx permanent, a rejected certificate or missing STARTTLS
EX_UNAVAILABLE, a rejected login EX_NOPERM, a garbled reply EX_PROTOCOL.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from relay.config import Config, Mailhub
from relay.errors import (
    DataError,
    NoPermError,
    NoUserError,
    ProtocolError,
    RelayError,
    TempFailError,
    UnavailableError,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

# Strongest first; smtplib implements each as `auth_<name>`. OAuth methods take a token,
# not a password, so they are used only when AuthMethod names one.
AUTH_PREFERENCE = ("CRAM-MD5", "PLAIN", "LOGIN")
OAUTH_METHODS = ("XOAUTH2", "OAUTHBEARER")


def printable(text: str) -> str:
    """Server text made safe for a terminal (DESIGN V24): controls shown escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def reply_text(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return printable(f"{code} {' '.join(text.split())}")


class Transcript:
    """The `-v` dialogue: what we send and what the server answers, secrets masked."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last_code = 0
        self.in_auth = False

    def sent(self, data: bytes) -> None:
        if self.last_code == 354:
            self.out.write(f"--> [message, {len(data)} bytes]\n")
            self.last_code = 0
            return
        line = data.decode("utf-8", "replace").rstrip("\r\n")
        verb = line.split(" ", 1)[0].upper()
        if verb == "AUTH":
            self.in_auth = True
            line = " ".join(line.split(" ")[:2]) + (" ***" if line.count(" ") > 1 else "")
        elif self.in_auth and self.last_code == 334:
            line = "***"
        self.out.write(f"--> {printable(line)}\n")

    def received(self, code: int, message: bytes) -> None:
        self.last_code = code
        if code != 334:
            self.in_auth = False
        text = message.decode("utf-8", "replace")
        if self.in_auth and code == 334:
            text = "***"  # challenges are harmless, but XOAUTH2 errors echo the token scope
        for index, line in enumerate(text.splitlines() or [""]):
            last = index == len(text.splitlines() or [""]) - 1
            self.out.write(f"<-- {code}{' ' if last else '-'}{printable(line)}\n")
        self.out.flush()


class _Client(smtplib.SMTP):
    transcript: Transcript | None = None

    def send(self, s: Buffer | str) -> None:
        if self.transcript is not None:
            self.transcript.sent(s.encode("ascii") if isinstance(s, str) else bytes(s))
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        code, message = super().getreply()
        if self.transcript is not None:
            self.transcript.received(code, message)
        return code, message

    # RFC 7628 OAUTHBEARER and Google's XOAUTH2: the "password" is the OAuth token.
    # On failure the server sends a 334 with a JSON error; the answer is an empty line.
    def auth_xoauth2(self, challenge: bytes | None = None) -> str:
        if challenge is not None:
            return ""
        return f"user={self.user}\x01auth=Bearer {self.password}\x01\x01"

    def auth_oauthbearer(self, challenge: bytes | None = None) -> str:
        if challenge is not None:
            return "\x01"
        return f"n,a={self.user},\x01auth=Bearer {self.password}\x01\x01"


class _ClientSSL(_Client, smtplib.SMTP_SSL):
    pass


def normalise_fingerprint(text: str) -> str:
    """`AA:BB:...` as msmtp writes it, upper case; any colons or case accepted."""
    digits = text.replace(":", "").strip().upper()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def fingerprint(der: bytes) -> str:
    import hashlib

    return normalise_fingerprint(hashlib.sha256(der).hexdigest())


def tls_context(config: Config) -> ssl.SSLContext:
    """Verifying context: system store or TLS_CA_File/TLS_CA_Dir, host name checked.

    With `TLSFingerprint` the pin replaces the chain and name checks (as msmtp's
    tls_fingerprint): the server's certificate is then checked against the pin right
    after the handshake, before anything else is sent (`Session._check_pin`).
    """
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file, capath=config.tls_ca_dir)
        if not config.tls_verify or config.tls_fingerprint:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if config.use_tls_cert and config.tls_cert:
            context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as err:
        from relay.errors import ConfigError

        raise ConfigError(
            f"cannot load TLS certificates: {getattr(err, 'strerror', None) or err}",
            path=config.path,
        ) from None
    return context


@dataclass
class Outcome:
    """What the server did with one message."""

    accepted: list[str] = field(default_factory=list)
    #: recipient -> (code, reply) for every RCPT the server refused.
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    reply: str = ""


class Session:
    """An open, authenticated SMTP session to one mailhub, reusable for many messages."""

    def __init__(
        self,
        config: Config,
        hub: Mailhub,
        *,
        password: str | None = None,
        transcript: TextIO | None = None,
    ) -> None:
        self.config = config
        self.hub = hub
        self.password = password
        self.transcript = Transcript(transcript) if transcript is not None else None
        self.step = "connect"
        self.client: _Client | None = None
        self.tls = False
        self.auth_method: str | None = None

    # -- opening ------------------------------------------------------------------------

    def open(self, *, login: bool = True) -> Session:
        """Connect, EHLO, TLS and AUTH as the config says; raises a classified RelayError.

        `login=False` stops before AUTH (`sendmail --serverinfo` sends nothing).
        """
        try:
            self._open(login)
        except RelayError:
            self.close()
            raise
        except Exception as err:
            self.close()
            raise classify(err, self.step, self.hub) from None
        return self

    def _open(self, login: bool) -> None:
        config, hub = self.config, self.hub
        local_name = config.hostname or socket.gethostname()
        self.step = f"connect to {hub}"
        if config.use_tls and not config.use_starttls:
            client: _Client = _ClientSSL(
                local_hostname=local_name, timeout=config.timeout, context=tls_context(config)
            )
        else:
            client = _Client(local_hostname=local_name, timeout=config.timeout)
        client.transcript = self.transcript
        # smtplib takes the TLS server_hostname from `_host`, which only its constructor
        # sets; we connect separately so the transcript sees the greeting.
        client._host = hub.host  # type: ignore[attr-defined]
        self.client = client
        code, message = client.connect(hub.host, hub.port)
        if code != 220:
            raise _response_error(code, message, f"greeting from {hub}")
        self.tls = config.use_tls and not config.use_starttls
        if self.tls:
            self._check_pin()
        self.step = "EHLO"
        self._ehlo()
        if config.use_starttls:
            self.step = "STARTTLS"
            if not client.has_extn("starttls"):
                raise UnavailableError(
                    f"{hub} does not offer STARTTLS, which UseSTARTTLS=yes requires; "
                    "nothing was sent in clear text",
                    step="STARTTLS",
                )
            code, message = client.starttls(context=tls_context(config))
            self.tls = True
            self._check_pin()
            self.step = "EHLO after STARTTLS"
            self._ehlo()
        if config.auth_user and login:
            self.step = "AUTH"
            self._login(config.auth_user)

    def peer_certificate(self) -> bytes | None:
        """The server's certificate (DER) once TLS is up, else None."""
        sock = self.client.sock if self.client is not None else None
        if not isinstance(sock, ssl.SSLSocket):
            return None
        return sock.getpeercert(binary_form=True)

    def _check_pin(self) -> None:
        expected = self.config.tls_fingerprint
        if not expected:
            return
        der = self.peer_certificate()
        got = fingerprint(der) if der else "(no certificate)"
        if got != normalise_fingerprint(expected):
            raise UnavailableError(
                f"TLS certificate of {self.hub.host} does not match TLSFingerprint: "
                f"expected {normalise_fingerprint(expected)}, got {got}",
                step="TLS",
            )

    def _ehlo(self) -> None:
        assert self.client is not None
        code, message = self.client.ehlo()
        if code != 250:
            code, message = self.client.helo()
            if code != 250:
                raise _response_error(code, message, self.step)

    def _login(self, user: str) -> None:
        client = self.client
        assert client is not None
        if not self.tls and not self.config.auth_over_plaintext:
            raise UnavailableError(
                f"refusing to send the password for '{user}' over a connection without TLS "
                "(set UseSTARTTLS=yes or UseTLS=yes; AuthOverPlaintext=yes only for a "
                "loopback test server)",
                step="AUTH",
            )
        if self.password is None:
            raise UnavailableError(f"AuthUser={user} is set but no password is configured")
        offered = client.esmtp_features.get("auth", "").upper().split()
        wanted = self.config.auth_method
        if wanted:
            method = wanted.upper()
            if method in OAUTH_METHODS:
                # A token works with either; prefer the standard one (RFC 7628).
                method = next((m for m in ("OAUTHBEARER", "XOAUTH2") if m in offered), method)
            if method not in offered:
                raise UnavailableError(
                    f"AuthMethod={wanted} is not offered by {self.hub} "
                    f"(it offers: {' '.join(offered) or 'no AUTH at all'})",
                    step="AUTH",
                )
        else:
            usable = [m for m in AUTH_PREFERENCE if m in offered]
            if not usable:
                raise UnavailableError(
                    f"no AUTH method both sides support (server offers: "
                    f"{' '.join(offered) or 'none'})",
                    step="AUTH",
                )
            method = usable[0]
        client.user, client.password = user, self.password
        handler = getattr(client, "auth_" + method.lower().replace("-", "_"), None)
        if handler is None:
            raise UnavailableError(f"AuthMethod={method} is not supported", step="AUTH")
        try:
            client.auth(method, handler, initial_response_ok=method != "LOGIN")
        except smtplib.SMTPAuthenticationError as err:
            if 400 <= err.smtp_code < 500:
                raise TempFailError(
                    f"{self.hub} could not check the login now (AUTH {method})",
                    step="AUTH",
                    reply=reply_text(err.smtp_code, err.smtp_error),
                ) from None
            raise NoPermError(
                f"{self.hub} rejected the login of '{user}' (AUTH {method})",
                step="AUTH",
                reply=reply_text(err.smtp_code, err.smtp_error),
            ) from None
        finally:
            client.password = ""
        self.auth_method = method

    # -- sending ------------------------------------------------------------------------

    def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Outcome:
        """One transaction. Raises when nothing was accepted; partial refusals are returned."""
        try:
            return self._send(sender, recipients, data)
        except RelayError:
            raise
        except Exception as err:
            raise classify(err, self.step, self.hub) from None

    def _send(self, sender: str, recipients: Sequence[str], data: bytes) -> Outcome:
        client = self.client
        assert client is not None
        options = []
        needs_utf8 = not sender.isascii() or not all(r.isascii() for r in recipients)
        if needs_utf8:
            if not client.has_extn("smtputf8"):
                raise DataError(
                    f"an address has a non-ASCII local part and {self.hub} does not offer SMTPUTF8"
                )
            options.append("SMTPUTF8")
        if not data.isascii() and client.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if client.has_extn("size"):
            options.append(f"SIZE={len(data)}")
        self.step = "MAIL FROM"
        code, message = client.mail(sender, options)
        if code != 250:
            self._reset()
            raise _response_error(code, message, "MAIL FROM", f"sender <{sender}>")
        outcome = Outcome()
        self.step = "RCPT TO"
        for recipient in recipients:
            code, message = client.rcpt(recipient)
            if code in (250, 251):
                outcome.accepted.append(recipient)
            else:
                outcome.refused[recipient] = (code, reply_text(code, message))
        if not outcome.accepted:
            self._reset()
            raise _refused_error(outcome.refused)
        self.step = "DATA"
        code, message = client.data(data)
        if code != 250:
            self._reset()
            raise _response_error(code, message, "DATA")
        outcome.reply = reply_text(code, message)
        return outcome

    def _reset(self) -> None:
        try:
            assert self.client is not None
            self.client.rset()
        except (smtplib.SMTPException, OSError):
            pass

    def reset(self) -> None:
        """RSET between messages of one flush."""
        self._reset()

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()

    def __enter__(self) -> Session:
        return self if self.client is not None else self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _response_error(code: int, message: bytes, step: str, what: str = "") -> RelayError:
    reply = reply_text(code, message)
    about = f" {what}" if what else ""
    if 400 <= code < 500:
        return TempFailError(f"temporary refusal at {step}{about}", step=step, reply=reply)
    if 500 <= code < 600:
        return UnavailableError(f"permanent refusal at {step}{about}", step=step, reply=reply)
    return ProtocolError(f"unexpected reply at {step}{about}", step=step, reply=reply)


def _refused_error(refused: dict[str, tuple[int, str]]) -> RelayError:
    listed = "; ".join(f"<{rcpt}>: {reply}" for rcpt, (_code, reply) in refused.items())
    if any(400 <= code < 500 for code, _ in refused.values()):
        return TempFailError(f"RCPT TO: every recipient refused for now: {listed}", step="RCPT TO")
    return NoUserError(f"RCPT TO: every recipient refused: {listed}", step="RCPT TO")


def classify(err: BaseException, step: str, hub: Mailhub) -> RelayError:
    """Map an exception from smtplib, ssl or socket to the relay's error tree."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return UnavailableError(
            f"TLS certificate of {hub.host} rejected: {err.verify_message}", step=step
        )
    if isinstance(err, smtplib.SMTPServerDisconnected):
        return TempFailError(f"{hub} closed the connection during {step}", step=step)
    if isinstance(err, smtplib.SMTPNotSupportedError):
        return UnavailableError(f"{hub} does not support {step}: {err}", step=step)
    if isinstance(err, smtplib.SMTPResponseException):
        if err.smtp_code == -1:
            return ProtocolError(f"{hub} sent a malformed reply during {step}", step=step)
        return _response_error(err.smtp_code, _as_bytes(err.smtp_error), step)
    if isinstance(err, smtplib.SMTPException):
        return ProtocolError(f"SMTP error with {hub} during {step}: {err}", step=step)
    if isinstance(err, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return TempFailError(f"{hub} cut the TLS handshake during {step}", step=step)
    if isinstance(err, ssl.SSLError):
        return ProtocolError(
            f"TLS failure with {hub} during {step}: {err.reason or err} (does the port speak "
            "the TLS mode configured: UseTLS for implicit TLS, UseSTARTTLS for STARTTLS?)",
            step=step,
        )
    if isinstance(err, TimeoutError | socket.timeout):
        return TempFailError(f"{hub} timed out during {step}", step=step)
    if isinstance(err, socket.gaierror):
        return TempFailError(f"cannot resolve {hub.host}: {err.strerror}", step=step)
    if isinstance(err, OSError):
        return TempFailError(
            f"cannot talk to {hub} during {step}: {err.strerror or err}", step=step
        )
    return RelayError(f"internal error during {step}: {type(err).__name__}: {err}", step=step)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "replace")


def open_session(
    config: Config,
    *,
    hubs: Sequence[Mailhub] | None = None,
    password: str | None = None,
    transcript: TextIO | None = None,
    login: bool = True,
) -> Session:
    """Open a session to the first mailhub that answers; a temporary failure tries the next."""
    last: RelayError | None = None
    for hub in hubs or config.mailhubs:
        try:
            session = Session(config, hub, password=password, transcript=transcript)
            return session.open(login=login)
        except TempFailError as err:
            last = err
            if transcript is not None:
                transcript.write(f"mailhub {hub}: {err}; trying the next one\n")
    assert last is not None
    raise last
