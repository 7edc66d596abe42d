"""mailx.compose: every header and part of what `mail` builds, parsed back from the wire."""

from __future__ import annotations

import json
import os
import re
import tempfile
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, Policy, default
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailx import compose
from mailx.compose import (
    MAX_LINE,
    POLICY,
    STREAM_AT,
    Draft,
    build,
    default_user_agent,
    envelope_recipients,
    has_streamed_parts,
    parse_addresses,
    render,
)
from relay import ConfigError, DataError, NoInputError

CORPUS = Path(__file__).parent.parent / "data" / "compose"
NOW = datetime(2026, 11, 25, 22, 36, 23, tzinfo=UTC)
#: Bytes file(1) does not count as text: the rule compose documents for binary bodies.
BINARY = re.compile(rb"[\x00-\x06\x0e-\x1a\x1c-\x1f\x7f]")
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def corpus(name: str) -> list[dict[str, Any]]:
    with open(CORPUS / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def wire(draft: Draft, **kwargs: Any) -> bytes:
    kwargs.setdefault("now", NOW)
    kwargs.setdefault("login", "alice")
    raw = bytes(build(draft, **kwargs))
    assert_wire_sane(raw)
    return raw


def assert_wire_sane(raw: bytes) -> None:
    """CRLF only, no NUL, no line over 998 octets (RFC 5322 section 2.1.1)."""
    assert raw.endswith(b"\r\n")
    for line in raw[:-2].split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line and b"\0" not in line
        assert len(line) <= MAX_LINE


def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    for part in msg.walk():
        assert part.defects == [], part.defects
    return msg


def head(raw: bytes) -> list[tuple[str, str]]:
    """The top-level header fields as on the wire, unfolded (RFC 5322 section 2.2.3)."""
    block = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = re.sub(r"\r\n(?=[ \t])", "", block)
    return [
        (name, value.lstrip(" "))
        for name, _, value in (f.partition(":") for f in unfolded.split("\r\n"))
    ]


def field(raw: bytes, name: str) -> str:
    values = [value for key, value in head(raw) if key.lower() == name.lower()]
    assert len(values) == 1, (name, values)
    return values[0]


def decoded(part: EmailMessage) -> bytes:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.replace(b"\r\n", b"\n")


def text(part: EmailMessage) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def body_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n")


# --- headers -------------------------------------------------------------------------------


def test_header_order_is_s_nails() -> None:
    draft = Draft(
        to=["My Name <someone@example.com>"],
        cc=["c@example.org"],
        bcc=["hidden@example.org"],
        subject="s",
        body=b"hi\n",
        from_="Me <me@example.com>",
        sender="Boss <boss@example.com>",
        reply_to=["replies@example.com"],
        custom_headers=["X-First: 1", "X-Second: 2"],
        user_agent="test-agent 1",
    )
    names = [name for name, _ in head(wire(draft))]
    assert names == [
        "Date",
        "From",
        "Sender",
        "To",
        "Cc",
        "Subject",
        "Message-ID",
        "Reply-To",
        "User-Agent",
        "X-First",
        "X-Second",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    ]


def test_minimal_message_has_no_from_or_message_id() -> None:
    raw = wire(Draft(to=["bob"], body=b"disk full\n"))
    msg = parse(raw)
    assert [name for name, _ in head(raw)] == [
        "Date",
        "To",
        "User-Agent",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    ]
    assert msg["To"] == "bob"
    assert msg["User-Agent"] == default_user_agent()
    assert default_user_agent().startswith("mailx-relay ")
    assert msg.get_content_type() == "text/plain"
    assert msg.get_param("charset") == "us-ascii"
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert body_lines(raw) == [b"disk full", b""]


def test_date_is_numeric_zone_of_the_given_time() -> None:
    plus_one = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    assert field(wire(Draft(to=["bob"]), now=plus_one), "Date") == "Fri, 02 Jan 2026 03:04:05 +0100"
    assert field(wire(Draft(to=["bob"]), now=NOW), "Date") == "Wed, 25 Nov 2026 22:36:23 +0000"


@freeze_time("2026-11-25 22:36:23")
def test_date_defaults_to_the_clock() -> None:
    msg = parse(bytes(build(Draft(to=["bob"]))))
    date = msg["Date"].datetime
    assert date.replace(tzinfo=None) == datetime(2026, 11, 25, 22, 36, 23)
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", str(msg["Date"]))


def test_hostname_without_from_gives_login_at_hostname_and_message_id() -> None:
    raw = wire(Draft(to=["bob"], hostname="host.example"), login="alice")
    assert field(raw, "From") == "alice@host.example"
    assert re.fullmatch(r"<[^@<>]+@host\.example>", field(raw, "Message-ID"))


def test_login_defaults_to_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "carol")
    raw = bytes(build(Draft(to=["bob"], hostname="host.example"), now=NOW))
    assert field(raw, "From") == "carol@host.example"


def test_from_gives_message_id_in_its_domain() -> None:
    raw = wire(Draft(to=["bob"], from_="Me <me@mail.example.com>"))
    assert field(raw, "From") == "Me <me@mail.example.com>"
    assert field(raw, "Message-ID").endswith("@mail.example.com>")


def test_from_and_hostname_message_id_uses_hostname() -> None:
    raw = wire(Draft(to=["bob"], from_="me@example.com", hostname="host.example"))
    assert field(raw, "From") == "me@example.com"
    assert field(raw, "Message-ID").endswith("@host.example>")


@pytest.mark.parametrize("hostname", ["bad host", "a@b", "host\nX-Evil: 1", ""])
def test_bad_hostname_is_refused(hostname: str) -> None:
    with pytest.raises(DataError, match="hostname"):
        build(Draft(to=["bob"], hostname=hostname), login="alice")


def test_non_ascii_subject_is_encoded_words_and_round_trips() -> None:
    subject = "Grüße aus Köln: Überstunden " * 3
    raw = wire(Draft(to=["bob"], subject=subject))
    header = raw.split(b"\r\n\r\n", 1)[0]
    assert header.isascii()
    assert "=?utf-8?" in field(raw, "Subject")
    assert parse(raw)["Subject"] == subject


def test_long_ascii_subject_is_folded() -> None:
    subject = " ".join(["word"] * 400)
    raw = wire(Draft(to=["bob"], subject=subject))
    assert parse(raw)["Subject"] == subject
    assert max(len(line) for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")) <= 78


def test_unbreakable_subject_still_fits_998() -> None:
    subject = "x" * 3000
    raw = wire(Draft(to=["bob"], subject=subject))
    assert parse(raw)["Subject"] == subject


def test_empty_subject_is_written_none_is_not() -> None:
    assert field(wire(Draft(to=["bob"], subject="")), "Subject") == ""
    assert "Subject" not in [name for name, _ in head(wire(Draft(to=["bob"])))]


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Hi\nBcc: evil@example.org", "Hi Bcc: evil@example.org"),
        ("Hi\r\nX-Evil: 1", "Hi  X-Evil: 1"),
        ("a\rb\x00c\x1bd\u2028e\x85f", "a b c d e f"),
        ("tab\tkept", "tab\tkept"),
    ],
)
def test_subject_control_characters_become_spaces(subject: str, expected: str) -> None:
    raw = wire(Draft(to=["bob"], subject=subject))
    msg = parse(raw)
    assert msg["Subject"] == expected
    assert "Bcc" not in msg and "X-Evil" not in msg


@pytest.mark.parametrize("case", corpus("addresses.jsonl"), ids=lambda case: repr(case["input"]))
def test_address_corpus(case: dict[str, Any]) -> None:
    name, text = case["field"], case["input"]
    draft = {
        "To": Draft(to=[text]),
        "From": Draft(to=["bob"], from_=text),
        "Reply-To": Draft(to=["bob"], reply_to=[text]),
    }[name]
    if "error" in case:
        with pytest.raises(DataError, match=re.escape(case["error"])) as caught:
            build(draft, now=NOW)
        assert caught.value.exit_code == os.EX_DATAERR
        if name == "To":
            with pytest.raises(DataError):
                envelope_recipients(draft)
        return
    raw = wire(draft)
    assert field(raw, name) == case["header"]
    assert envelope_recipients(draft) == case["envelope"]
    assert [a.addr_spec for a in parse(raw)[name].addresses] == case["envelope"]


def test_display_names_with_commas_and_quotes_round_trip() -> None:
    draft = Draft(
        to=['"Doe, John" <j@example.com>', '"O\'Brien \\"Bob\\"" <b@example.com>'],
        cc=['"Ünïcödé, Name" <u@example.com>'],
    )
    msg = parse(wire(draft))
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("Doe, John", "j@example.com"),
        ('O\'Brien "Bob"', "b@example.com"),
    ]
    assert [(a.display_name, a.addr_spec) for a in msg["Cc"].addresses] == [
        ("Ünïcödé, Name", "u@example.com")
    ]


def test_address_with_unbreakable_overlong_display_name_is_refused() -> None:
    with pytest.raises(DataError, match="longer than 998"):
        build(Draft(to=[f"{'x' * 1200} <a@example.com>"]), now=NOW)


def test_sender_must_be_one_address() -> None:
    with pytest.raises(DataError, match="exactly one"):
        build(Draft(to=["bob"], sender="a@example.com, b@example.com"), now=NOW)
    with pytest.raises(DataError, match="exactly one"):
        build(Draft(to=["bob"], from_="a@example.com, b@example.com"), now=NOW)


def test_parse_addresses_refuses_local_names_unless_allowed() -> None:
    assert [a.addr_spec for a in parse_addresses("bob", allow_local=True)] == ["bob"]
    with pytest.raises(DataError, match="no domain"):
        parse_addresses("bob", "Cc")


# --- recipients ----------------------------------------------------------------------------


def test_bcc_only_in_the_envelope() -> None:
    draft = Draft(to=["a@example.com"], bcc=["Secret Person <secret@example.org>"], body=b"x\n")
    raw = wire(draft)
    assert b"secret" not in raw.lower()
    assert "Bcc" not in parse(raw)
    assert envelope_recipients(draft) == ["a@example.com", "secret@example.org"]


def test_recipients_deduplicated_first_wins_and_empty_cc_vanishes() -> None:
    # The duplicate key is the relay's: domain case-folded, local part as written.
    draft = Draft(
        to=["A <a@example.com>", "bob", "a@example.com"],
        cc=["Another A <a@EXAMPLE.COM>", "bob"],
        bcc=["bob", "c@example.com", "a@Example.Com, c@example.com"],
    )
    raw = wire(draft)
    assert field(raw, "To") == "A <a@example.com>, bob"
    assert "Cc" not in [name for name, _ in head(raw)]
    assert envelope_recipients(draft) == ["a@example.com", "bob", "c@example.com"]


def test_local_parts_differing_in_case_are_two_recipients() -> None:
    # RFC 5321 2.4: only the receiving host may decide that A@x and a@x are one mailbox.
    draft = Draft(to=["a@example.com", "A@EXAMPLE.COM", "bob", "BOB"])
    assert field(wire(draft), "To") == "a@example.com, A@EXAMPLE.COM, bob, BOB"
    assert envelope_recipients(draft) == ["a@example.com", "A@example.com", "bob", "BOB"]


def test_header_and_envelope_dedupe_agree_on_domain_case() -> None:
    draft = Draft(to=["bob@Example.org", "bob@example.org"], cc=["Bob <bob@EXAMPLE.ORG>"])
    raw = wire(draft)
    assert field(raw, "To") == "bob@Example.org"
    assert "Cc" not in [name for name, _ in head(raw)]
    assert envelope_recipients(draft) == ["bob@example.org"]


def test_envelope_order_is_to_cc_bcc() -> None:
    draft = Draft(to=["t@example.com"], cc=["c1@example.com", "c2@example.com"], bcc=["b@x.org"])
    assert envelope_recipients(draft) == [
        "t@example.com",
        "c1@example.com",
        "c2@example.com",
        "b@x.org",
    ]
    assert field(wire(draft), "Cc") == "c1@example.com, c2@example.com"


# --- custom headers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", corpus("custom-headers.jsonl"), ids=lambda case: repr(case["input"])
)
def test_custom_header_corpus(case: dict[str, Any]) -> None:
    draft = Draft(to=["bob"], custom_headers=[case["input"]])
    if "error" in case:
        with pytest.raises(DataError, match=re.escape(case["error"])) as caught:
            build(draft, now=NOW)
        assert caught.value.exit_code == os.EX_DATAERR
        return
    raw = wire(draft)
    msg = parse(raw)
    assert msg[case["name"]] == case["value"]
    assert "Bcc" not in msg
    names = [name for name, _ in head(raw)]
    assert names.index(case["name"]) == names.index("User-Agent") + 1


def test_non_ascii_custom_header_is_encoded() -> None:
    raw = wire(Draft(to=["bob"], custom_headers=["Organization: Grüße GmbH"]))
    assert field(raw, "Organization").startswith("=?utf-8?")


def test_user_agent_empty_means_none_and_is_validated() -> None:
    assert "User-Agent" not in parse(wire(Draft(to=["bob"], user_agent="")))
    with pytest.raises(DataError, match="User-Agent"):
        build(Draft(to=["bob"], user_agent="x\r\nBcc: evil@example.org"), now=NOW)


# --- body: charset and transfer encoding ---------------------------------------------------


def test_latin1_is_chosen_from_sendcharsets() -> None:
    draft = Draft(to=["bob"], body="Café crème\n".encode(), sendcharsets=("iso-8859-1", "utf-8"))
    raw = wire(draft)
    msg = parse(raw)
    assert msg.get_param("charset") == "iso-8859-1"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert b"Caf=E9 cr=E8me" in raw
    assert text(msg) == "Café crème\n"


def test_next_sendcharset_when_the_first_cannot_hold_the_text() -> None:
    draft = Draft(to=["bob"], body="5 €\n".encode(), sendcharsets=("iso-8859-1", "utf-8"))
    msg = parse(wire(draft))
    assert msg.get_param("charset") == "utf-8"
    assert text(msg) == "5 €\n"


def test_utf8_when_no_sendcharset_fits() -> None:
    draft = Draft(to=["bob"], body="snowman ☃\n".encode(), sendcharsets=("iso-8859-1",))
    msg = parse(wire(draft))
    assert msg.get_param("charset") == "utf-8"
    assert text(msg) == "snowman ☃\n"


def test_input_charset_is_honoured() -> None:
    draft = Draft(to=["bob"], body="Grüße\n".encode("iso-8859-1"), input_charset="latin-1")
    msg = parse(wire(draft))
    assert msg.get_param("charset") == "utf-8"
    assert text(msg) == "Grüße\n"


@pytest.mark.parametrize(
    ("sendcharsets", "input_charset", "message"),
    [
        (("no-such-charset",), "utf-8", "unknown charset"),
        (("utf-16",), "utf-8", "not a superset of ASCII"),
        (("utf-8",), "utf-16", "not a superset of ASCII"),
        (("utf-8",), "bogus", "unknown charset"),
    ],
)
def test_unusable_charsets_are_config_errors(
    sendcharsets: tuple[str, ...], input_charset: str, message: str
) -> None:
    draft = Draft(
        to=["bob"], body="é\n".encode(), sendcharsets=sendcharsets, input_charset=input_charset
    )
    with pytest.raises(ConfigError, match=message) as caught:
        build(draft, now=NOW)
    assert caught.value.exit_code == os.EX_CONFIG


def test_sendcharsets_are_checked_even_for_ascii() -> None:
    with pytest.raises(ConfigError, match="unknown charset"):
        build(Draft(to=["bob"], body=b"ascii\n", sendcharsets=("nonsense",)), now=NOW)


def test_eight_bit_text_is_quoted_printable() -> None:
    raw = wire(Draft(to=["bob"], body="Grüße\n".encode()))
    msg = parse(raw)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert body_lines(raw)[0] == b"Gr=C3=BC=C3=9Fe"
    assert decoded(msg) == "Grüße\n".encode()


@pytest.mark.parametrize("length", [998, 999, 1200, 5000])
def test_long_lines(length: int) -> None:
    body = b"x" * length + b"\nshort\n"
    raw = wire(Draft(to=["bob"], body=body))
    msg = parse(raw)
    expected_cte = "7bit" if length <= MAX_LINE else "quoted-printable"
    assert msg["Content-Transfer-Encoding"] == expected_cte
    if expected_cte == "quoted-printable":
        assert max(len(line) for line in body_lines(raw)) <= 76
    assert decoded(msg) == body


def test_from_line_forces_qp_and_is_protected() -> None:
    body = b"hello\nFrom here on\nnot From: at the start\n"
    raw = wire(Draft(to=["bob"], body=body))
    msg = parse(raw)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert not any(line.startswith(b"From ") for line in body_lines(raw))
    assert b"=46rom here on" in raw
    assert decoded(msg) == body


def test_from_after_a_soft_break_is_protected_and_lines_stay_short() -> None:
    # Every offset, so that some soft break lands right before a "From ".
    for pad in range(80):
        body = ("é" + "x" * pad + "From " + "y" * 200 + "\n").encode()
        raw = wire(Draft(to=["bob"], body=body))
        lines = body_lines(raw)
        assert not any(line.startswith(b"From ") for line in lines)
        assert max(len(line) for line in lines) <= 76
        assert decoded(parse(raw)) == body


def test_nul_makes_the_body_binary_base64() -> None:
    body = b"abc\x00def\n\xff\xfe"
    raw = wire(Draft(to=["bob"], body=body))
    msg = parse(raw)
    assert msg.get_content_type() == "application/octet-stream"
    assert msg["Content-Transfer-Encoding"] == "base64"
    assert msg.get_payload(decode=True) == body


def test_invalid_utf8_is_sent_as_unknown_8bit_unchanged() -> None:
    body = b"Caf\xe9 cr\xe8me\nline two \xff\n"
    raw = wire(Draft(to=["bob"], body=body))
    msg = parse(raw)
    assert msg.get_content_type() == "text/plain"
    assert msg.get_param("charset") == "unknown-8bit"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert decoded(msg) == body


def test_escape_sequences_stay_text_but_are_encoded() -> None:
    body = b"\x1b[31mred\x1b[0m\fpage\x08\x07\n"
    raw = wire(Draft(to=["bob"], body=body))
    msg = parse(raw)
    assert msg.get_content_type() == "text/plain"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert b"=1B[31mred" in raw
    assert decoded(msg) == body


@pytest.mark.parametrize(
    "body",
    [
        b"one\r\ntwo\r\n",
        b"progress 10%\rprogress 20%\n",
        b"no final newline",
        b"a\rb\r\nc",
        "gr\u00fc\u00dfe\r\n".encode(),
        b"\xe9t\xe9 latin-1, no newline",
        b"mixed\nline\r\nends\r",
    ],
)
def test_a_body_a_line_encoding_cannot_carry_goes_base64_byte_for_byte(body: bytes) -> None:
    """CR anywhere or no final newline: base64, so every decoder gives back these bytes
    (a quoted-printable or 7bit line break may become LF or CRLF in the reader)."""
    msg = parse(wire(Draft(to=["bob"], body=body)))
    assert msg.get_content_type() == "text/plain"
    assert msg["Content-Transfer-Encoding"] == "base64"
    assert msg.get_payload(decode=True) == body


@pytest.mark.parametrize("body", [b"\n", b".\n..\n", b"plain text\nwith lines\n"])
def test_lf_text_ending_in_a_newline_stays_7bit(body: bytes) -> None:
    msg = parse(wire(Draft(to=["bob"], body=body)))
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert decoded(msg) == body


def test_trailing_whitespace_is_kept() -> None:
    body = b"trailing  \t\nspaces \n"
    assert decoded(parse(wire(Draft(to=["bob"], body=body)))) == body


def test_empty_body_stays_empty() -> None:
    raw = wire(Draft(to=["bob"]))
    assert raw.endswith(b"Content-Transfer-Encoding: 7bit\r\n\r\n")
    assert decoded(parse(raw)) == b""


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, and bytes built from the pieces that change the encoding."""
    pieces = st.sampled_from(
        [
            b"From ",
            b"\r",
            b"\n",
            b"\r\n",
            b"\x00",
            b"\xe9",
            "é€".encode(),
            b"x" * 997,
            b".",
            b"\x1b",
            b"=",
            b" ",
            b"\t",
            b"\xff\xfe",
            b"\x7f",
            b"=46",
            b"\x85",
        ]
    )
    if draw(st.booleans()):
        return draw(st.binary(max_size=2000))
    return b"".join(draw(st.lists(pieces, max_size=40)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies(), latin1=st.booleans())
def test_any_body_is_sent_safely_and_decodes_to_itself(body: bytes, latin1: bool) -> None:
    """Every body decodes to its exact bytes (text in a charset other than the input's
    converted back): base64 ones as they are, 7bit and quoted-printable ones once their
    CRLF line breaks are read as LF (they only carry LF text that ends in a newline)."""
    sendcharsets = ("iso-8859-1", "utf-8") if latin1 else ("utf-8",)
    raw = wire(Draft(to=["bob"], body=body, sendcharsets=sendcharsets))
    msg = parse(raw)
    if BINARY.search(body):
        assert msg.get_content_type() == "application/octet-stream"
        assert msg.get_payload(decode=True) == body
        return
    assert msg.get_content_type() == "text/plain"
    if msg["Content-Transfer-Encoding"] == "base64":
        payload = msg.get_payload(decode=True)
        assert isinstance(payload, bytes)
        assert b"\r" in body or not body.endswith(b"\n")
    else:
        payload = decoded(msg)
    if msg.get_param("charset") == "iso-8859-1":
        payload = payload.decode("iso-8859-1").encode("utf-8")
    assert payload == body
    if msg["Content-Transfer-Encoding"] == "quoted-printable":
        assert max(len(line) for line in body_lines(raw)) <= 76
    assert not any(line.startswith(b"From ") for line in body_lines(raw))


# --- attachments ---------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "table.csv").write_bytes(b"a,b\n1,2\n")
    (tmp_path / "pixel.png").write_bytes(PNG)
    (tmp_path / "Übersicht 2024.txt").write_bytes("Grüße\n".encode())
    (tmp_path / "notes").write_bytes(b"plain words\nFrom here\n")
    (tmp_path / "blob").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    (tmp_path / "crlf.txt").write_bytes(b"one\r\ntwo\r\n")
    (tmp_path / "bare-cr.txt").write_bytes(b"one\rtwo")
    (tmp_path / "archive.tar.gz").write_bytes(b"\x1f\x8b\x08\x00")
    (tmp_path / "mail.eml").write_bytes(b"Subject: x\n\nbody\n")
    return tmp_path


def attached(raw: bytes) -> list[EmailMessage]:
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/mixed"
    parts = list(msg.iter_parts())
    assert all(isinstance(part, EmailMessage) for part in parts)
    return parts  # type: ignore[return-value]


def test_attachments_make_multipart_mixed_body_first(files: Path) -> None:
    draft = Draft(
        to=["bob"],
        subject="report",
        body=b"see attached\n",
        attachments=[str(files / "table.csv"), str(files / "pixel.png")],
    )
    raw = wire(draft)
    names = [name for name, _ in head(raw)]
    assert names[-2:] == ["MIME-Version", "Content-Type"]
    assert b"This is a multi-part message in MIME format." in raw
    body, csv, png = attached(raw)
    assert body.get_content_type() == "text/plain"
    assert body.get_content_disposition() == "inline"
    assert text(body) == "see attached\n"
    assert csv.get_content_type() == "text/csv"
    assert csv.get_param("charset") == "us-ascii"
    assert csv["Content-Transfer-Encoding"] == "7bit"
    assert csv.get_content_disposition() == "attachment"
    assert csv.get_filename() == "table.csv"
    assert decoded(csv) == b"a,b\n1,2\n"
    assert png.get_content_type() == "image/png"
    assert png["Content-Transfer-Encoding"] == "base64"
    assert png.get_filename() == "pixel.png"
    assert png.get_payload(decode=True) == PNG
    for part in (body, csv, png):
        assert "MIME-Version" not in part


def test_non_ascii_filename_is_rfc2231(files: Path) -> None:
    raw = wire(Draft(to=["bob"], body=b"x\n", attachments=[str(files / "Übersicht 2024.txt")]))
    assert b"filename*=utf-8''%C3%9Cbersicht%202024.txt" in raw
    assert b"name=" not in raw.split(b"filename*=")[0].split(b"Content-Type: text/plain")[-1]
    part = attached(raw)[1]
    assert part.get_filename() == "Übersicht 2024.txt"
    assert part.get_param("name") is None
    assert part.get_param("charset") == "utf-8"
    assert part.get_payload(decode=True) == "Grüße\n".encode()


def test_long_filename_uses_rfc2231_continuations(tmp_path: Path) -> None:
    name = "Ü" * 60 + ".txt"
    (tmp_path / name).write_bytes(b"x\n")
    raw = wire(Draft(to=["bob"], attachments=[str(tmp_path / name)]))
    assert b"filename*0*=utf-8''" in raw
    assert attached(raw)[0].get_filename() == name


def test_filename_with_newline_is_neutralised(tmp_path: Path) -> None:
    name = "evil\nContent-Type: text-html.txt"
    (tmp_path / name).write_bytes(b"x\n")
    part = attached(wire(Draft(to=["bob"], attachments=[str(tmp_path / name)])))[0]
    assert part.get_filename() == "evil_Content-Type: text-html.txt"
    assert part.get_content_type() == "text/plain"


@pytest.mark.parametrize(
    ("name", "content_type", "cte", "charset"),
    [
        ("notes", "text/plain", "base64", "us-ascii"),  # a From line would be mangled in 7bit
        ("blob", "application/octet-stream", "base64", None),
        ("latin1.txt", "text/plain", "base64", "unknown-8bit"),
        ("crlf.txt", "text/plain", "7bit", "us-ascii"),
        ("bare-cr.txt", "text/plain", "base64", "us-ascii"),
        ("archive.tar.gz", "application/gzip", "base64", None),
        ("mail.eml", "application/octet-stream", "base64", None),
    ],
)
def test_attachment_types_and_encodings_keep_the_bytes(
    files: Path, name: str, content_type: str, cte: str, charset: str | None
) -> None:
    data = (files / name).read_bytes()
    raw = wire(Draft(to=["bob"], body=b"x\n", attachments=[str(files / name)]))
    part = attached(raw)[1]
    assert part.get_content_type() == content_type
    assert part["Content-Transfer-Encoding"] == cte
    assert part.get_param("charset") == charset
    assert part.get_filename() == name
    if cte == "base64":
        assert part.get_payload(decode=True) == data
    else:  # 7bit: the same lines, CRLF on the wire (RFC 2046 section 4.1.1)
        assert decoded(part) == data.replace(b"\r\n", b"\n")


def test_empty_body_with_attachment_has_only_the_attachment(files: Path) -> None:
    parts = attached(wire(Draft(to=["bob"], attachments=[str(files / "pixel.png")])))
    assert [part.get_content_type() for part in parts] == ["image/png"]


def test_binary_body_with_attachment_is_an_inline_binary_part(files: Path) -> None:
    parts = attached(wire(Draft(to=["bob"], body=b"\x00", attachments=[str(files / "blob")])))
    assert parts[0].get_content_type() == "application/octet-stream"
    assert parts[0].get_content_disposition() == "inline"
    assert parts[0].get_payload(decode=True) == b"\x00"


@pytest.mark.parametrize("name", ["missing.txt", "."])
def test_unreadable_attachment_is_no_input(files: Path, name: str) -> None:
    path = str(files / name)
    draft = Draft(to=["bob"], body=b"x\n", attachments=[str(files / "table.csv"), path])
    with pytest.raises(NoInputError) as caught:
        build(draft, now=NOW)
    assert caught.value.exit_code == os.EX_NOINPUT
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: cannot read attachment")


def test_attachment_without_permission_is_no_input(files: Path) -> None:
    path = files / "secret.txt"
    path.write_bytes(b"x")
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as root: permissions do not stop reading")
    with pytest.raises(NoInputError, match="Permission denied"):
        build(Draft(to=["bob"], attachments=[str(path)]), now=NOW)


@pytest.mark.slow
def test_large_attachment_peak_memory_is_a_small_multiple(tmp_path: Path) -> None:
    """A 20 MB attachment is not copied over and over (docs/architecture.md, "Large messages").

    Modest size by default, the full 20 MiB with MAILX_FULL=1. Measured at 20 MiB:
    build peak about 4.7x the file (the email package's base64 line list), bytes()
    about 4x the message.
    """
    size = (20 if os.environ.get("MAILX_FULL") else 2) << 20
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(size))
    tracemalloc.start()
    try:
        msg = build(Draft(to=["bob"], body=b"x\n", attachments=[str(path)]), now=NOW)
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 6 * size
        tracemalloc.reset_peak()
        raw = bytes(msg)
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 6 * len(raw)
    finally:
        tracemalloc.stop()
    assert attached(raw)[1].get_payload(decode=True) == path.read_bytes()


# -- render: the multipart framing written by us, byte for byte the email package's ---------

#: A boundary set on both sides of a comparison, so that the outputs can be compared.
FIXED_BOUNDARY = "=_fixed-for-the-test"
LF_POLICY = POLICY.clone(linesep="\n")
POLICIES = [
    pytest.param(SMTP, id="smtp"),
    pytest.param(POLICY, id="mail"),
    pytest.param(LF_POLICY, id="lf"),
]


def package_bytes(msg: EmailMessage, policy: Policy) -> bytes:
    """What the email package's own generator writes (not our `as_bytes`)."""
    buffer = BytesIO()
    BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(msg)
    return buffer.getvalue()


def rendered(msg: EmailMessage, policy: Policy | None = None) -> bytes:
    buffer = BytesIO()
    render(msg, buffer, policy)
    return buffer.getvalue()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def small_files(files: Path) -> Path:
    (files / "empty.dat").write_bytes(b"")
    (files / "Ünïcödé «name» with a long tail to be continued.pdf").write_bytes(b"%PDF-1.4\n\xff")
    (files / "boundary.txt").write_bytes(f"--{FIXED_BOUNDARY}\n--=_\n".encode())
    return files


SMALL_CASES = {
    "several": (b"see attached\n", ["table.csv", "pixel.png", "blob", "archive.tar.gz"]),
    "non-ascii-body": ("Grüße aus Köln\n".encode(), ["Übersicht 2024.txt", "latin1.txt"]),
    "no-body": (b"", ["pixel.png", "empty.dat"]),
    "empty-file": (b"x\n", ["empty.dat"]),
    "rfc2231": (b"x\n", ["Ünïcödé «name» with a long tail to be continued.pdf"]),
    "text-files": (b"From me\n", ["notes", "crlf.txt", "bare-cr.txt", "mail.eml"]),
    "binary-body": (b"\x00\x01", ["blob"]),
    "boundary-like-text": (f"--{FIXED_BOUNDARY}\n".encode(), ["boundary.txt"]),
    "no-attachment": ("Grüße\n".encode(), []),
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", SMALL_CASES, ids=str)
def test_render_is_the_email_packages_output(small_files: Path, case: str, policy: Policy) -> None:
    body, names = SMALL_CASES[case]
    draft = Draft(
        to=["bob"], subject="Grüße", body=body, attachments=[str(small_files / n) for n in names]
    )
    msg = build(draft, now=NOW, login="alice")
    assert not has_streamed_parts(msg)
    if names:
        msg.set_boundary(FIXED_BOUNDARY)
    assert rendered(msg, policy) == package_bytes(msg, policy)


@pytest.mark.parametrize("case", SMALL_CASES, ids=str)
def test_render_chooses_a_boundary_none_of_the_parts_holds(small_files: Path, case: str) -> None:
    body, names = SMALL_CASES[case]
    draft = Draft(to=["bob"], body=body, attachments=[str(small_files / n) for n in names])
    msg = build(draft, now=NOW, login="alice")
    first = rendered(msg)
    # The boundary is chosen once, kept in Content-Type: the package writes the same.
    assert first == package_bytes(msg, POLICY) == rendered(msg)
    if names:
        boundary = msg.get_boundary()
        assert boundary is not None and boundary.startswith("=_")
        parsed = parse(first)
        assert len(list(parsed.iter_parts())) == len(names) + bool(body)


@st.composite
def attachment_sets(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    stems = st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="/\x00"),
        min_size=1,
        max_size=30,
    ).filter(lambda stem: stem not in (".", ".."))
    suffixes = st.sampled_from(["", ".txt", ".csv", ".png", ".bin", ".gz", ".eml", ".pdf"])
    contents = st.one_of(st.binary(max_size=300), bodies())
    return draw(
        st.lists(st.tuples(stems, suffixes, contents), max_size=4).map(
            lambda items: [
                (f"{i}{stem}{suffix}", data) for i, (stem, suffix, data) in enumerate(items)
            ]
        )
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies(), attachments=attachment_sets(), linesep=st.sampled_from(["\r\n", "\n"]))
def test_render_equals_the_package_for_any_small_message(
    body: bytes, attachments: list[tuple[str, bytes]], linesep: str
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        paths = []
        for name, data in attachments:
            path = Path(directory) / name
            path.write_bytes(data)
            paths.append(str(path))
        msg = build(Draft(to=["bob"], body=body, attachments=paths), now=NOW, login="alice")
    policy = POLICY.clone(linesep=linesep)
    chosen = rendered(msg, policy)
    assert chosen == package_bytes(msg, policy)
    if attachments:
        msg.set_boundary(FIXED_BOUNDARY)
        assert rendered(msg, policy) == package_bytes(msg, policy)


# -- big attachments: encoded from the file as the message is written ----------------------


def build_both(
    monkeypatch: pytest.MonkeyPatch, draft: Draft, stream_at: int = 0
) -> tuple[EmailMessage, EmailMessage]:
    """The message with its big attachments read from their files, and the same message
    made whole by the email package; both with FIXED_BOUNDARY and no random header."""
    kwargs: dict[str, Any] = {"now": NOW, "login": "alice"}
    monkeypatch.setattr(compose, "STREAM_AT", stream_at)
    streamed = build(draft, **kwargs)
    monkeypatch.setattr(compose, "STREAM_AT", 1 << 62)
    whole = build(draft, **kwargs)
    monkeypatch.undo()
    assert has_streamed_parts(streamed)
    assert not has_streamed_parts(whole)
    for msg in (streamed, whole):
        msg.set_boundary(FIXED_BOUNDARY)
    return streamed, whole


#: Around one base64 line (54 octets at 72 columns) and one block of lines (1024) read at once.
EDGE_SIZES = [1, 53, 54, 55, 54 * 1024 - 1, 54 * 1024, 54 * 1024 + 1, 3 * 54 * 1024 + 17]


@pytest.mark.parametrize("size", EDGE_SIZES)
def test_streamed_attachment_is_byte_for_byte_the_packages(
    small_files: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    big = small_files / "dump.bin"
    big.write_bytes(os.urandom(size))
    names = ["table.csv", "dump.bin", "empty.dat", "Übersicht 2024.txt", "pixel.png"]
    draft = Draft(
        to=["bob"], subject="Grüße", body="Grüße\n".encode(),
        attachments=[str(small_files / name) for name in names],
    )  # fmt: skip
    streamed, whole = build_both(monkeypatch, draft)
    for policy in (SMTP, POLICY, LF_POLICY):
        expected = package_bytes(whole, policy)
        assert rendered(streamed, policy) == expected
        assert streamed.as_bytes(policy=policy) == expected
    assert bytes(streamed) == package_bytes(whole, POLICY)
    assert streamed.as_string() == whole.as_string()
    assert str(streamed) == str(whole)
    for mine, theirs in zip(streamed.walk(), whole.walk(), strict=True):
        assert mine.get_content_type() == theirs.get_content_type()
        if not mine.is_multipart():
            assert mine.get_payload() == theirs.get_payload()
            assert mine.get_payload(decode=True) == theirs.get_payload(decode=True)
    (part,) = [p for p in streamed.walk() if p.get_filename() == "dump.bin"]
    assert isinstance(part, EmailMessage)
    assert part.get_content() == big.read_bytes()
    assert (
        part.as_bytes()
        == next(p for p in whole.walk() if p.get_filename() == "dump.bin").as_bytes()
    )


@pytest.mark.parametrize("size", [STREAM_AT + 1, STREAM_AT + 54 * 4096 * 3 + 17])
def test_big_attachment_renders_byte_for_byte_as_the_email_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    path = tmp_path / "dump.bin"
    path.write_bytes(os.urandom(size))
    draft = Draft(
        to=["a@example.com"], subject="s", body=b"see attached\n", attachments=[str(path)]
    )
    streamed, whole = build_both(monkeypatch, draft, stream_at=STREAM_AT)
    for policy in (SMTP, POLICY):
        assert rendered(streamed, policy) == package_bytes(whole, policy)
    (part,) = [p for p in parse(bytes(streamed)).walk() if p.get_filename() == "dump.bin"]
    assert part.get_payload(decode=True) == path.read_bytes()


def test_small_and_unknown_and_text_attachments_are_not_streamed(tmp_path: Path) -> None:
    for name in ("small.bin", "big-unknown", "big.txt"):
        size = STREAM_AT if name == "small.bin" else STREAM_AT + 1
        (tmp_path / name).write_bytes(b"a" * size)
        msg = build(Draft(to=["bob"], attachments=[str(tmp_path / name)]), now=NOW)
        assert not has_streamed_parts(msg), name


def test_no_file_stays_open(small_files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (small_files / "dump.bin").write_bytes(os.urandom(300_000))
    draft = Draft(to=["bob"], body=b"x\n", attachments=[str(small_files / "dump.bin")])
    before = open_fds()
    streamed, _whole = build_both(monkeypatch, draft)
    assert open_fds() == before  # nothing is held between build and render
    rendered(streamed)
    bytes(streamed)
    (part,) = [p for p in streamed.walk() if p.get_filename() == "dump.bin"]
    part.get_payload(decode=True)
    assert open_fds() == before

    class Broken(BytesIO):
        def write(self, data: Any) -> int:
            if len(data) > 1000:
                raise OSError(28, "No space left on device")
            return super().write(data)

    with pytest.raises(OSError, match="No space"):
        render(streamed, Broken())
    assert open_fds() == before


@pytest.mark.parametrize("change", ["shrink", "replace", "delete", "unreadable"])
def test_attachment_changed_after_build_is_no_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    path = tmp_path / "dump.bin"
    path.write_bytes(os.urandom(300_000))
    draft = Draft(to=["bob"], body=b"x\n", attachments=[str(path)])
    streamed, _whole = build_both(monkeypatch, draft)
    if change == "shrink":
        with open(path, "r+b") as handle:
            handle.truncate(1000)
    elif change == "replace":
        replacement = tmp_path / "other.bin"
        replacement.write_bytes(os.urandom(300_000))
        replacement.replace(path)
    elif change == "delete":
        path.unlink()
    else:
        path.chmod(0)
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions do not stop reading")
    before = open_fds()
    with pytest.raises(NoInputError) as caught:
        render(streamed, BytesIO())
    assert caught.value.exit_code == os.EX_NOINPUT
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: cannot read attachment")
    with pytest.raises(NoInputError):
        bytes(streamed)
    assert open_fds() == before


def test_big_attachment_is_never_held_whole(tmp_path: Path) -> None:
    path = tmp_path / "dump.bin"
    path.write_bytes(os.urandom(8 * STREAM_AT))
    draft = Draft(to=("a@example.com",), body=b"x\n", attachments=(str(path),))

    class Sink(BytesIO):
        def write(self, data: Any) -> int:
            return len(data)

    tracemalloc.start()
    try:
        msg = build(draft)
        held, _peak = tracemalloc.get_traced_memory()
        assert held < STREAM_AT
        tracemalloc.reset_peak()
        render(msg, Sink())
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - held < STREAM_AT // 2  # measured: about 320 KiB for this 8 MiB file
