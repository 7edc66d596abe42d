"""relay.message: intake, header fix-ups, and the wire form (CRLF, re-encoding)."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import DataError, TooBigError
from relay.message import MAX_LINE, Spooled, fix_headers, parse, read_input, to_wire

CORPUS = Path(__file__).parent.parent / "data" / "wire"


def wire_lines(wire: bytes) -> list[bytes]:
    assert wire.endswith(b"\r\n")
    return wire[:-2].split(b"\r\n")


def assert_unambiguous(wire: bytes) -> None:
    """No bare CR or LF, no NUL, no line over 998 octets: nothing can end DATA early."""
    for line in wire_lines(wire):
        assert b"\r" not in line and b"\n" not in line
        assert b"\0" not in line
        assert len(line) <= MAX_LINE


def body_of(raw: bytes) -> bytes:
    """What a reader gets after decoding the transfer encoding, line ends as LF."""
    parsed = message_from_bytes(raw, policy=policy.default)
    payload = parsed.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.eml")))
@pytest.mark.parametrize("eight_bit_ok", [True, False])
def test_corpus_is_unambiguous_on_the_wire(name: str, eight_bit_ok: bool) -> None:
    wire = to_wire(parse((CORPUS / name).read_bytes()), eight_bit_ok=eight_bit_ok)
    assert_unambiguous(wire)
    if not eight_bit_ok:
        assert wire.isascii()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bare-cr.eml", b"first\rsecond\n.\r\nthird\n"),
        ("nul.eml", b"before\0after\n"),
        ("long-line.eml", b"x" * 5000 + b"\nshort\n"),
        ("eightbit.eml", "Grüße aus Köln\n".encode()),
    ],
)
def test_unsafe_bodies_arrive_intact(name: str, expected: bytes) -> None:
    wire = to_wire(parse((CORPUS / name).read_bytes()), eight_bit_ok=False)
    assert body_of(wire) == expected.replace(b"\r\n", b"\n")


def test_lf_dot_lf_cannot_end_data() -> None:
    wire = to_wire(parse((CORPUS / "lf-dot-lf.eml").read_bytes()))
    # The dots are whole lines now, which the SMTP layer dot-stuffs; nothing bare is left.
    assert b"\r\n.\r\nMAIL FROM:<evil@x>\r\n\r\n.\r\nafter\r\n" in wire
    assert_unambiguous(wire)


def test_plain_message_passes_byte_for_byte_but_line_ends() -> None:
    raw = (CORPUS / "crlf.eml").read_bytes()
    assert to_wire(parse(raw)) == raw


def test_eight_bit_body_left_alone_when_server_takes_8bitmime() -> None:
    raw = (CORPUS / "eightbit.eml").read_bytes()
    assert to_wire(parse(raw), eight_bit_ok=True) == raw.replace(b"\n", b"\r\n")


def test_multipart_only_the_bad_part_is_reencoded() -> None:
    wire = to_wire(parse((CORPUS / "multipart-bad-part.eml").read_bytes()))
    parsed = message_from_bytes(wire, policy=policy.default)
    first, second = parsed.iter_parts()
    assert "Content-Transfer-Encoding" not in first
    assert first.get_payload(decode=True) == b"ok part"  # its CRLF belongs to the boundary
    assert second["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert second.get_payload(decode=True) == b"bad\rpart\0here"


def test_mbox_from_line_is_dropped() -> None:
    message = parse((CORPUS / "mbox-from-line.eml").read_bytes())
    assert message.values("to") == ["a@x.org"]
    assert message.body == b"From the start\n"


def test_obsolete_from_header_is_not_an_mbox_line() -> None:
    message = parse(b"From : me@x.org\nTo: a@x.org\n\nbody\n")
    assert message.from_address() == "me@x.org"


def test_no_header_block_gets_a_separator() -> None:
    assert to_wire(parse(b"hello\nworld")) == b"\r\nhello\r\nworld\r\n"
    assert to_wire(parse(b"Subject: x\nhello\n")) == b"Subject: x\r\n\r\nhello\r\n"


def test_folded_headers_are_kept() -> None:
    message = parse(b"To: a@x.org,\n  b@y.org\nSubject: s\n\nbody\n")
    assert message.addresses("to") == ["a@x.org", "b@y.org"]
    assert to_wire(message).startswith(b"To: a@x.org,\r\n  b@y.org\r\n")


def test_header_with_bare_cr_is_refused() -> None:
    with pytest.raises(DataError, match="'subject'"):
        parse(b"Subject: a\rBcc: evil@x.org\n\nbody\n")


@freeze_time("2026-11-25 12:00:00")
def test_fix_headers_adds_what_is_missing_and_drops_bcc() -> None:
    message = parse(b"To: a@x.org\nBcc: hidden@x.org\nResent-Bcc: h2@x.org\n\nbody\n")
    fixups = fix_headers(
        message, from_header="Jürgen <j@x.org>", replace_from=False, msgid_domain="x.org"
    )
    assert fixups.added == ("From", "Date", "Message-ID")
    assert set(fixups.removed) == {"Bcc", "Resent-Bcc"}
    wire = to_wire(message)
    assert b"hidden@x.org" not in wire and b"h2@x.org" not in wire
    assert b"From: =?utf-8?q?J=C3=BCrgen?= <j@x.org>\r\n" in wire
    assert b"Date: Wed, 25 Nov 2026 12:00:00 +0000\r\n" in wire
    assert re.search(rb"Message-ID: <[^>\s]+@x\.org>\r\n", wire)


def test_fix_headers_keeps_existing_unless_told() -> None:
    message = parse(b"From: me@home.org\nDate: x\nMessage-ID: <1@h>\n\nbody\n")
    fixups = fix_headers(message, from_header="a@b.org", replace_from=False, msgid_domain="b.org")
    assert fixups.added == ()
    assert message.values("from") == ["me@home.org"]
    fix_headers(message, from_header="a@b.org", replace_from=True, msgid_domain="b.org")
    assert message.values("from") == ["a@b.org"]


def test_header_recipients_prefer_resent() -> None:
    message = parse(b"To: a@x.org\nCc: B <b@x.org>\nBcc: c@x.org\n\n")
    assert message.header_recipients() == ["a@x.org", "b@x.org", "c@x.org"]
    resent = parse(b"To: a@x.org\nResent-To: r@x.org\n\n")
    assert resent.header_recipients() == ["r@x.org"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.booleans())
def test_any_body_is_unambiguous_and_intact(body: bytes, eight_bit_ok: bool) -> None:
    raw = b"To: a@x.org\nSubject: fuzz\n\n" + body
    wire = to_wire(parse(raw), eight_bit_ok=eight_bit_ok)
    assert_unambiguous(wire)
    expected = body.replace(b"\r\n", b"\n")
    if expected and not expected.endswith(b"\n"):
        expected += b"\n"
    expected = expected.replace(b"\r\n", b"\n")
    assert body_of(wire) == expected


ENCODED_WORD = re.compile(rb"=\?[^?]+\?[qQbB]\?[^?]*\?=")


@pytest.mark.parametrize(
    "subject",
    ["é" * 3000, "a" * 3000, "ä " + "a" * 3000, "日本語" * 500],
    ids=["accented", "ascii-word", "mixed", "cjk"],
)
@pytest.mark.parametrize("eight_bit_ok", [True, False])
def test_a_huge_subject_becomes_short_encoded_words(subject: str, eight_bit_ok: bool) -> None:
    """RFC 2047 section 2: an encoded-word is at most 75 octets, however long the text;
    and the reader gets the subject back exactly."""
    raw = f"To: a@example.com\nSubject: {subject}\n\nbody\n".encode()
    wire = to_wire(parse(raw), eight_bit_ok=eight_bit_ok)
    assert_unambiguous(wire)
    words = ENCODED_WORD.findall(wire)
    assert words
    assert max(len(word) for word in words) <= 75
    assert max(len(line) for line in wire_lines(wire)) <= 78
    parsed = message_from_bytes(wire, policy=policy.default)
    assert parsed["Subject"] == subject


def test_an_8bit_header_is_encoded_for_a_server_without_8bit() -> None:
    raw = "To: a@example.com\nSubject: Grüße aus Köln\n\nplain body\n".encode()
    wire = to_wire(parse(raw), eight_bit_ok=False)
    assert wire.isascii()
    assert b"Subject: =?utf-8?" in wire
    assert message_from_bytes(wire, policy=policy.default)["Subject"] == "Grüße aus Köln"
    # Untouched headers stay byte for byte, and a server taking 8-bit gets it as it came.
    assert b"To: a@example.com\r\n" in wire
    assert to_wire(parse(raw), eight_bit_ok=True) == raw.replace(b"\n", b"\r\n")


def test_a_long_but_legal_header_is_not_refolded() -> None:
    references = " ".join(f"<{i}.{'x' * 20}@example.com>" for i in range(3))
    raw = f"To: a@example.com\nReferences: {references}\nSubject: s\n\n\0 forces re-encoding\n"
    wire = to_wire(parse(raw.encode()), eight_bit_ok=False)
    assert f"References: {references}\r\n".encode() in wire


class Endless:
    """A stdin that never ends, counting what was read from it."""

    def __init__(self) -> None:
        self.read_so_far = 0

    def read(self, size: int = -1) -> bytes:
        assert size > 0, "an endless stream read to its end"
        self.read_so_far += size
        return b"x" * size


@pytest.mark.parametrize(("limit", "spool_at"), [(100, 1000), (5000, 1000)])
def test_read_input_stops_past_the_limit_keeping_what_fits(limit: int, spool_at: int) -> None:
    stream = Endless()
    with pytest.raises(TooBigError) as caught:
        read_input(stream, spool_at=spool_at, limit=limit)  # type: ignore[arg-type]
    err = caught.value
    assert stream.read_so_far == limit + 1  # not one octet more than needed to know
    assert err.limit == limit and "MaxMessageSize" in str(err)
    partial = err.partial
    if isinstance(partial, Spooled):
        assert b"".join(partial.blocks()) == b"x" * limit
        partial.close()
    else:
        assert partial == b"x" * limit


def test_read_input_at_the_limit_is_whole() -> None:
    import io

    assert read_input(io.BytesIO(b"y" * 64), limit=64) == b"y" * 64


def test_a_spool_cut_short_by_the_file_size_limit_still_reads_the_input_exactly(
    tmp_path: Path,
) -> None:
    """`ulimit -f` stops the temporary copy part-way (a short write, then EFBIG): the
    input is then held in memory, byte for byte, never with a piece twice."""
    import subprocess
    import sys

    data = bytes(range(256)) * 10_800  # 2,764,800 bytes, not a multiple of any chunk
    source = tmp_path / "input"
    source.write_bytes(data)
    code = (
        "import hashlib, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1500 * 1024, 1500 * 1024))\n"
        "from relay.message import read_input\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    got = read_input(f)\n"
        "got = got if isinstance(got, bytes) else got.read_all()\n"
        "print(len(got), hashlib.sha256(got).hexdigest())\n"
    )
    import hashlib

    done = subprocess.run(
        [sys.executable, "-c", code, str(source)],
        capture_output=True,
        check=False,
        env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=str(Path(__file__).parents[2]),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        str(len(data)).encode(),
        hashlib.sha256(data).hexdigest().encode(),
    ]
