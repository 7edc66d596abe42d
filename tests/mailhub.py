"""Real SMTP servers on the loopback interface, for tests of every layer.

`MailHub` wraps aiosmtpd's threaded `Controller` with a recording handler, TLS (STARTTLS
per RFC 3207 or implicit TLS per RFC 8314, certificates from trustme), AUTH (RFC 4954:
aiosmtpd's PLAIN and LOGIN plus the CRAM-MD5 of RFC 2195, which aiosmtpd lacks) and fault
injection at each SMTP step. `RawRecorder` is a minimal socket server that keeps the exact
bytes a client sent, because aiosmtpd un-dot-stuffs (RFC 5321 4.5.2) and splits lines
before a test could look at them. Both listen on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import functools
import hmac
import logging
import mailbox
import secrets
import socket
import socketserver
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import (
    DATA_SIZE_DEFAULT,
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
    syntax,
)

__all__ = [
    "ALL_MECHANISMS",
    "DEFAULT_USERS",
    "FAULT_STEPS",
    "LOOPBACK",
    "OAUTH_MECHANISMS",
    "PASSWORD_MECHANISMS",
    "SERVER_NAME",
    "AuthAttempt",
    "MailHub",
    "MailHubFactory",
    "RawRecorder",
    "RawRecorderFactory",
    "Received",
    "Reply",
    "TLSMode",
    "closed_port",
    "free_port",
]

LOOPBACK = "127.0.0.1"
# A fixed name: aiosmtpd would otherwise call socket.getfqdn(), which may ask a DNS server.
SERVER_NAME = "mailhub.test"
DEFAULT_USERS: Mapping[str, str] = {"alice": "s3cret #=pass word"}
PASSWORD_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
# Token mechanisms (Google's XOAUTH2, RFC 7628 OAUTHBEARER): `users` maps user -> token.
OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
ALL_MECHANISMS = PASSWORD_MECHANISMS + OAUTH_MECHANISMS
# Steps a fault can answer: "CONNECT" is the greeting, "EOD" the reply after <CRLF>.<CRLF>.
FAULT_STEPS = frozenset(
    {"CONNECT", "EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "EOD"}
)
_HANG_UP_STEPS = (FAULT_STEPS - {"CONNECT"}) | {"RSET", "NOOP", "QUIT"}

TLSMode = Literal["none", "starttls", "implicit"]
Reply = tuple[int, str]

log = logging.getLogger(__name__)


def free_port() -> int:
    """A loopback port free right now (the kernel's pick), for servers that need a number."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port where a connection is refused: the "mailhub is down" case."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex((LOOPBACK, port)) != 0:
                return port


def read_mbox(path: Path) -> list[mailbox.mboxMessage]:
    """The messages of the mbox at `path`, oldest first; [] when there is no such file."""
    if not path.exists():
        return []
    box = mailbox.mbox(str(path), create=False)
    try:
        return list(box)
    finally:
        box.close()


def dead_letters(home: Path) -> list[mailbox.mboxMessage]:
    """What was kept in `home`/dead.letter instead of being delivered (the tests' $HOME
    and dead.letter directory is their tmp_path)."""
    return read_mbox(home / "dead.letter")


def _reply(reply: Reply) -> str:
    return f"{reply[0]} {reply[1]}"


@dataclass(frozen=True)
class AuthAttempt:
    """One AUTH exchange whose credentials reached the check."""

    mechanism: str
    user: str
    success: bool


@dataclass(frozen=True)
class Received:
    """A message the hub accepted (250 after end of data), as it crossed the wire."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]
    rcpt_options: list[str]
    tls: bool
    auth_user: str | None
    helo: str | None = None
    #: The client certificate's subject commonName, when one was presented.
    client_cert: str | None = None

    def message(self) -> EmailMessage:
        """The data parsed with the modern policy, for header and body assertions."""
        return email.message_from_bytes(self.data, policy=email.policy.default)


class _QuietSession(Session):
    """A Session whose login_data is a plain attribute.

    aiosmtpd sets the deprecated `login_data` on every successful AUTH, and its property
    logs a deprecation warning each time: noise in every failing test's log.
    """

    login_data: Any = None


class _HubSMTP(SMTP):
    """aiosmtpd's SMTP with the connection-level behaviour no handler hook can reach."""

    def __init__(self, hub: MailHub, handler: _Handler, **kwargs: Any) -> None:
        self.hub = hub
        super().__init__(handler, **kwargs)
        # Every command goes through this table, so wrapping it records and can drop
        # each one without re-implementing aiosmtpd's command loop.
        for verb, method in list(self._smtp_methods.items()):
            self._smtp_methods[verb] = self._dispatcher(verb, method)

    def _dispatcher(
        self, verb: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        @functools.wraps(method)  # keeps aiosmtpd's @syntax data, which HELP reads
        async def dispatch(arg: str | None) -> None:
            self.hub._record_command(verb, arg)
            if self.hub.disconnect_after == verb:
                await self.hang_up()
            await method(arg)

        return dispatch

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    async def hang_up(self) -> None:
        """Drop the connection with no reply, like a crashed server, and never return.

        `connection_lost` cancels the session task, which is the one awaiting here, so no
        caller can push a reply afterwards.
        """
        assert isinstance(self.transport, asyncio.Transport)
        self.transport.abort()
        await asyncio.Event().wait()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgraded = self._original_transport is not None  # STARTTLS calls this again
        super().connection_made(transport)
        if not upgraded:
            self.hub._connection_opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.hub._connection_closed(self)

    async def _handle_client(self) -> None:
        # The greeting is sent inside aiosmtpd's command loop, so a refused greeting
        # (RFC 5321 3.1: 554, or 421 "service not available") has to replace the loop.
        fault = self.hub.faults.get("CONNECT")
        if fault is None:
            await super()._handle_client()
            return
        await self.push(_reply(fault))
        assert self.transport is not None
        self.transport.close()

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        fault = self.hub.faults.get("STARTTLS")
        if fault is not None:
            await self.push(_reply(fault))
            return
        await super().smtp_STARTTLS(arg)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if not self.hub.auth:
            await self.push("502 5.5.1 AUTH not available")
            return
        fault = self.hub.faults.get("AUTH")
        if fault is not None:
            await self.push(_reply(fault))
            return
        await super().smtp_AUTH(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # The 354 is sent before any handler hook runs, so faults at this step live here.
        assert self.envelope is not None
        if not self.envelope.rcpt_tos or arg:
            await super().smtp_DATA(arg)
            return
        fault = self.hub.faults.get("DATA")
        if fault is not None:
            await self.push(_reply(fault))
            return
        if self.hub.disconnect_in_data:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readuntil(b"\r\n")
            await self.hang_up()
        await super().smtp_DATA(arg)

    async def auth_CRAM__MD5(self, _: SMTP, args: list[str]) -> AuthResult:
        """RFC 2195: the client answers "user hex(HMAC-MD5(password, challenge))"."""
        if len(args) > 1:
            await self.push("501 5.5.2 CRAM-MD5 takes no initial response")
            return AuthResult(success=False, handled=True)
        challenge = f"<{secrets.token_hex(8)}@{self.hostname}>".encode()
        response = await self.challenge_auth(challenge)
        if response is MISSING:  # challenge_auth has already replied 501
            return AuthResult(success=False, handled=True)
        assert isinstance(response, bytes)
        user_bytes, _sep, digest = response.rpartition(b" ")
        user = user_bytes.decode("utf-8", "replace")
        password = self.hub.users.get(user)
        expected = b""
        if password is not None:
            expected = hmac.new(password.encode(), challenge, "md5").hexdigest().encode()
        ok = password is not None and hmac.compare_digest(expected, digest.lower())
        return self.hub._auth_result("CRAM-MD5", user, ok)

    async def _oauth(self, mechanism: str, args: list[str]) -> AuthResult:
        """XOAUTH2 / OAUTHBEARER: check `auth=Bearer TOKEN` against the user's token.

        On failure the server sends a 334 with a JSON error and waits for the client's
        (empty) answer before 535, as Gmail does.
        """
        if len(args) > 1:
            try:
                response: object = base64.b64decode(args[1], validate=True)
            except ValueError:
                response = b""
        else:
            response = await self.challenge_auth(b"")
            if response is MISSING:
                return AuthResult(success=False, handled=True)
        assert isinstance(response, bytes)
        fields = dict(
            item.split("=", 1)
            for item in response.decode("utf-8", "replace").split("\x01")
            if "=" in item
        )
        if mechanism == "OAUTHBEARER":
            gs2 = response.split(b"\x01", 1)[0].decode("utf-8", "replace")
            user = next((p[2:] for p in gs2.split(",") if p.startswith("a=")), "")
        else:
            user = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        ok = bool(token) and self.hub.users.get(user) == token
        if not ok:
            error = base64.b64encode(b'{"status":"401","schemes":"bearer"}')
            await self.challenge_auth(error, encode_to_b64=False)
        return self.hub._auth_result(mechanism, user, ok)

    async def auth_XOAUTH2(self, _: SMTP, args: list[str]) -> AuthResult:
        return await self._oauth("XOAUTH2", args)

    async def auth_OAUTHBEARER(self, _: SMTP, args: list[str]) -> AuthResult:
        return await self._oauth("OAUTHBEARER", args)


def _client_name(ssl_object: Any) -> str | None:
    """commonName of the certificate the client presented, if any."""
    if ssl_object is None:
        return None
    peer = ssl_object.getpeercert()
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return "(no commonName)"


class _Handler:
    """The aiosmtpd handler: every fault a hook can express is applied here."""

    def __init__(self, hub: MailHub) -> None:
        self.hub = hub

    async def handle_exception(self, error: Exception) -> str:
        # A client refusing our certificate is what TLS tests provoke: aiosmtpd then drops
        # the connection (this reply is never sent), and its default traceback is noise.
        if isinstance(error, TLSSetupException):
            log.info("MailHub: TLS handshake failed: %s", error.__cause__)
            return "454 4.7.0 TLS handshake failed"
        log.error("MailHub: session error", exc_info=error)
        return f"500 5.0.0 Error: ({type(error).__name__}) {error}"

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        fault = self.hub.faults.get("EHLO")
        if fault is not None:
            return [_reply(fault)]
        session.host_name = hostname  # aiosmtpd leaves this to a 5-argument hook
        dropped = set()
        if not self.hub.auth:
            dropped.add("AUTH")
        if not self.hub.eightbitmime:
            dropped.add("8BITMIME")
        # The last line is always "250 HELP", so dropping others keeps the "250-" chain.
        return [line for line in responses if line[4:].split(" ")[0].upper() not in dropped]

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> object:
        fault = self.hub.faults.get("HELO")
        return MISSING if fault is None else _reply(fault)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # Enforced here rather than with aiosmtpd's auth_required, which warns (an error
        # under filterwarnings=error) when combined with auth_require_tls=False.
        if self.hub.auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if not self.hub.eightbitmime and "BODY=8BITMIME" in mail_options:
            return "555 5.5.4 BODY=8BITMIME not supported"
        fault = self.hub.faults.get("MAIL")
        if fault is not None:
            return _reply(fault)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        fault = self.hub.rcpt_faults.get(address) or self.hub.faults.get("RCPT")
        if fault is not None:
            return _reply(fault)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self.hub.faults.get("EOD")
        if fault is not None:
            return _reply(fault)
        if self.hub.disconnect_after == "EOD":
            await cast(_HubSMTP, server).hang_up()
        assert server.transport is not None
        content = envelope.original_content
        if content is None:
            content = cast(bytes, envelope.content)
        self.hub._record_message(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=content,
                mail_options=list(envelope.mail_options),
                rcpt_options=list(envelope.rcpt_options),
                tls=server.transport.get_extra_info("ssl_object") is not None,
                auth_user=session.auth_data if session.authenticated else None,
                helo=session.host_name,
                client_cert=_client_name(server.transport.get_extra_info("ssl_object")),
            )
        )
        return "250 OK"


class _HubController(Controller):
    """Controller listening on a socket bound before start, so no port can be taken."""

    def __init__(self, hub: MailHub, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(_Handler(hub), hostname=LOOPBACK, port=sock.getsockname()[1], **kwargs)
        self.hub = hub
        self.sock = sock

    def factory(self) -> SMTP:
        # An explicit loop: without it aiosmtpd calls warnings.catch_warnings() from this
        # thread to probe get_event_loop(), racing pytest's own warning filters.
        return _HubSMTP(self.hub, self.handler, loop=self.loop, **self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self.sock, ssl=self.ssl_context)


class MailHub:
    """A real SMTP server on 127.0.0.1 that records what it accepts and fails on request.

    faults maps a step of FAULT_STEPS to the reply given there instead of the normal one;
    rcpt_faults does the same per recipient address. disconnect_after drops the connection
    without a reply when that command (or "EOD") arrives; disconnect_in_data drops it after
    the first line of message data.
    """

    def __init__(
        self,
        *,
        tls: TLSMode = "none",
        cert: trustme.LeafCert | None = None,
        offer_starttls: bool = True,
        auth: bool = False,
        users: Mapping[str, str] | None = None,
        mechanisms: Iterable[str] = PASSWORD_MECHANISMS,
        auth_require_tls: bool = True,
        faults: Mapping[str, Reply] | None = None,
        rcpt_faults: Mapping[str, Reply] | None = None,
        disconnect_in_data: bool = False,
        disconnect_after: str | None = None,
        smtputf8: bool = True,
        eightbitmime: bool = True,
        size_limit: int | None = DATA_SIZE_DEFAULT,
        client_ca: trustme.CA | None = None,
    ) -> None:
        mechanisms = tuple(m.upper() for m in mechanisms)
        faults = dict(faults or {})
        unknown = (set(faults) - FAULT_STEPS) | (set(mechanisms) - set(ALL_MECHANISMS))
        if disconnect_after is not None and disconnect_after not in _HANG_UP_STEPS:
            unknown.add(disconnect_after)
        if unknown:
            raise ValueError(f"MailHub: unknown step or mechanism {sorted(unknown)}")
        if tls != "none" and cert is None:
            raise ValueError(f"MailHub: tls={tls!r} needs cert=")
        self.host = LOOPBACK
        self.port = 0
        self.tls = tls
        self.auth = auth
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.faults: dict[str, Reply] = faults
        self.rcpt_faults: dict[str, Reply] = dict(rcpt_faults or {})
        self.disconnect_in_data = disconnect_in_data
        self.disconnect_after = disconnect_after
        self.eightbitmime = eightbitmime

        context = None
        if cert is not None and tls != "none":
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
            if client_ca is not None:  # demand a client certificate from this CA
                context.verify_mode = ssl.CERT_REQUIRED
                client_ca.configure_trust(context)
        self._implicit_context = context if tls == "implicit" else None
        self._smtp_kwargs: dict[str, Any] = {
            "server_hostname": SERVER_NAME,
            "enable_SMTPUTF8": smtputf8,
            "data_size_limit": size_limit,
            "auth_require_tls": auth_require_tls,
            "auth_exclude_mechanism": [m for m in ALL_MECHANISMS if m not in mechanisms],
            "authenticator": self._authenticate,
        }
        if tls == "starttls" and offer_starttls:
            self._smtp_kwargs["tls_context"] = context

        self._controller: _HubController | None = None
        self._cond = threading.Condition()
        self._messages: list[Received] = []
        self._commands: list[str] = []
        self._commands_unredacted: list[str] = []
        self._auth_attempts: list[AuthAttempt] = []
        self._connections = 0
        self._trigger_pending = False
        self._first_connection = threading.Event()
        self._live: set[_HubSMTP] = set()  # touched only on the server's event loop

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> Self:
        """Listen and serve in a thread; returns once the server answers."""
        if self._controller is not None:
            raise RuntimeError("MailHub already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((LOOPBACK, 0))
            controller = _HubController(
                self, sock, ssl_context=self._implicit_context, **self._smtp_kwargs
            )
        except BaseException:
            sock.close()
            raise
        self.port = controller.port
        # Controller.start() opens one connection itself to prove the server is up:
        # that one is not a client's and must not be counted.
        self._trigger_pending = True
        self._first_connection.clear()
        try:
            controller.start()
        except BaseException:
            controller.stop(no_assert=True)  # joins the thread if it is still serving
            if not controller.loop.is_closed():
                controller.loop.close()
            sock.close()
            raise
        self._controller = controller
        self._first_connection.wait(5)
        return self

    def stop(self) -> None:
        """Drop any open session, then stop the loop: nothing is left to warn at exit."""
        controller, self._controller = self._controller, None
        if controller is None:
            return
        closing = asyncio.run_coroutine_threadsafe(self._drop_sessions(), controller.loop)
        closing.result(timeout=10)
        controller.stop()

    async def _drop_sessions(self) -> None:
        for session in list(self._live):
            if isinstance(session.transport, asyncio.Transport):
                session.transport.abort()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=5)
        for _ in range(100):  # connection_lost runs a few loop turns after abort()
            if not self._live:
                break
            await asyncio.sleep(0.01)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests read --------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def messages(self) -> list[Received]:
        """Accepted messages, oldest first (a copy)."""
        with self._cond:
            return list(self._messages)

    @property
    def commands(self) -> list[str]:
        """Each command as "VERB args" (verb upper-cased), AUTH initial responses as ***."""
        with self._cond:
            return list(self._commands)

    @property
    def commands_unredacted(self) -> list[str]:
        """As `commands` but with AUTH arguments as sent: for tests that a client redacts."""
        with self._cond:
            return list(self._commands_unredacted)

    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        with self._cond:
            return list(self._auth_attempts)

    @property
    def connections(self) -> int:
        """TCP sessions accepted from clients."""
        with self._cond:
            return self._connections

    def wait_for(self, n: int, timeout: float = 5) -> list[Received]:
        """Block until at least n messages were accepted; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= n, timeout):
                raise TimeoutError(f"MailHub: {len(self._messages)} of {n} messages arrived")
            return list(self._messages)

    # -- called from the server thread ------------------------------------------------

    def _connection_opened(self, session: _HubSMTP) -> None:
        self._live.add(session)
        with self._cond:
            if self._trigger_pending:
                self._trigger_pending = False
            else:
                self._connections += 1
        self._first_connection.set()

    def _connection_closed(self, session: _HubSMTP) -> None:
        self._live.discard(session)

    def _record_command(self, verb: str, arg: str | None) -> None:
        line = verb if arg is None else f"{verb} {arg}"
        redacted = line
        if verb == "AUTH" and arg is not None and len(arg.split()) > 1:
            redacted = f"AUTH {arg.split()[0]} ***"
        with self._cond:
            self._commands.append(redacted)
            self._commands_unredacted.append(line)

    def _record_message(self, received: Received) -> None:
        with self._cond:
            self._messages.append(received)
            self._cond.notify_all()

    def _auth_result(self, mechanism: str, user: str, ok: bool) -> AuthResult:
        with self._cond:
            self._auth_attempts.append(AuthAttempt(mechanism, user, ok))
        # handled=False lets aiosmtpd send its standard 235 or 535 reply.
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        """aiosmtpd's authenticator callback, used by its PLAIN and LOGIN mechanisms."""
        assert isinstance(auth_data, LoginPassword)
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        return self._auth_result(mechanism, user, self.users.get(user) == password)


class _RawSession(socketserver.StreamRequestHandler):
    """One client session: just enough SMTP to get a message, every byte kept."""

    timeout = 10
    server: _RawServer

    def handle(self) -> None:
        recorder = self.server.recorder
        index = recorder._open_session(self.request)
        try:
            self._converse(recorder, index)
        finally:
            recorder._close_session(self.request)

    def _converse(self, recorder: RawRecorder, index: int) -> None:
        self._send(f"220 {SERVER_NAME} raw recorder")
        while line := self.rfile.readline():
            recorder._record(index, line)
            words = line.split(maxsplit=1)
            verb = words[0].upper().decode("ascii", "replace") if words else ""
            if verb == "EHLO":
                lines = [SERVER_NAME, *recorder.capabilities]
                for number, text in enumerate(lines, 1):
                    self._send(f"250{' ' if number == len(lines) else '-'}{text}")
            elif verb == "DATA":
                self._send("354 End data with <CR><LF>.<CR><LF>")
                if not self._read_data(recorder, index):
                    return
                self._send("250 OK")
            elif verb == "QUIT":
                self._send("221 Bye")
                return
            elif verb in {"HELO", "MAIL", "RCPT", "RSET", "NOOP"}:
                self._send("250 OK")
            else:
                self._send("502 5.5.2 Not implemented")

    def _read_data(self, recorder: RawRecorder, index: int) -> bool:
        # Only the exact <CRLF>.<CRLF> ends the data (RFC 5321 4.1.1.4): a bare LF before
        # the dot must not, or smuggling tests would see a false end.
        data = bytearray()
        while not (data == b".\r\n" or data.endswith(b"\r\n.\r\n")):
            chunk = self.rfile.readline()
            if not chunk:
                return False
            recorder._record(index, chunk)
            data += chunk
        recorder._record_data(bytes(data[:-3]))
        return True

    def _send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")


class _RawServer(socketserver.ThreadingTCPServer):
    daemon_threads = False  # server_close() joins the session threads

    def __init__(self, recorder: RawRecorder) -> None:
        self.recorder = recorder
        super().__init__((LOOPBACK, 0), _RawSession)


class RawRecorder:
    """A threaded socket SMTP server that records the bytes on the wire exactly.

    `raw` holds everything each session sent; `data` holds each message's DATA bytes as
    sent (still dot-stuffed), without the final ".<CRLF>".
    """

    def __init__(self, *, capabilities: Sequence[str] = ("PIPELINING", "8BITMIME")) -> None:
        self.capabilities = list(capabilities)
        self.host = LOOPBACK
        self.port = 0
        self._lock = threading.Lock()
        self._raw: list[bytearray] = []
        self._data: list[bytes] = []
        self._sockets: set[socket.socket] = set()
        self._server: _RawServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("RawRecorder already started")
        self._server = _RawServer(self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            for sock in self._sockets:  # wake sessions blocked in readline()
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        assert self._thread is not None
        self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def raw(self) -> list[bytes]:
        """Every byte each session sent, one entry per connection."""
        with self._lock:
            return [bytes(session) for session in self._raw]

    @property
    def data(self) -> list[bytes]:
        with self._lock:
            return list(self._data)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._raw)

    def _open_session(self, sock: socket.socket) -> int:
        with self._lock:
            self._sockets.add(sock)
            self._raw.append(bytearray())
            return len(self._raw) - 1

    def _close_session(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _record(self, index: int, chunk: bytes) -> None:
        with self._lock:
            self._raw[index] += chunk

    def _record_data(self, data: bytes) -> None:
        with self._lock:
            self._data.append(data)


# The shapes of the conftest fixtures `mailhub` and `raw_recorder`, for annotations.
MailHubFactory = Callable[..., MailHub]
RawRecorderFactory = Callable[..., RawRecorder]
