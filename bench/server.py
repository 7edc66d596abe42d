"""The bench's loopback SMTP server: fast enough never to be what is measured.

One process, a thread per connection, plain blocking sockets; it listens on 127.0.0.1
only. Each listener has a mode:

- `plain`: EHLO offers PIPELINING, 8BITMIME, SIZE; no TLS, no AUTH;
- `quickack`: the same, with TCP_QUICKACK set after every read, so the kernel acknowledges
  each segment at once (msmtp's best case: no 40 ms delayed ACK under its last line);
- `tls`: STARTTLS (certificate from `--cert`/`--key`), then AUTH PLAIN and LOGIN (any
  password for user `bench`), as a submission server would;
- `quicktls`: `tls` with the immediate ACKs of `quickack`.

Replies to pipelined commands are batched into one write (RFC 2920); DATA is scanned for
the end marker without keeping the message (only its size is counted). Statistics
(connections, messages, bytes, and the server's own CPU time, to show it is not the
bottleneck) are printed as one JSON line whenever a line arrives on standard input; EOF
on standard input stops the server. The listening ports are the first line printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import resource
import socket
import ssl
import sys
import threading
import time

_END = b"\r\n.\r\n"
USER = "bench"


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.messages = 0
        self.bytes = 0
        self.recipients = 0
        self.errors = 0

    def snapshot(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with self.lock:
            return {
                "connections": self.connections,
                "messages": self.messages,
                "bytes": self.bytes,
                "recipients": self.recipients,
                "errors": self.errors,
                "cpu": usage.ru_utime + usage.ru_stime,
                "time": time.monotonic(),
            }


class Connection:
    def __init__(
        self, sock: socket.socket, mode: str, context: ssl.SSLContext | None, stats: Stats
    ) -> None:
        self.sock: socket.socket = sock
        self.mode = mode
        self.context = context
        self.stats = stats
        self.buf = bytearray()
        self.scratch = bytearray(1 << 20)  # data()'s read buffer, reused
        self.tls = False
        self.authed = False
        self.rcpts = 0
        self.quickack = mode in ("quickack", "quicktls")
        self.starttls = mode in ("tls", "quicktls")

    def recv(self) -> bool:
        chunk = self.sock.recv(1 << 20)
        if self.quickack:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def readline(self) -> bytes | None:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return line
            if not self.recv():
                return None

    def ehlo(self) -> bytes:
        lines = ["bench.test", "PIPELINING", "8BITMIME", "SIZE 1073741824", "ENHANCEDSTATUSCODES"]
        if self.starttls and not self.tls:
            lines.append("STARTTLS")
        if self.starttls and self.tls:
            lines.append("AUTH PLAIN LOGIN")
        out = [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]
        return ("\r\n".join(out) + "\r\n").encode()

    def serve(self) -> None:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(b"220 bench.test ESMTP bench\r\n")
        pending: list[bytes] = []
        while True:
            if not pending or b"\r\n" in self.buf:
                line = self.readline()
            else:
                # Nothing more buffered: answer what was pipelined so far in one write.
                self.sock.sendall(b"".join(pending))
                pending.clear()
                continue
            if line is None:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                pending.append(self.ehlo() if verb == b"EHLO" else b"250 bench.test\r\n")
            elif verb == b"MAIL":
                self.rcpts = 0
                pending.append(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                self.rcpts += 1
                pending.append(b"250 2.1.5 ok\r\n")
            elif verb == b"DATA":
                if not self.rcpts:
                    pending.append(b"503 5.5.1 no valid recipients\r\n")
                    continue
                pending.append(b"354 go ahead\r\n")
                self.sock.sendall(b"".join(pending))
                pending.clear()
                size = self.data()
                if size is None:
                    return
                with self.stats.lock:
                    self.stats.messages += 1
                    self.stats.bytes += size
                    self.stats.recipients += self.rcpts
                self.rcpts = 0
                pending.append(b"250 2.0.0 queued\r\n")
            elif verb == b"RSET":
                self.rcpts = 0
                pending.append(b"250 2.0.0 ok\r\n")
            elif verb == b"NOOP":
                pending.append(b"250 2.0.0 ok\r\n")
            elif verb == b"QUIT":
                pending.append(b"221 2.0.0 bye\r\n")
                self.sock.sendall(b"".join(pending))
                return
            elif line.upper() == b"STARTTLS" and self.starttls and not self.tls:
                pending.append(b"220 2.0.0 ready\r\n")
                self.sock.sendall(b"".join(pending))
                pending.clear()
                self.buf.clear()  # RFC 3207 4.2: nothing sent before TLS is kept
                assert self.context is not None
                self.sock = self.context.wrap_socket(self.sock, server_side=True)
                self.tls = True
            elif verb == b"AUTH" and self.tls:
                if not self.auth(line):
                    pending.append(b"535 5.7.8 bad credentials\r\n")
                else:
                    pending.append(b"235 2.7.0 ok\r\n")
            else:
                pending.append(b"502 5.5.2 not implemented\r\n")

    def challenge(self, text: bytes) -> bytes | None:
        self.sock.sendall(b"334 " + base64.b64encode(text) + b"\r\n")
        line = self.readline()
        return None if line is None else base64.b64decode(line)

    def auth(self, line: bytes) -> bool:
        parts = line.split()
        method = parts[1].upper() if len(parts) > 1 else b""
        if method == b"PLAIN":
            answer = base64.b64decode(parts[2]) if len(parts) > 2 else self.challenge(b"")
            if answer is None:
                return False
            user = answer.split(b"\0")[1]
        elif method == b"LOGIN":
            name = base64.b64decode(parts[2]) if len(parts) > 2 else self.challenge(b"Username:")
            if name is None or self.challenge(b"Password:") is None:
                return False
            user = name
        else:
            return False
        self.authed = user == USER.encode()
        return self.authed

    def data(self) -> int | None:
        """Consume DATA up to <CRLF>.<CRLF>; returns the octets read (None on EOF).

        Cheap per read whatever the client's write sizes (msmtp sends each line with
        its own send(): many small reads): one preallocated buffer filled by recv_into,
        the marker searched in what was just read, plus the last 4 octets before it
        (a marker split between two reads); nothing copied but those few octets.
        """
        size = 0
        # The marker may start with the CRLF that ended the 354's reply line: pretend it.
        tail = b"\r\n"
        chunk: bytes | bytearray = bytes(self.buf)
        length = len(chunk)
        self.buf.clear()
        while True:
            end = (tail + bytes(chunk[: min(length, 4)])).find(_END)
            if end >= 0:  # begins in the tail, ends in this read
                consumed = end + len(_END) - len(tail)
            else:
                end = chunk.find(_END, 0, length)
                consumed = end + len(_END) if end >= 0 else -1
            if consumed >= 0:
                size += consumed
                self.buf += chunk[consumed:length]  # pipelined commands after the data
                return size
            size += length
            tail = (tail + bytes(chunk[max(0, length - 4) : length]))[-4:]
            length = self.sock.recv_into(self.scratch)
            if self.quickack:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            if not length:
                return None
            chunk = self.scratch


def serve_port(
    listener: socket.socket, mode: str, context: ssl.SSLContext | None, stats: Stats
) -> None:
    while True:
        sock, _ = listener.accept()
        with stats.lock:
            stats.connections += 1

        def run(sock: socket.socket = sock) -> None:
            conn = Connection(sock, mode, context, stats)
            try:
                conn.serve()
            except (OSError, ValueError) as err:
                with stats.lock:
                    stats.errors += 1
                print(f"bench server: {mode}: {err}", file=sys.stderr)
            finally:
                conn.sock.close()

        threading.Thread(target=run, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--modes", default="plain,quickack,tls,quicktls")
    args = parser.parse_args()
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    stats = Stats()
    ports = {}
    for mode in args.modes.split(","):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        ports[mode] = listener.getsockname()[1]
        threading.Thread(
            target=serve_port, args=(listener, mode, context, stats), daemon=True
        ).start()
    print(json.dumps(ports), flush=True)
    for _line in sys.stdin:
        print(json.dumps(stats.snapshot()), flush=True)


if __name__ == "__main__":
    main()
