"""The bench server's DATA scanner (bench/server.py, `Connection.data`) against bytes.find.

The scanner searches each read for the end marker plus the few octets carried over from
the read before (bench/server.py says why: cheap per read for clients that send each line
alone). Whatever way the stream is cut into reads, it must stop exactly where
`find(b"\\r\\n.\\r\\n")` on the whole stream does, count the same octets, and leave what
follows the marker (pipelined commands) for the command reader.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from hypothesis import given
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parents[1] / "bench"
END = b"\r\n.\r\n"


def server() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_server", BENCH / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SERVER = server()


class Reads:
    """A byte source that hands out the given reads, one per recv_into."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = list(reads)

    def recv_into(self, buffer: bytearray) -> int:
        if not self.reads:
            return 0
        chunk = self.reads.pop(0)
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def setsockopt(self, *args: object) -> None:
        pass


def scan(buffered: bytes, reads: list[bytes]) -> tuple[int | None, bytes]:
    conn = SERVER.Connection(Reads(reads), "quickack", None, SERVER.Stats())
    conn.buf += buffered
    size = conn.data()
    return size, bytes(conn.buf)


@given(
    st.binary(min_size=0, max_size=60).map(
        lambda raw: bytes(b"\r\n.x"[b % 4] for b in raw)  # markers and near-misses, often
    ),
    st.lists(st.integers(min_value=0, max_value=60), max_size=8),
)
def test_stops_where_find_does_however_the_reads_fall(stream: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    buffered, reads = pieces[0], [p for p in pieces[1:] if p]
    whole = b"\r\n" + stream  # the CRLF that ended the DATA line may begin the marker
    end = whole.find(END)
    size, left = scan(buffered, reads)
    if end < 0:
        assert size is None  # the connection ended before the marker
    else:
        consumed = end + len(END) - 2
        assert size == consumed
        assert left == stream[consumed:]


def test_an_empty_message_and_a_pipelined_quit() -> None:
    assert scan(b"", [b".\r\nQUIT\r\n"]) == (3, b"QUIT\r\n")
    assert scan(b"a\r\n.", [b"\r", b"\nQUIT\r\n"]) == (6, b"QUIT\r\n")
    assert scan(b"a\r\n..\r\nb\r\n.\r\n", []) == (13, b"")
