"""One SMTP session to the mailhub: TLS mode, AUTH choice, sending, error classification.

Built on `relay.smtp_wire` (the protocol on a socket, lighter to start than `smtplib`),
with the policy done here:
- a verifying `ssl` context, made once per process and only when TLS is used;
  STARTTLS is required when configured, never downgraded (RFC 3207 section 6), and EHLO
  is sent again after it, discarding what was learnt before (RFC 3207 4.2);
- no AUTH over a connection without TLS unless `AuthOverPlaintext=yes`;
- MAIL, RCPT and DATA pipelined when the server offers PIPELINING (RFC 2920), one by one
  otherwise; every failure names its step, and a partial refusal is reported, never
  silently dropped;
- the message written in large buffers, streamed in chunks when it is big;
- a `-v` transcript on stderr with AUTH data replaced by `***` and server text escaped.

Every failure leaves as a `RelayError` subclass carrying `step` (`relay.replies`
names them), `reply` and `code`: 4xx, timeouts and dropped connections are temporary
(EX_TEMPFAIL), and so are a rejected certificate or pin and a missing STARTTLS (a
`TLSFailure`: deferred as Postfix does, nothing was sent); 5xx permanent, a rejected
login EX_NOPERM, a garbled reply EX_PROTOCOL; `relay.replies` sorts the codes. A TLS
handshake that fails on the protocol itself (implicit TLS against a STARTTLS port, or
the reverse) is retried like any protocol error, but its text says it is almost
certainly the configuration and names the key and the port.
A 421 is the server closing the session: the connection is dropped at once and the
error says at which step, and whether any message data had been sent. A connection lost
after the final dot, before the reply, is the one failure after which the message may
still have been delivered: the error says so (the duplicate window of mailq(1)).
"""

from __future__ import annotations

# Not `socket` (its import is ~10 ms of enum conversion): see relay/smtp_wire.py.
import _socket
import os
import sys

from relay import replies, smtp_wire
from relay.config import Config, Mailhub
from relay.errors import (
    DataError,
    NoPermError,
    NoUserError,
    ProtocolError,
    RelayError,
    TempFailError,
    TLSFailure,
    UnavailableError,
)
from relay.records import Record

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterable, Sequence
    from typing import Any, Protocol, TextIO

    class Streamed(Protocol):
        """A message in wire form too big to hold: `relay.message.StreamedWire`."""

        size: int
        eight_bit: bool

        def chunks(self) -> Iterable[bytes]: ...


# Strongest first; `relay.smtp_wire` implements each. OAuth methods take a token, not a
# password, so they are used only when AuthMethod names one.
AUTH_PREFERENCE = ("CRAM-MD5", "PLAIN", "LOGIN")
OAUTH_METHODS = ("XOAUTH2", "OAUTHBEARER")


def printable(text: str) -> str:
    """Server text made safe for a terminal: controls shown escaped, never interpreted."""
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

    def message(self, size: int) -> None:
        self.out.write(f"--> [message, {size} bytes]\n")
        self.last_code = 0

    def sent(self, data: bytes) -> None:
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


def normalise_fingerprint(text: str) -> str:
    """`AA:BB:...` as msmtp writes it, upper case; any colons or case accepted."""
    digits = text.replace(":", "").strip().upper()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


class CertificateRejected(TLSFailure):
    """The server's certificate failed verification (chain, name or dates)."""

    #: `--serverinfo` only: what an unverified look at the server showed.
    report: str | None = None


def fingerprint(der: bytes) -> str:
    import hashlib

    return normalise_fingerprint(hashlib.sha256(der).hexdigest())


_CONTEXTS: dict[tuple[Any, ...], ssl.SSLContext] = {}


def tls_context(config: Config) -> ssl.SSLContext:
    """Verifying context: system store or TLS_CA_File/TLS_CA_Dir, host name checked.

    With `TLSFingerprint` the pin replaces the chain and name checks (as msmtp's
    tls_fingerprint): the server's certificate is then checked against the pin right
    after the handshake, before anything else is sent (`Session._check_pin`).
    Loading certificates is the dear part of TLS set-up, so a context is made once per
    process for the same settings (a flush reconnecting reuses it); `ssl` is imported
    here, never for a session without TLS.
    """
    import ssl

    key = _context_key(config)
    cached = _CONTEXTS.get(key)
    if cached is not None:
        return cached
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
    _CONTEXTS[key] = context
    return context


def _context_key(config: Config) -> tuple[Any, ...]:
    """The settings a context depends on, with the files' identity (a changed file is
    loaded again)."""
    files = []
    for path in (config.tls_ca_file, config.tls_cert, config.tls_key):
        try:
            info = os.stat(path) if path else None
        except OSError:
            info = None
        files.append((path, info.st_mtime_ns, info.st_ino, info.st_size) if info else (path,))
    return (
        *files,
        config.tls_ca_dir,
        config.tls_verify,
        bool(config.tls_fingerprint),
        config.use_tls_cert,
    )


class Outcome(Record):
    """What the server did with one message (`relay.delivery` makes it a `Verdict`)."""

    __slots__ = ("accepted", "refused", "reply")

    def __init__(self) -> None:
        self.accepted: list[str] = []
        #: recipient -> (code, reply) for every RCPT the server refused.
        self.refused: dict[str, tuple[int, str]] = {}
        self.reply = ""


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
        self.client: smtp_wire.Client | None = None
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
        local_name = config.hostname or _socket.gethostname()
        self.step = replies.CONNECT
        implicit = config.use_tls and not config.use_starttls
        context = tls_context(config) if implicit else None
        client = smtp_wire.Client(local_name, config.timeout, self.transcript)
        self.client = client
        code, message = client.connect(hub.host, hub.port, context)
        if code != 220:
            raise _response_error(code, message, replies.CONNECT, where=f"greeting from {hub}")
        self.tls = config.use_tls and not config.use_starttls
        if self.tls:
            self._check_pin()
        self.step = "EHLO"
        self._ehlo()
        if config.use_starttls:
            self.step = replies.STARTTLS
            if not client.has_extn("starttls"):
                raise TLSFailure(
                    f"{hub} does not offer STARTTLS, which UseSTARTTLS=yes requires; "
                    "nothing was sent in clear text",
                    step=replies.STARTTLS,
                )
            client.starttls(tls_context(config), hub.host)
            self.tls = True
            self._check_pin()
            self.step = "EHLO after STARTTLS"
            self._ehlo()
        if config.auth_user and login:
            self.step = replies.AUTH
            self._login(config.auth_user)

    def peer_certificate(self) -> bytes | None:
        """The server's certificate (DER) once TLS is up, else None."""
        sock = self.client.sock if self.client is not None else None
        ssl = sys.modules.get("ssl")
        if ssl is None or not isinstance(sock, ssl.SSLSocket):
            return None
        der: bytes | None = sock.getpeercert(binary_form=True)
        return der

    def _check_pin(self) -> None:
        expected = self.config.tls_fingerprint
        if not expected:
            return
        der = self.peer_certificate()
        got = fingerprint(der) if der else "(no certificate)"
        if got != normalise_fingerprint(expected):
            raise TLSFailure(
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
                step=replies.AUTH,
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
                    step=replies.AUTH,
                )
        else:
            usable = [m for m in AUTH_PREFERENCE if m in offered]
            if not usable:
                raise UnavailableError(
                    f"no AUTH method both sides support (server offers: "
                    f"{' '.join(offered) or 'none'})",
                    step=replies.AUTH,
                )
            method = usable[0]
        if method not in (*AUTH_PREFERENCE, *OAUTH_METHODS):
            raise UnavailableError(f"AuthMethod={method} is not supported", step=replies.AUTH)
        try:
            client.auth(method, user, self.password)
        except smtp_wire.AuthFailed as err:
            if 400 <= err.code < 500:
                raise TempFailError(
                    f"{self.hub} could not check the login now (AUTH {method})",
                    step=replies.AUTH,
                    reply=reply_text(err.code, err.message),
                    code=err.code,
                ) from None
            raise NoPermError(
                f"{self.hub} rejected the login of '{user}' (AUTH {method})",
                step=replies.AUTH,
                reply=reply_text(err.code, err.message),
                code=err.code,
            ) from None
        self.auth_method = method

    # -- sending ------------------------------------------------------------------------

    def send(self, sender: str, recipients: Sequence[str], data: bytes | Streamed) -> Outcome:
        """One transaction. Raises when nothing was accepted; partial refusals are returned.

        `data` is the message in wire form (CRLF line ends, `relay.message.to_wire`),
        whole or streamed; dot-stuffing is done here.
        """
        try:
            return self._send(sender, recipients, data)
        except RelayError:
            raise
        except Exception as err:
            raise classify(err, self.step, self.hub) from None

    def _send(self, sender: str, recipients: Sequence[str], data: bytes | Streamed) -> Outcome:
        client = self.client
        assert client is not None
        chunks: Iterable[bytes]
        if isinstance(data, bytes):
            size, eight_bit, chunks = len(data), not data.isascii(), (data,)
        else:
            size, eight_bit, chunks = data.size, data.eight_bit, data.chunks()
        options = []
        utf8 = [a for a in (sender, *recipients) if not a.isascii()]
        if utf8:
            # RFC 6531: a UTF-8 mailbox travels only where the server offers SMTPUTF8.
            if not client.has_extn("smtputf8"):
                raise DataError(
                    f"<{utf8[0]}> has a non-ASCII local part and {self.hub} does not offer "
                    "SMTPUTF8 (RFC 6531); nothing sent: use an ASCII address for this "
                    "mailbox, or a mailhub that offers SMTPUTF8",
                    step="MAIL FROM",
                )
            options.append("SMTPUTF8")
        if eight_bit and client.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if client.has_extn("size"):
            announced = client.esmtp_features.get("size", "").strip()
            most = int(announced) if announced.isdigit() else 0  # 0: no fixed limit
            if 0 < most < size:
                # Refused before MAIL, as the server would at MAIL (RFC 1870: 552): the
                # whole message need not travel to be refused, and it is kept.
                raise UnavailableError(
                    f"message too big for {self.hub}: {size} bytes, and it accepts at most "
                    f"{most} (its SIZE); nothing was sent",
                    step=replies.MAIL,
                    hint="send it smaller (split it, or link to large attachments)",
                )
            options.append(f"SIZE={size}")
        mail = " ".join([f"MAIL FROM:<{sender}>", *options])
        rcpts = [f"RCPT TO:<{recipient}>" for recipient in recipients]
        pipelining = client.has_extn("pipelining")
        outcome = Outcome()
        about_sender = f"sender <{sender}>"
        self.step = replies.MAIL
        if pipelining:
            client.send_lines([mail, *rcpts, "DATA"])
            mail_reply = client.reply()
            if replies.closes_session(mail_reply[0]):
                raise self._failed(*mail_reply, replies.MAIL, about_sender)
        else:
            mail_reply = client.command(mail)
            if mail_reply[0] != 250:
                raise self._failed(*mail_reply, replies.MAIL, about_sender)
        self.step = replies.RCPT
        for recipient, line in zip(recipients, rcpts, strict=True):
            code, message = client.reply() if pipelining else client.command(line)
            if code in (250, 251):
                outcome.accepted.append(recipient)
            elif replies.closes_session(code):
                # The server is going away: the replies still due will never come.
                raise self._failed(code, message, replies.RCPT, f"<{recipient}>")
            else:
                outcome.refused[recipient] = (code, reply_text(code, message))
        self.step = replies.DATA
        if pipelining:
            code, message = client.reply()
            if code == 354 and (mail_reply[0] != 250 or not outcome.accepted):
                client.end_empty_data()  # RFC 2920 3.1: DATA went through on its own
                code = 0
        elif outcome.accepted:
            code, message = client.command("DATA")
        if mail_reply[0] != 250:
            raise self._failed(*mail_reply, replies.MAIL, about_sender)
        if not outcome.accepted:
            self._reset()
            raise _refused_error(outcome.refused)
        if code != 354:
            raise self._failed(code, message, replies.DATA)
        client.send_data(chunks, size)
        self.step = replies.END_OF_DATA
        code, message = client.reply()
        if code != 250:
            raise self._failed(code, message, replies.END_OF_DATA)
        outcome.reply = reply_text(code, message)
        return outcome

    def _failed(self, code: int, message: bytes, step: str, what: str = "") -> RelayError:
        """The error for a refusal at `step`; the session is reset for the next message,
        or dropped when the server said it is closing (421: nothing more will be read)."""
        if replies.closes_session(code):
            client, self.client = self.client, None
            if client is not None:
                client.close()  # no QUIT: the server has said goodbye
        else:
            self._reset()
        return _response_error(code, message, step, what, hub=self.hub)

    def _reset(self) -> None:
        try:
            assert self.client is not None
            self.client.rset()
        except (OSError, smtp_wire.MalformedReply):
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
        except (OSError, smtp_wire.MalformedReply):
            client.close()

    def drop(self) -> None:
        """Close the connection at once, without QUIT (we are being stopped, or the
        server is not answering: waiting for its reply to QUIT would only delay)."""
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def __enter__(self) -> Session:
        return self if self.client is not None else self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


#: What a connection lost after the final dot means for the message (mailq(1)).
DUPLICATE_RISK = "the message may have been delivered, and a retry may deliver it twice"


def _response_error(
    code: int,
    message: bytes,
    step: str,
    what: str = "",
    *,
    hub: Mailhub | None = None,
    where: str | None = None,
) -> RelayError:
    """The error for reply `code` at `step`, classified by `relay.replies`."""
    reply = reply_text(code, message)
    at = (where or step) + (f" {what}" if what else "")
    kind = replies.kind(code)
    if kind == replies.CLOSING and step in replies.MESSAGE_STEPS:
        text = f"{hub or 'the server'} closed the session at {at}"
        if step in replies.BEFORE_DATA_SENT:
            text += "; no message data was sent, so a retry cannot deliver it twice"
        else:
            text += "; it did not take the message"
        return TempFailError(text, step=step, reply=reply, code=code)
    if kind in (replies.TEMPORARY, replies.CLOSING):
        return TempFailError(f"temporary refusal at {at}", step=step, reply=reply, code=code)
    if kind == replies.PERMANENT:
        return UnavailableError(f"permanent refusal at {at}", step=step, reply=reply, code=code)
    return ProtocolError(f"unexpected reply at {at}", step=step, reply=reply, code=code)


def _refused_error(refused: dict[str, tuple[int, str]]) -> RelayError:
    listed = "; ".join(f"<{rcpt}>: {reply}" for rcpt, (_code, reply) in refused.items())
    codes = [code for code, _ in refused.values()]
    # `code`: the first reply of the kind that decides (one 4xx makes it worth a retry).
    temporary = [code for code in codes if replies.is_temporary(code)]
    if temporary:
        return TempFailError(
            f"RCPT TO: every recipient refused for now: {listed}",
            step=replies.RCPT,
            code=temporary[0],
        )
    return NoUserError(
        f"RCPT TO: every recipient refused: {listed}",
        step=replies.RCPT,
        code=codes[0] if codes else None,
    )


def classify(err: BaseException, step: str, hub: Mailhub) -> RelayError:
    """Map an exception from `relay.smtp_wire`, ssl or socket to the relay's error tree."""
    error = _classify(err, step, hub)
    if step == replies.END_OF_DATA and not isinstance(err, smtp_wire.ReplyError):
        # The whole message and its final dot went out; only the reply is missing.
        error.message += f"; {DUPLICATE_RISK}"
    return error


def _classify(err: BaseException, step: str, hub: Mailhub) -> RelayError:
    ssl = sys.modules.get("ssl")  # an SSL error means ssl was imported
    if ssl is not None and isinstance(err, ssl.SSLCertVerificationError):
        return CertificateRejected(
            f"TLS certificate of {hub.host} rejected: {err.verify_message}", step=step
        )
    if isinstance(err, smtp_wire.ReplyError):
        return _response_error(err.code, err.message, step, hub=hub)
    during = (
        "after the end of data, before replying"
        if step == replies.END_OF_DATA
        else f"during {step}"
    )
    if isinstance(err, smtp_wire.MalformedReply):
        return ProtocolError(f"{hub} sent a malformed reply {during}: {err}", step=step)
    if ssl is not None and isinstance(err, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        if step in replies.MESSAGE_STEPS:
            return TempFailError(f"{hub} closed the TLS connection {during}", step=step)
        return TempFailError(f"{hub} cut the TLS handshake {during}", step=step)
    if ssl is not None and isinstance(err, ssl.SSLError):
        return ProtocolError(
            f"TLS failure with {hub} {during}: {err.reason or err}" + _tls_mode_hint(step, hub),
            step=step,
        )
    if isinstance(
        err,
        smtp_wire.Disconnected | ConnectionResetError | BrokenPipeError | ConnectionAbortedError,
    ):
        return TempFailError(f"{hub} closed the connection {during}", step=step)
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError
        return TempFailError(f"{hub} timed out {during}", step=step)
    if isinstance(err, _socket.gaierror):  # socket.gaierror is this class
        return TempFailError(f"cannot resolve {hub.host}: {err.strerror}", step=step)
    if isinstance(err, OSError):
        reason = err.strerror or str(err)
        if step == replies.CONNECT:
            return TempFailError(f"cannot connect to {hub}: {reason}", step=step)
        return TempFailError(f"cannot talk to {hub} {during}: {reason}", step=step)
    return RelayError(f"internal error {during}: {type(err).__name__}: {err}", step=step)


def _tls_mode_hint(step: str, hub: Mailhub) -> str:
    """What a TLS protocol failure on first contact almost always is: a TLS mode that does
    not match the port (implicit TLS against a STARTTLS port, or the reverse)."""
    if step == replies.CONNECT:
        # The handshake was the first thing said: the port speaks plain SMTP (STARTTLS).
        return (
            f"; this is almost certainly a configuration error: UseTLS=yes (implicit TLS) "
            f"is set but port {hub.port} of {hub.host} does not speak TLS first; for a "
            "STARTTLS port (587, 25) set UseSTARTTLS=yes, or use the implicit TLS port (465)"
        )
    if step == replies.STARTTLS:
        return (
            f"; this is almost certainly a configuration error: UseSTARTTLS=yes is set but "
            f"port {hub.port} of {hub.host} did not complete a STARTTLS handshake; check "
            "UseSTARTTLS and UseTLS against the port (465 is implicit TLS: UseTLS=yes, "
            "UseSTARTTLS=no)"
        )
    return ""


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
