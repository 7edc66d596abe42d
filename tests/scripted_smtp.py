"""A raw-socket SMTP server that answers from a script: the failures aiosmtpd cannot make.

`ScriptedSMTP(replies={"RCPT": "421 4.3.2 shutting down"})` answers every RCPT with a
421 and then closes the connection, as a server going down does (RFC 5321 3.8);
`ScriptedSMTP(replies={"EOD": HANG_UP})` reads the whole message up to the final dot and
closes the connection without a reply (a server crashing after it may have kept the
message); `ScriptedSMTP(replies={"GREETING": STALL})` accepts the connection and says
nothing until `stop` (a server that hangs), setting `stalled` when it gets there. Any
other verb gets 250 (354 for DATA). Each connection is served by its own thread; `stop`
closes them all.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from tests.mailhub import LOOPBACK

#: As a reply: close the connection without answering.
HANG_UP = ""
#: As a reply: answer nothing and keep the connection open until `stop`.
STALL = "\0stall"


class ScriptedSMTP:
    def __init__(
        self,
        *,
        replies: Mapping[str, str] | None = None,
        capabilities: Sequence[str] = ("PIPELINING", "8BITMIME"),
    ) -> None:
        self.replies = dict(replies or {})
        self.capabilities = list(capabilities)
        self.host = LOOPBACK
        self.port = 0
        self._lock = threading.Lock()
        self._commands: list[str] = []
        self._messages: list[bytes] = []
        self._connections = 0
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        #: Set when a connection reached a STALL reply.
        self.stalled = threading.Event()
        self._stopping = threading.Event()

    # -- what happened ------------------------------------------------------------------

    @property
    def commands(self) -> list[str]:
        """Every command line received, in order, over all connections."""
        with self._lock:
            return list(self._commands)

    @property
    def messages(self) -> list[bytes]:
        """The data of each message read up to its final dot (dot-stuffed, no final dot)."""
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    # -- serving ------------------------------------------------------------------------

    def start(self) -> Self:
        listener = socket.create_server((self.host, 0))
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        thread = threading.Thread(target=self._accept, daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept(self) -> None:
        while (listener := self._listener) is not None:
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._connections += 1
                self._open.add(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        try:
            with sock, sock.makefile("rb") as rfile:
                self._converse(sock, rfile)
                # Half-close, then drain what the client still sends (a pipelined DATA
                # after a 421): closing with unread input would send a reset, which may
                # destroy the last reply before the client reads it.
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(2)
                while rfile.read1(65536):
                    pass
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(sock)

    def _converse(self, sock: socket.socket, rfile: Any) -> None:
        if not self._answer(sock, self.replies.get("GREETING", "220 scripted.test ESMTP")):
            return
        while line := rfile.readline():
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            with self._lock:
                self._commands.append(command)
            verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "EHLO":
                lines = ["scripted.test", *self.capabilities]
                text = "".join(
                    f"250{' ' if n == len(lines) else '-'}{item}\r\n"
                    for n, item in enumerate(lines, 1)
                )
                sock.sendall(text.encode())
                continue
            if verb == "QUIT":
                self._answer(sock, self.replies.get("QUIT", "221 bye"))
                return
            if verb == "DATA":
                if not self._answer(sock, self.replies.get("DATA", "354 go ahead")):
                    return
                if not self.replies.get("DATA", "354").startswith("354"):
                    continue
                data = bytearray()
                while not (data == b".\r\n" or data.endswith(b"\r\n.\r\n")):
                    chunk = rfile.readline()
                    if not chunk:
                        return
                    data += chunk
                with self._lock:
                    self._messages.append(bytes(data[:-3]))
                if not self._answer(sock, self.replies.get("EOD", "250 2.0.0 queued")):
                    return
                continue
            if not self._answer(sock, self.replies.get(verb, "250 OK")):
                return

    def _answer(self, sock: socket.socket, reply: str) -> bool:
        """Send `reply`; False when the connection is to end here (HANG_UP, STALL once
        stopped, or a 421)."""
        if reply == HANG_UP:
            return False
        if reply == STALL:
            self.stalled.set()
            self._stopping.wait(60)
            return False
        sock.sendall(reply.encode() + b"\r\n")
        return not reply.startswith("421")
