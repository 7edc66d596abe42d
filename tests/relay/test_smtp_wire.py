"""relay.smtp_wire, the lean SMTP client, held to smtplib's behaviour and stricter.

A scripted server (a raw socket in a thread) plays the exact bytes each case needs:
multiline and continuation replies, malformed or cut replies, silence, pipelined groups,
plaintext injected after STARTTLS. Ordinary sessions, every AUTH method and the faults
of each step run against aiosmtpd (tests/mailhub.py) here and in test_delivery.py.
"""

from __future__ import annotations

import io
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from relay import config as config_module
from relay import message as message_module
from relay import smtp_wire
from relay.envelope import Identity
from relay.errors import RelayError
from relay.message import Spooled, parse, read_input, scan_body, to_wire, wire
from relay.smtp import Session, open_session
from relay.submission import submit
from tests.mailhub import LOOPBACK, MailHubFactory
from tests.relayconf import PASSWORD, write_config

ME = Identity("bob", 1000, "Bob Builder")
Script = Callable[["Peer"], None]


class Peer:
    """The server side of one scripted connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.buf = b""
        self.received: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        self.received.append(line)
        return line

    def lines_buffered(self, count: int) -> list[bytes]:
        """Wait until `count` lines have arrived without answering any (pipelining)."""
        while self.buf.count(b"\r\n") < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        return [self.line() for _ in range(count)]

    def data(self) -> bytes:
        while b"\r\n.\r\n" not in b"\r\n" + self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        text, self.buf = (b"\r\n" + self.buf).split(b"\r\n.\r\n", 1)
        return text[2:] + b"\r\n"

    def greet_and_ehlo(self, *features: bytes) -> None:
        self.send(b"220 scripted ESMTP\r\n")
        assert self.line().startswith(b"EHLO ")
        lines = [b"scripted", *features]
        self.send(
            b"".join(b"250-" + f + b"\r\n" for f in lines[:-1]) + b"250 " + lines[-1] + b"\r\n"
        )


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], tuple[int, Peer]]]:
    """Start a one-connection server running `script`; returns (port, peer)."""
    threads: list[threading.Thread] = []
    sockets: list[socket.socket] = []
    errors: list[BaseException] = []

    def start(script: Script) -> tuple[int, Peer]:
        listener = socket.socket()
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        sockets.append(listener)
        holder: dict[str, Peer] = {}
        ready = threading.Event()

        def run() -> None:
            conn, _ = listener.accept()
            peer = Peer(conn)
            holder["peer"] = peer
            ready.set()
            try:
                script(peer)
            except (EOFError, OSError):
                pass
            except BaseException as err:  # an assertion in the script
                errors.append(err)
            finally:
                peer.sock.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        port = listener.getsockname()[1]

        class LazyPeer(Peer):
            def __init__(self) -> None:
                pass

            def __getattribute__(self, name: str) -> Any:
                ready.wait(5)
                return getattr(holder["peer"], name)

        return port, LazyPeer()

    yield start
    for thread in threads:
        thread.join(5)
    for sock in sockets:
        sock.close()
    if errors:
        raise errors[0]


def session_for(tmp_path: Path, port: int, *lines: str, **keys: Any) -> Session:
    keys.setdefault("Timeout", 2)
    path = write_config(tmp_path, None, *lines, mailhub=f"{LOOPBACK}:{port}", **keys)
    return open_session(config_module.load(str(path)))


def client(port: int, timeout: float = 2) -> smtp_wire.Client:
    wired = smtp_wire.Client("client.test", timeout)
    wired.connect(LOOPBACK, port)
    return wired


# -- replies --------------------------------------------------------------------------------


def test_multiline_replies_and_continuations(scripted: Any) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"220-first line\r\n220-second\r\n220 last\r\n")
        peer.line()
        peer.send(b"250-scripted\r\n250-SIZE 1000\r\n250-AUTH=LOGIN\r\n250-AUTH PLAIN\r\n")
        peer.send(b"250 8BITMIME\r\n")

    port, _peer = scripted(script)
    wired = smtp_wire.Client("client.test", 2)
    assert wired.connect(LOOPBACK, port) == (220, b"first line\nsecond\nlast")
    code, text = wired.ehlo()
    assert code == 250
    assert text.split(b"\n")[0] == b"scripted"
    assert wired.esmtp_features == {"size": "1000", "auth": "LOGIN PLAIN", "8bitmime": ""}
    wired.close()


@pytest.mark.parametrize("garbage", [b"hello there\r\n", b"25 short\r\n", b"2x0 bad\r\n"])
def test_malformed_reply_is_a_protocol_error(scripted: Any, tmp_path: Path, garbage: bytes) -> None:
    port, _ = scripted(lambda peer: peer.send(garbage))
    with pytest.raises(RelayError) as caught:
        session_for(tmp_path, port)
    assert caught.value.exit_code == os.EX_PROTOCOL
    assert "malformed reply" in str(caught.value)


def test_overlong_reply_line_is_refused(scripted: Any) -> None:
    port, _ = scripted(lambda peer: peer.send(b"220 " + b"x" * 10000 + b"\r\n"))
    with pytest.raises(smtp_wire.MalformedReply):
        client(port)


def test_server_closing_mid_reply_is_temporary(scripted: Any, tmp_path: Path) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"220 hi\r\n")
        peer.line()
        peer.send(b"250-scripted\r\n250-PIPE")  # and hangs up mid-line

    port, _ = scripted(script)
    with pytest.raises(RelayError) as caught:
        session_for(tmp_path, port)
    assert caught.value.exit_code == os.EX_TEMPFAIL
    assert "closed the connection during EHLO" in str(caught.value)


def test_silent_server_times_out(scripted: Any, tmp_path: Path) -> None:
    done = threading.Event()
    port, _ = scripted(lambda peer: done.wait(5))
    try:
        with pytest.raises(RelayError) as caught:
            session_for(tmp_path, port, Timeout=0.3)
    finally:
        done.set()
    assert caught.value.exit_code == os.EX_TEMPFAIL
    assert "timed out" in str(caught.value)


def _endless_ehlo(peer: Peer, pause: float, stop: threading.Event) -> None:
    """Greet, then answer EHLO with continuation lines forever (until the client leaves)."""
    peer.send(b"220 hi\r\n")
    peer.line()
    while not stop.is_set():
        peer.send(b"250-" + b"x" * 70 + b"\r\n")
        if pause:
            stop.wait(pause)


def test_an_endless_reply_is_cut_off_by_its_size(scripted: Any, tmp_path: Path) -> None:
    stop = threading.Event()
    port, _ = scripted(lambda peer: _endless_ehlo(peer, 0, stop))
    try:
        with pytest.raises(RelayError) as caught:
            session_for(tmp_path, port, Timeout=30)
    finally:
        stop.set()
    assert caught.value.exit_code == os.EX_PROTOCOL
    assert "reply too long" in str(caught.value)


def test_a_reply_dripping_slowly_is_bounded_by_the_timeout(scripted: Any, tmp_path: Path) -> None:
    """Each line comes well within the timeout, the whole reply never does."""
    import time

    stop = threading.Event()
    port, _ = scripted(lambda peer: _endless_ehlo(peer, 0.05, stop))
    started = time.monotonic()
    try:
        with pytest.raises(RelayError) as caught:
            session_for(tmp_path, port, Timeout=0.5)
    finally:
        stop.set()
    assert time.monotonic() - started < 5
    assert caught.value.exit_code == os.EX_TEMPFAIL
    assert "timed out" in str(caught.value)


def test_a_spent_reply_deadline_does_not_shorten_the_next_write(scripted: Any) -> None:
    """A reply leaves the socket timeout at what was left of its deadline; a big write
    that has to wait for the server to read must get the whole timeout again."""
    import time

    big = b"x" * (8 << 20)

    def script(peer: Peer) -> None:
        peer.greet_and_ehlo(b"HELP")
        time.sleep(0.5)  # not reading: the client's write blocks until we do
        got = 0
        while got < len(big):
            chunk = peer.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            got += len(chunk)

    port, _ = scripted(script)
    wired = client(port, timeout=5)
    assert wired.ehlo()[0] == 250
    assert wired.sock is not None
    wired.sock.settimeout(0.01)  # as a nearly spent reply deadline leaves it
    wired.write(big)
    wired.close()


# -- pipelining (RFC 2920) ------------------------------------------------------------------


def test_envelope_and_data_go_in_one_group(scripted: Any, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def script(peer: Peer) -> None:
        peer.greet_and_ehlo(b"PIPELINING", b"SIZE 100000")
        # Nothing is answered before all four commands are here: a client waiting for
        # the MAIL reply would time out.
        seen["group"] = peer.lines_buffered(4)
        peer.send(b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n")
        seen["data"] = peer.data()
        peer.send(b"250 2.0.0 queued\r\n")
        assert peer.line() == b"QUIT"
        peer.send(b"221 bye\r\n")

    port, _ = scripted(script)
    session = session_for(tmp_path, port)
    data = to_wire(parse(b"Subject: x\n\n.dot\nline\n"))
    outcome = session.send("a@example.org", ["b@example.com", "c@example.com"], data)
    session.close()
    assert seen["group"] == [
        b"MAIL FROM:<a@example.org> SIZE=%d" % len(data),
        b"RCPT TO:<b@example.com>",
        b"RCPT TO:<c@example.com>",
        b"DATA",
    ]
    assert seen["data"] == b"Subject: x\r\n\r\n..dot\r\nline\r\n"
    assert outcome.accepted == ["b@example.com"]
    assert outcome.refused == {"c@example.com": (550, "550 5.1.1 no")}


@pytest.mark.parametrize(
    ("replies", "code", "words"),
    [
        (b"550 5.7.1 not you\r\n503 no\r\n503 no\r\n", os.EX_UNAVAILABLE, "MAIL FROM"),
        (b"451 4.3.0 later\r\n503 no\r\n503 no\r\n", os.EX_TEMPFAIL, "MAIL FROM"),
        (b"250 ok\r\n550 5.1.1 unknown\r\n554 no valid recipients\r\n", os.EX_NOUSER, "RCPT TO"),
        (b"250 ok\r\n250 ok\r\n451 4.3.0 no data now\r\n", os.EX_TEMPFAIL, "DATA"),
        # A server that takes DATA although it refused every recipient gets an empty
        # message, never the real one (RFC 2920 3.1).
        (b"250 ok\r\n550 5.1.1 unknown\r\n354 go\r\n", os.EX_NOUSER, "RCPT TO"),
    ],
)
def test_a_refusal_in_the_group_names_its_step_and_resets(
    scripted: Any, tmp_path: Path, replies: bytes, code: int, words: str
) -> None:
    seen: dict[str, Any] = {}

    def script(peer: Peer) -> None:
        peer.greet_and_ehlo(b"PIPELINING")
        peer.lines_buffered(3)
        peer.send(replies)
        if replies.endswith(b"354 go\r\n"):
            seen["data"] = peer.data()
            peer.send(b"554 empty\r\n")
        assert peer.line() == b"RSET"
        peer.send(b"250 ok\r\n")
        seen["after"] = peer.line()
        peer.send(b"221 bye\r\n")

    port, _ = scripted(script)
    session = session_for(tmp_path, port)
    with pytest.raises(RelayError) as caught:
        session.send("a@example.org", ["b@example.com"], b"secret body\r\n")
    session.close()
    assert caught.value.exit_code == code
    assert words in str(caught.value)
    assert seen.get("data", b"\r\n") == b"\r\n"  # the empty message, if any
    assert seen["after"] == b"QUIT"


def test_without_pipelining_commands_wait_for_replies(
    mailhub: MailHubFactory, tmp_path: Path
) -> None:
    hub = mailhub(rcpt_faults={"bad@example.com": (550, "5.1.1 unknown")})
    config = config_module.load(str(write_config(tmp_path, hub)))
    with open_session(config) as session:
        assert session.client is not None
        assert not session.client.has_extn("pipelining")
        outcome = session.send(
            "a@example.org", ["bad@example.com", "ok@example.com"], b"Subject: x\r\n\r\nhi\r\n"
        )
    assert outcome.accepted == ["ok@example.com"]
    assert hub.wait_for(1)[0].rcpt_tos == ["ok@example.com"]


# -- STARTTLS (RFC 3207) --------------------------------------------------------------------


def test_plaintext_after_the_starttls_reply_is_discarded(
    scripted: Any, tmp_path: Path, server_cert: trustme.LeafCert, ca_file: Path
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)

    def script(peer: Peer) -> None:
        peer.greet_and_ehlo(b"STARTTLS")
        assert peer.line() == b"STARTTLS"
        # An attacker's injected reply rides in the same segment as the 220.
        peer.send(b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
        peer.sock = context.wrap_socket(peer.sock, server_side=True)
        peer.buf = b""
        assert peer.line().startswith(b"EHLO ")
        peer.send(b"250-scripted\r\n250 SIZE 10\r\n")
        assert peer.line() == b"QUIT"
        peer.send(b"221 bye\r\n")

    port, _ = scripted(script)
    session = session_for(tmp_path, port, UseSTARTTLS="yes", TLS_CA_File=ca_file)
    assert session.tls
    assert session.client is not None
    assert session.client.esmtp_features == {"size": "10"}
    session.close()


def test_starttls_refused_is_classified(
    tls_hub: MailHubFactory, tmp_path: Path, ca_file: Path
) -> None:
    hub = tls_hub(faults={"STARTTLS": (454, "4.7.0 later")})
    config = config_module.load(str(write_config(tmp_path, hub, TLS_CA_File=ca_file)))
    with pytest.raises(RelayError) as caught:
        open_session(config)
    assert caught.value.exit_code == os.EX_TEMPFAIL
    assert "STARTTLS" in str(caught.value)


# -- AUTH -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "reply", "code"),
    [
        ("EHLO", (554, "5.7.1 go away"), os.EX_UNAVAILABLE),
        ("AUTH", (454, "4.7.0 try later"), os.EX_TEMPFAIL),
        ("AUTH", (535, "5.7.8 no"), os.EX_NOPERM),
    ],
)
def test_session_faults_before_mail(
    tls_hub: MailHubFactory,
    tmp_path: Path,
    ca_file: Path,
    step: str,
    reply: tuple[int, str],
    code: int,
) -> None:
    faults = {step: reply} if step != "EHLO" else {"EHLO": reply, "HELO": reply}
    hub = tls_hub(auth=True, faults=faults)
    path = write_config(tmp_path, hub, TLS_CA_File=ca_file, AuthUser="alice")
    config = config_module.load(str(path))
    with pytest.raises(RelayError) as caught:
        open_session(config, password=PASSWORD)
    assert caught.value.exit_code == code, str(caught.value)


def test_endless_auth_challenges_end(scripted: Any) -> None:
    def script(peer: Peer) -> None:
        peer.greet_and_ehlo(b"AUTH LOGIN")
        for _ in range(10):
            peer.line()
            peer.send(b"334 VXNlcm5hbWU6\r\n")

    port, _ = scripted(script)
    wired = client(port)
    wired.ehlo()
    with pytest.raises(smtp_wire.AuthFailed):
        wired.auth("LOGIN", "alice", "pw")
    wired.close()


def test_auth_answers_of_each_method(scripted: Any) -> None:
    import base64
    import hmac

    seen: list[bytes] = []

    def script(peer: Peer) -> None:
        peer.greet_and_ehlo(b"AUTH CRAM-MD5 LOGIN")
        seen.append(peer.line())
        peer.send(b"334 " + base64.b64encode(b"<1.2@server>") + b"\r\n")
        seen.append(peer.line())
        peer.send(b"235 ok\r\n")

    port, _ = scripted(script)
    wired = client(port)
    wired.ehlo()
    assert wired.auth("CRAM-MD5", "alice", "pw") == (235, b"ok")
    wired.close()
    assert seen[0] == b"AUTH CRAM-MD5"
    digest = hmac.new(b"pw", b"<1.2@server>", "md5").hexdigest()
    assert base64.b64decode(seen[1]) == f"alice {digest}".encode()


# -- the message: dot-stuffing and streaming --------------------------------------------------


def test_dot_stuffing() -> None:
    assert smtp_wire.dot_stuff(b".a\r\n..b\r\nc.\r\n.\r\n") == b"..a\r\n...b\r\nc.\r\n..\r\n"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_streamed_wire_equals_the_whole_wire_form(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    body = b".a\n\r\n.\r\nline\n..\nx" + b"y" * 100 + b"\n.\n\nlast"
    raw = b"To: a@example.com\nSubject: s\n\n" + body
    monkeypatch.setattr(message_module, "CHUNK", chunk)
    spooled = read_input(io.BytesIO(raw), spool_at=8)
    assert isinstance(spooled, Spooled)
    message = parse(spooled)
    assert message.spool is spooled
    streamed = wire(message)
    assert not isinstance(streamed, bytes)
    whole = to_wire(parse(raw))
    assert b"".join(streamed.chunks()) == whole
    assert streamed.size == len(whole)
    stuffed = b"".join(smtp_wire.dot_stuff(c) for c in streamed.chunks())
    assert stuffed == smtp_wire.dot_stuff(whole)


@pytest.mark.parametrize(
    "body",
    [b"bare\rcr\n", b"nul\0\n", b"x" * 999 + b"\n", b"x" * 999, b"end\r"],
)
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_unsafe_spooled_bodies_are_reencoded(
    monkeypatch: pytest.MonkeyPatch, body: bytes, chunk: int
) -> None:
    monkeypatch.setattr(message_module, "CHUNK", chunk)
    raw = b"Subject: s\n\n" + body
    spooled = read_input(io.BytesIO(raw), spool_at=4)
    assert isinstance(spooled, Spooled)
    message = parse(spooled)
    assert scan_body(spooled.blocks(message.body_offset)).unsafe
    assert wire(message) == to_wire(parse(raw))


def test_big_message_streams_end_to_end(mailhub: MailHubFactory, tmp_path: Path) -> None:
    hub = mailhub()
    lines = b"".join(b"." * (i % 3) + b"%d line\n" % i for i in range(200_000))
    raw = b"To: a@example.com\nSubject: big\n\n" + lines
    spooled = read_input(io.BytesIO(raw))
    assert isinstance(spooled, Spooled)
    config = config_module.load(str(write_config(tmp_path, hub, Queue="no")))
    submit(spooled, config=config, recipients=["a@example.com"], identity=ME)
    (received,) = hub.wait_for(1)
    assert received.data.split(b"\r\n\r\n", 1)[1] == lines.replace(b"\n", b"\r\n")
