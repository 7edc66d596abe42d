"""The SMTP client protocol on a plain socket: replies, commands, TLS, AUTH, DATA.

What `smtplib` does for the relay, at a fraction of its start-up cost (smtplib imports
`ssl`, `hmac`, `email.utils`, `email.message` and `email.generator` at module level: about
half of a small message's whole run). `_socket` is the only import (see `connect_tcp`);
`socket` and `ssl` come when TLS is used, `base64` and `hmac` when AUTH is. Policy
(which TLS mode, which AUTH method, how a failure is classified) stays in `relay.smtp`;
this module only speaks the protocol.

- Replies (RFC 5321 4.2): multiline replies joined with LF, text stripped, lines of at
  most 8192 octets; a reply whose code is not three digits raises `MalformedReply`.
- Every reply is bounded, because a hostile or broken server must not be able to keep
  us reading: at most MAX_REPLY_LINES lines and MAX_REPLY_BYTES octets (else
  `MalformedReply`), and all of it within `timeout` seconds counted from the moment we
  start waiting for it (else `TimeoutError`). The socket timeout alone bounds only the
  gap between two packets, which a server dripping one line at a time never exceeds.
- A connection that ends, resets or times out is closed and `sock` set to None (as
  smtplib does): `Disconnected`, or the `TimeoutError`, names what happened.
- PIPELINING (RFC 2920): MAIL, every RCPT and DATA go in one write when the server
  offers it; replies are read back in order, and a DATA the server accepted although
  nothing else was is ended with an empty message.
- STARTTLS (RFC 3207): only a 220 upgrades the connection; whatever the server sent
  after that reply in clear text is discarded, and so is everything learnt from EHLO.
- AUTH (RFC 4954): PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), XOAUTH2 and OAUTHBEARER
  (RFC 7628); a 235 or 503 (already authenticated) is success, anything else `AuthFailed`.
- DATA (RFC 5321 4.5.2): dot-stuffed, ended with CRLF.CRLF, written in large buffers: one
  write for a small message, chunks of a streamed one, never a write per line.
"""

from __future__ import annotations

# `_socket`, the C module that `socket` wraps, not `socket` itself: importing `socket`
# converts every AF_, SOCK_, MSG_ constant into an IntEnum (it imports `enum`, `selectors`
# and more), about 10 ms of every `sendmail` on plain SMTP; the C module costs nothing.
# `connect_tcp` is `socket.create_connection` over it; `socket` is imported only to hand
# `ssl` the socket.socket that it wraps (`_for_tls`).
import _socket
import time

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Iterable, Sequence
    from typing import Protocol

    class Observer(Protocol):
        """The `-v` transcript: every line sent and every reply, as they happen."""

        def sent(self, data: bytes) -> None: ...

        def message(self, size: int) -> None: ...

        def received(self, code: int, message: bytes) -> None: ...


MAX_LINE = 8192
#: RFC 5321 sets no limit on the lines of a reply; real EHLO replies have about 15.
MAX_REPLY_LINES = 512
MAX_REPLY_BYTES = 256 * 1024
MAX_CHALLENGES = 5
CRLF = b"\r\n"


class Disconnected(ConnectionError):
    """The server closed the connection (or it broke) before a complete reply."""


class MalformedReply(Exception):
    """A reply line that is not `DDD text`, or longer than MAX_LINE."""


class ReplyError(Exception):
    """A reply the protocol step cannot go on from (STARTTLS refused, DATA refused)."""

    def __init__(self, code: int, message: bytes) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class AuthFailed(ReplyError):
    """AUTH ended with a reply other than 235 (or 503, already authenticated)."""


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2 for CRLF-normalised text: a dot opening a line is doubled."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def connect_tcp(host: str | bytes, port: int, timeout: float) -> _socket.socket:
    """`socket.create_connection((host, port), timeout)` over `_socket` (module doc): each
    address getaddrinfo gives, in order, until one connects; a failed socket is closed;
    the last failure is raised (`TimeoutError`, `ConnectionRefusedError`, ...), or the
    `_socket.gaierror` (socket.gaierror is the same class) when the name does not resolve."""
    failure: OSError | None = None
    for family, kind, proto, _name, address in _socket.getaddrinfo(
        host, port, 0, _socket.SOCK_STREAM
    ):
        sock = None
        try:
            sock = _socket.socket(family, kind, proto)
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as err:
            failure = err
            if sock is not None:
                sock.close()
    if failure is not None:
        raise failure
    raise OSError("getaddrinfo returns an empty list")


def _for_tls(sock: _socket.socket) -> socket.socket:
    """The same connection as a `socket.socket`, which `ssl` wraps (it detaches `sock`)."""
    import socket

    if isinstance(sock, socket.socket):
        return sock
    timeout = sock.gettimeout()
    full = socket.socket(sock.family, sock.type, sock.proto, sock.detach())
    full.settimeout(timeout)
    return full


class Client:
    """One SMTP connection. Methods return `(code, text)` replies; see the module doc."""

    def __init__(
        self, local_hostname: str, timeout: float, observer: Observer | None = None
    ) -> None:
        self.local_hostname = local_hostname
        self.timeout = timeout
        self.observer = observer
        #: A bare `_socket.socket` on plain SMTP, an `ssl.SSLSocket` once TLS is up.
        self.sock: _socket.socket | None = None
        self.esmtp_features: dict[str, str] = {}
        self.does_esmtp = False
        self._buf = bytearray()

    # -- transport --------------------------------------------------------------------

    def connect(
        self, host: str, port: int, context: ssl.SSLContext | None = None
    ) -> tuple[int, bytes]:
        """Connect (implicit TLS when `context` is given) and read the greeting."""
        # An ASCII name as bytes: a str would make getaddrinfo load the idna codec.
        address = host.encode("ascii") if host.isascii() else host
        sock = connect_tcp(address, port, self.timeout)
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            if context is not None:
                sock = context.wrap_socket(_for_tls(sock), server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        return self.reply()

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self._buf.clear()
        if sock is not None:
            sock.close()

    def write(self, data: bytes | memoryview) -> None:
        if self.sock is None:
            raise Disconnected("not connected")
        try:
            self.sock.settimeout(self.timeout)  # a reply may have left a shorter one
            self.sock.sendall(data)
        except OSError:
            self.close()
            raise

    def _fill(self, deadline: float) -> None:
        assert self.sock is not None
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError("the server did not complete its reply in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
        except OSError:
            self.close()
            raise
        if not chunk:
            self.close()
            raise Disconnected("connection closed by the server")
        self._buf += chunk

    def _line(self, deadline: float) -> bytes:
        if self.sock is None:
            raise Disconnected("not connected")
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end >= 0:
                break
            if len(self._buf) > MAX_LINE:
                self.close()
                raise MalformedReply("reply line too long")
            start = len(self._buf)
            self._fill(deadline)
        if end > MAX_LINE:
            self.close()
            raise MalformedReply("reply line too long")
        line = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        return line

    def reply(self) -> tuple[int, bytes]:
        """One reply, multiline ones joined with LF (smtplib's form)."""
        texts = []
        total = 0
        deadline = time.monotonic() + self.timeout
        while True:
            line = self._line(deadline)
            code_text = line[:3]
            if not (len(code_text) == 3 and code_text.isdigit()):
                self.close()
                raise MalformedReply(f"malformed reply line {line[:40]!r}")
            texts.append(line[4:].strip(b" \t\r\n"))
            total += len(line)
            if line[3:4] != b"-":
                break
            if len(texts) >= MAX_REPLY_LINES or total > MAX_REPLY_BYTES:
                self.close()
                raise MalformedReply(
                    f"reply too long (more than {len(texts)} lines or {MAX_REPLY_BYTES} octets)"
                )
        code, message = int(code_text), b"\n".join(texts)
        if self.observer is not None:
            self.observer.received(code, message)
        return code, message

    def send_lines(self, lines: Sequence[str]) -> None:
        """Commands, each shown to the observer, in one write (a pipelined group)."""
        data = "".join(line + "\r\n" for line in lines).encode("utf-8")
        if self.observer is not None:
            for line in lines:
                self.observer.sent(line.encode("utf-8") + CRLF)
        self.write(data)

    def command(self, line: str) -> tuple[int, bytes]:
        self.send_lines([line])
        return self.reply()

    # -- greeting and extensions --------------------------------------------------------

    def ehlo(self) -> tuple[int, bytes]:
        self.esmtp_features = {}
        code, message = self.command(f"EHLO {self.local_hostname}")
        self.does_esmtp = code == 250
        if code == 250:
            for line in message.decode("latin-1").split("\n")[1:]:
                name, _, params = line.strip().partition(" ")
                if name:
                    # "AUTH=LOGIN" is an old spelling of "AUTH LOGIN" (smtplib reads both).
                    name, equals, value = name.partition("=")
                    if equals and name.lower() == "auth":
                        params = f"{value} {params}".strip()
                    key = name.lower()
                    if key == "auth" and key in self.esmtp_features:
                        params = f"{self.esmtp_features[key]} {params}"
                    self.esmtp_features[key] = params
        return code, message

    def helo(self) -> tuple[int, bytes]:
        self.esmtp_features = {}
        self.does_esmtp = False
        return self.command(f"HELO {self.local_hostname}")

    def has_extn(self, name: str) -> bool:
        return name.lower() in self.esmtp_features

    def starttls(self, context: ssl.SSLContext, server_hostname: str) -> tuple[int, bytes]:
        code, message = self.command("STARTTLS")
        if code != 220:
            raise ReplyError(code, message)
        assert self.sock is not None
        # RFC 3207 4.2 (and CVE-2011-0411): nothing the server sent before TLS counts.
        self._buf.clear()
        self.sock = context.wrap_socket(_for_tls(self.sock), server_hostname=server_hostname)
        self.esmtp_features = {}
        self.does_esmtp = False
        return code, message

    # -- AUTH ---------------------------------------------------------------------------

    def auth(self, method: str, user: str, secret: str) -> tuple[int, bytes]:
        """Log in with `method`; returns the final reply or raises AuthFailed."""
        import base64

        method = method.upper()
        initial = _initial_response(method, user, secret)
        if initial is not None:
            code, message = self.command(f"AUTH {method} {_b64(initial)}")
            rounds = 1
        else:
            code, message = self.command(f"AUTH {method}")
            rounds = 0
        while code == 334:
            rounds += 1
            if rounds > MAX_CHALLENGES:
                raise AuthFailed(code, b"too many AUTH challenges: " + message)
            try:
                challenge = base64.b64decode(message, validate=False)
            except ValueError:
                challenge = b""
            answer = _answer(method, user, secret, challenge, rounds)
            code, message = self.command(_b64(answer))
        if code in (235, 503):
            return code, message
        raise AuthFailed(code, message)

    # -- a transaction ------------------------------------------------------------------

    def data(self, chunks: Iterable[bytes], observer_size: int) -> tuple[int, bytes]:
        """After a 354: `send_data`, then the final reply."""
        self.send_data(chunks, observer_size)
        return self.reply()

    def send_data(self, chunks: Iterable[bytes], observer_size: int) -> None:
        """After a 354: the message (CRLF-normalised chunks, each ending a line except
        possibly the last), dot-stuffed, then the end marker. Once this returns the
        server may hold the whole message: a failure reading its reply is not a failure
        to send."""
        if self.observer is not None:
            self.observer.message(observer_size)
        last = b"\r\n"
        pending: list[bytes] = []
        size = 0
        for chunk in chunks:
            if not chunk:
                continue
            # Chunks start at a line start (the previous one ended with CRLF).
            pending.append(dot_stuff(chunk))
            size += len(pending[-1])
            last = chunk[-2:]
            if size >= 1 << 18:
                self.write(b"".join(pending))
                pending.clear()
                size = 0
        pending.append(b".\r\n" if last == b"\r\n" else b"\r\n.\r\n")
        self.write(b"".join(pending))

    def end_empty_data(self) -> tuple[int, bytes]:
        """RFC 2920 3.1: DATA accepted although no recipient was: send an empty message."""
        self.write(b".\r\n")
        return self.reply()

    def rset(self) -> tuple[int, bytes]:
        return self.command("RSET")

    def quit(self) -> tuple[int, bytes]:
        try:
            return self.command("QUIT")
        finally:
            self.close()


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def _initial_response(method: str, user: str, secret: str) -> bytes | None:
    """What goes with `AUTH METHOD` (RFC 4954 initial response), or None to wait for 334."""
    if method == "PLAIN":
        return f"\0{user}\0{secret}".encode()
    if method == "XOAUTH2":
        return f"user={user}\x01auth=Bearer {secret}\x01\x01".encode()
    if method == "OAUTHBEARER":
        return f"n,a={user},\x01auth=Bearer {secret}\x01\x01".encode()
    if method in ("LOGIN", "CRAM-MD5"):
        return None
    raise ValueError(f"unsupported AUTH method {method}")


def _answer(method: str, user: str, secret: str, challenge: bytes, rounds: int) -> bytes:
    """The answer to the `rounds`-th 334 challenge."""
    if method == "LOGIN":
        # smtplib's rule: the first challenge asks for the name, every later one the password.
        return (user if rounds < 2 else secret).encode()
    if method == "CRAM-MD5":
        import hmac

        digest = hmac.new(secret.encode(), challenge, "md5").hexdigest()
        return f"{user} {digest}".encode()
    if method == "OAUTHBEARER":
        return b"\x01"  # RFC 7628 3.2.3: a 334 carries the error; the answer is ^A
    return b""  # XOAUTH2's error challenge, and PLAIN asked again: an empty answer
