"""The hand-rolled scanners of the send path agree with the regular expressions they replace.

relay.plain, relay.message and relay.deadletter scan with str and bytes methods so that
`sendmail` need not import `re` (see each module's comment). Each test here runs the
scanner and the old expression on the same generated input, built from the characters
each expression turns on (its set, its separators, its neighbours just outside the set,
non-ASCII look-alikes and line ends), and asks for the same answer.
"""

from __future__ import annotations

import _socket
import re
import socket

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay import deadletter, message, plain, smtp_wire

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
OLD_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
OLD_PLAIN_NAME = re.compile(r"[A-Za-z0-9_'+-]+(?: [A-Za-z0-9_'+-]+)*")
OLD_FIELD = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
OLD_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)

#: Characters on both sides of every edge of the expressions above.
ADDRESS_CHARS = "aZ09!#$%&'*+/=?^_`{|}~-.@ \t\n\"(),:;<>[\\]\x00\x7fé٣ǅ"
NAME_CHARS = "aZ09_'+- \t\n.@\"é٣"
text_for_address = st.text(ADDRESS_CHARS, max_size=24)
text_for_name = st.text(NAME_CHARS, max_size=24)
FIELD_BYTES = b"aZ09:;9 \t\r\n!~\x20\x21\x39\x3a\x3b\x7e\x7f\x80\xff\x00"
FROM_BYTES = b"From >\nrmF\r x"


@settings(max_examples=2000, deadline=None)
@given(text_for_address)
@example("a@b")
@example("a.b@c.d")
@example("a..b@c")
@example(".a@b")
@example("a@b.")
@example("a@@b")
@example("a@b@c")
@example("@b")
@example("a@")
@example("a@b\n")
@example("é@b")
@example("a@b_c")
def test_plain_address_is_the_old_expression(text: str) -> None:
    assert bool(plain.PLAIN_ADDRESS.fullmatch(text)) == bool(OLD_PLAIN_ADDRESS.fullmatch(text))


@settings(max_examples=2000, deadline=None)
@given(text_for_name)
@example("Bob Builder")
@example("Bob  Builder")
@example(" Bob")
@example("Bob ")
@example("")
@example("Bob\n")
@example("Bob\tBuilder")
def test_plain_name_is_the_old_expression(text: str) -> None:
    assert bool(plain.PLAIN_NAME.fullmatch(text)) == bool(OLD_PLAIN_NAME.fullmatch(text))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=20).map(lambda b: bytes(FIELD_BYTES[x % len(FIELD_BYTES)] for x in b)))
@example(b"Subject: x")
@example(b"Subject : x")
@example(b"Sub ject: x")
@example(b": x")
@example(b" Subject: x")
@example(b"Subject\t \t:")
@example(b"From user Mon Jan  1 00:00:00 2024")
@example(b"From : x")
@example(b"X-\x80: y")
@example(b"Subject")
def test_field_start_is_the_old_expression(line: bytes) -> None:
    assert message.is_field(line) == bool(OLD_FIELD.match(line))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=40).map(lambda b: bytes(FROM_BYTES[x % len(FROM_BYTES)] for x in b)))
@example(b"From x\n>From y\n>>From z\nFrom")
@example(b"\nFrom \n")
@example(b"x From y")
@example(b">From")
@example(b"\r\nFrom x")
def test_from_quoting_is_the_old_expression(text: bytes) -> None:
    assert deadletter.quote_from_lines(text) == OLD_FROM_LINE.sub(rb">\1", text)


# -- connect_tcp: socket.create_connection over _socket --------------------------------------


def test_connects_to_a_listener_with_the_timeout_set() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        sock = smtp_wire.connect_tcp(b"127.0.0.1", port, 7.5)
        try:
            assert sock.gettimeout() == 7.5
            peer, _ = listener.accept()
            peer.sendall(b"hi")
            assert sock.recv(2) == b"hi"
            peer.close()
        finally:
            sock.close()


def test_a_refused_connection_is_the_same_error_as_create_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), 2)
    with pytest.raises(ConnectionRefusedError):
        smtp_wire.connect_tcp(b"127.0.0.1", port, 2)


def test_a_name_that_does_not_resolve_is_gaierror() -> None:
    assert socket.gaierror is _socket.gaierror  # what relay.smtp classifies
    with pytest.raises(_socket.gaierror):
        smtp_wire.connect_tcp(b"no-such-host.invalid", 25, 2)


def test_a_socket_for_tls_is_the_same_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        raw = smtp_wire.connect_tcp(b"127.0.0.1", port, 3.0)
        fd = raw.fileno()
        full = smtp_wire._for_tls(raw)
        try:
            assert isinstance(full, socket.socket)
            assert full.fileno() == fd and raw.fileno() == -1  # moved, not duplicated
            assert full.gettimeout() == 3.0
            peer, _ = listener.accept()
            full.sendall(b"ok")
            assert peer.recv(2) == b"ok"
            peer.close()
        finally:
            full.close()


# -- the streamed body: scan and wire form, against the straightforward versions -------------


def _old_scan_body(blocks: list[bytes]) -> tuple[bool, bool, int]:
    """relay.message.scan_body as it was: three counts per piece."""
    unsafe = eight_bit = False
    carry = b""
    size = bare_lf = 0
    for block in blocks:
        size += len(block)
        if not eight_bit and not block.isascii():
            eight_bit = True
        if unsafe:
            continue
        data = carry + block
        cut = data.rfind(b"\n") + 1
        whole, carry = data[:cut], data[cut:]
        crlf = whole.count(b"\r\n")
        bare_lf += whole.count(b"\n") - crlf
        unsafe = (
            b"\0" in whole
            or whole.count(b"\r") != crlf
            or len(carry) > message.MAX_LINE + 1
            or any(len(line.removesuffix(b"\r")) > message.MAX_LINE for line in whole.split(b"\n"))
        )
    if carry:
        size += 2
        unsafe = unsafe or b"\0" in carry or b"\r" in carry or len(carry) > message.MAX_LINE
    return unsafe, eight_bit, size + bare_lf


def _old_chunks(body: bytes) -> bytes:
    """The wire form StreamedWire gave: CRLF for every line end, CRLF added at the end."""
    whole = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return whole if not whole or whole.endswith(b"\r\n") else whole + b"\r\n"


pieces = st.one_of(
    st.sampled_from([b"\n", b"\r\n", b"\r", b"\0", b".", b"\xe9", b"\n.", b"From "]),
    st.integers(0, 1100).map(lambda n: b"x" * n),
    st.sampled_from([997, 998, 999, 1000]).map(lambda n: b"y" * n + b"\n"),
    st.sampled_from([997, 998, 999, 1000]).map(lambda n: b"y" * n + b"\r\n"),
)
bodies = st.lists(pieces, max_size=30).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(bodies, st.sampled_from([1, 2, 3, 7, 64, 997, 999, 1000, 1 << 18]))
@example(b"a\r", 2)
@example(b"a\r\nb\n", 2)
@example(b"x" * 999 + b"\r\n", 999)
@example(b"x" * 999 + b"\r\n", 1000)
@example(b"x" * 1000 + b"\n", 7)
def test_scan_body_is_the_straightforward_one(body: bytes, size: int) -> None:
    blocks = [body[at : at + size] for at in range(0, len(body), size)]
    scan = message.scan_body(blocks)
    assert (scan.unsafe, scan.eight_bit, scan.wire_size) == _old_scan_body(blocks)
    if not scan.unsafe:
        assert scan.has_cr == (b"\r" in body)


@settings(max_examples=500, deadline=None)
@given(bodies, st.sampled_from([1, 2, 3, 7, 64, 1000, 1 << 18]))
@example(b"a\r\nb\nc", 1)
@example(b".\n.\r\n..", 2)
def test_streamed_wire_is_the_straightforward_one(body: bytes, size: int) -> None:
    head = b"Subject: s\n\n"
    spool = message.Spooled()
    try:
        spool.write(head + body)
        msg = message.Message([[b"Subject: s"]])
        msg.spool, msg.body_offset = spool, len(head)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(message, "CHUNK", size)
            scan = message.scan_body(spool.blocks(len(head)))
            if scan.unsafe:
                return  # re-encoded through the email package, not streamed
            streamed = message.StreamedWire(msg, scan)
            out = b"".join(streamed.chunks())
        assert out == b"Subject: s\r\n\r\n" + _old_chunks(body)
        assert streamed.size == len(out)
    finally:
        spool.close()
