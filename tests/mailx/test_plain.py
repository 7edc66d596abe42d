"""mailx.plain: the simple message written as bytes equals what the email package writes.

The fast path (`mailx.plain.build`) must give, for every draft it accepts, the bytes
`mailx.compose.build` gives for the same draft and clock, in all three forms `mail`
writes: `bytes(msg)` (dead.letter, record), the `-d` / external-mta form (LF line ends)
and the wire (`email.policy.SMTP`, headers folded to 78). The one field that differs by
design is the Message-ID's random part (`os.urandom` instead of `random`): both are
replaced by the same value before comparing, and its form is checked apart. Where the
fast path declines (None), the message is built by `mailx.compose`: declining is
always allowed, but the common drafts must not decline (tested below too).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailx import compose, plain
from mailx.draft import Draft, _has_control, is_field_name
from relay import DataError

SMTP_POLICY = compose.POLICY.clone(max_line_length=78)
LF_POLICY = compose.POLICY.clone(linesep="\n")
MESSAGE_ID = re.compile(rb"Message-ID: <(\d+)\.(\d+)\.(\d+)@([^>]+)>")
FIXED_ID = b"Message-ID: <1.2.3@fixed.example>"
CLOCK = 1_795_000_000.25  # 2026-11-18


@pytest.fixture(autouse=True)
def zone(request: pytest.FixtureRequest) -> Iterator[None]:
    """A known local time zone (the Date is local time)."""
    name = getattr(request, "param", "Europe/Paris")
    saved = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def reference(draft: Draft, clock: float) -> compose.EmailMessage:
    """What mail built before the fast path: compose.build dated as pipeline dated it."""
    return compose.build(draft, now=datetime.fromtimestamp(clock).astimezone())


def same_id(data: bytes) -> bytes:
    return MESSAGE_ID.sub(FIXED_ID, data)


def assert_same(draft: Draft, clock: float = CLOCK) -> plain.Plain | None:
    """The fast path declines, or writes what compose writes; both refuse alike."""
    try:
        expected = reference(draft, clock)
    except DataError as err:
        why = str(err)
        try:
            declined = plain.build(draft, clock)
        except DataError as refused:
            fast_why = str(refused)
        else:
            assert declined is None  # declined: compose refuses it
            return None
        assert fast_why == why
        return None
    fast = plain.build(draft, clock)
    if fast is None:
        return None
    assert same_id(bytes(fast)) == same_id(bytes(expected))
    assert same_id(fast.as_bytes()) == same_id(expected.as_bytes())
    assert same_id(fast.render(plain.WIDTH, b"\n")) == same_id(expected.as_bytes(policy=LF_POLICY))
    from email.policy import SMTP

    assert same_id(fast.wire()) == same_id(expected.as_bytes(policy=SMTP))
    assert same_id(fast.wire()) == same_id(expected.as_bytes(policy=SMTP_POLICY))
    return fast


# -- generated drafts ----------------------------------------------------------------------

ATEXT = "abcxyzABCXYZ0129!#$%&'*+-/=?^_`{|}~"
#: Mostly what works (the point is to compare output), some of what does not.
simple_locals = st.from_regex(r"[a-z][a-z0-9_+-]{0,8}(\.[a-z0-9]{1,5}){0,2}", fullmatch=True)
local_parts = st.one_of(
    simple_locals,
    simple_locals,
    simple_locals,
    st.text(ATEXT + '."\\ (),:;<>@[]', min_size=1, max_size=12),
)
domains = st.one_of(
    st.sampled_from(["example.com", "example.org"]),
    st.sampled_from(["example.com", "example.org", "mail.example.net", "EXAMPLE.COM"]),
    st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9-]{1,15}){1,3}", fullmatch=True),
    st.sampled_from(["bücher.example", "[127.0.0.1]", "localhost"]),
)
simple_words = st.from_regex(r"[A-Za-z]{1,10}", fullmatch=True)
name_words = st.one_of(
    simple_words,
    simple_words,
    simple_words,
    st.text(ATEXT + "., \"'()<>@:;\\[]é\t", min_size=1, max_size=10),
)
display_names = st.lists(name_words, min_size=1, max_size=4).map(" ".join)


@st.composite
def addresses(draw: st.DrawFn, odd: bool = True) -> str:
    local = draw(local_parts if odd else simple_locals)
    kind = draw(st.sampled_from(["bare", "named", "quoted", "local", "angle"]))
    domain = draw(domains if odd else st.sampled_from(["example.com", "example.org"]))
    if kind == "local":
        return local
    spec = f"{local}@{domain}"
    if kind == "bare":
        return spec
    if kind == "angle":
        return f"<{spec}>"
    name = draw(display_names if odd else st.lists(simple_words, min_size=1).map(" ".join))
    if kind == "quoted":
        return f'"{name}" <{spec}>'
    return f"{name} <{spec}>"


subjects = st.one_of(
    st.none(),
    st.just(""),
    st.lists(st.from_regex(r"[A-Za-z0-9:/%.-]{1,12}", fullmatch=True), max_size=25).map(" ".join),
    st.text(" abcdefghij=?é\t\r\nXYZ-_:", max_size=120),
    st.lists(st.text("abcdefghijklmnopqrstuvwxyz", min_size=40, max_size=80), max_size=3).map(
        " ".join
    ),
)
plain_lines = st.text("abc XYZ 019 \t:/%", max_size=40)
odd_lines = st.one_of(
    plain_lines,
    st.just("From the cron daemon"),
    st.text("aé€ \x1b\x07\x00\x0c", max_size=10),
    st.integers(990, 1010).map(lambda n: "x" * n),
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    # Mostly text the fast path takes (7bit, or base64 for CR and a missing final LF),
    # some of what it leaves to the email package (8-bit, controls, long lines, From).
    odd = draw(st.integers(0, 3)) == 0
    lines = draw(st.lists(odd_lines if odd else plain_lines, max_size=8))
    ending = draw(st.sampled_from(["\n", "\n", "\n", "\r\n", ""]))
    text = ending.join(lines) + (ending if lines and draw(st.integers(0, 4)) else "")
    data = text.encode("utf-8")
    if odd and draw(st.booleans()):
        data += b"\xe9\n"  # Latin-1 in a UTF-8 body: unknown-8bit
    return data


@st.composite
def drafts(draw: st.DrawFn) -> Draft:
    # One draft in four has odd addresses (most of them refused): the rest are there to
    # compare what the two paths write.
    odd = draw(st.integers(0, 3)) == 0
    return Draft(
        to=draw(st.lists(addresses(odd), min_size=1, max_size=3)),
        cc=draw(st.lists(addresses(odd), max_size=2)),
        bcc=draw(st.lists(addresses(odd), max_size=2)),
        subject=draw(subjects),
        body=draw(bodies()),
        from_=draw(st.one_of(st.none(), addresses(odd))),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drafts(), st.floats(0, 4_000_000_000, allow_nan=False))
@example(Draft(to=["Bench User <someone@example.com>"], subject="subj", body=b"hi\n"), CLOCK)
def test_the_fast_path_writes_what_the_email_package_writes(draft: Draft, clock: float) -> None:
    assert_same(draft, clock)


# -- what must take the fast path ----------------------------------------------------------

COMMON = [
    Draft(to=["Bench User <someone@example.com>"], subject="subj", body=b"disk usage 91%\n"),
    Draft(to=["root"], subject="cron", body=b""),
    Draft(
        to=["a@example.com", "b@example.org"],
        cc=["c@example.net"],
        bcc=["d@example.com"],
        subject="backup report",
        body=b"line one\nline two\n",
    ),
    Draft(to=["a@example.com"], subject=" ".join(["word"] * 40), body=b"long subject\n"),
    Draft(to=["a@example.com"], subject="x" * 50 + " y" * 10, body=b"next line\n"),
    Draft(to=["a@example.com"], subject="s", body=b"no final newline"),
    Draft(to=["a@example.com"], subject="s", body=b"crlf\r\nbody\r\n"),
    Draft(to=["a@example.com"], subject="s", body="caf\u00e9 au lait".encode()),
    Draft(to=["a@example.com"], from_="Me <me@example.org>", subject="s", body=b"x\n"),
    Draft(to=["a@example.com"], from_="me@example.org", body=b"x\n"),
]


@pytest.mark.parametrize("draft", COMMON)
def test_common_drafts_take_the_fast_path(draft: Draft) -> None:
    assert assert_same(draft) is not None


@pytest.mark.parametrize(
    "draft",
    [
        Draft(to=["a@example.com"], attachments=["/etc/hostname"]),
        Draft(to=["a@example.com"], custom_headers=["X-Tag: t"]),
        Draft(to=["Jöhn <a@example.com>"]),
        Draft(to=["a@example.com"], subject="caf\u00e9"),
        Draft(to=["a@example.com"], subject="=?utf-8?q?x?="),
        Draft(to=["a@example.com"], body="caf\u00e9\n".encode()),  # quoted-printable
        Draft(to=["a@example.com"], body=b"\xe9t\xe9\n"),  # not UTF-8: unknown-8bit
        Draft(to=["a@example.com"], body=b"\x00binary\n"),
        Draft(to=["a@example.com"], body=b"From here\n"),
        Draft(to=["a@example.com"], hostname="example.org"),
        Draft(to=["a@example.com"], sender="s@example.org"),
        Draft(to=["a@example.com"], reply_to=["r@example.org"]),
        Draft(to=["a@example.com"], sendcharsets=("iso-8859-1", "utf-8")),
        Draft(to=[", ".join(f"user{i}@example.com" for i in range(5))]),
    ],
)
def test_what_the_fast_path_leaves_to_the_email_package(draft: Draft) -> None:
    assert plain.build(draft, CLOCK) is None
    reference(draft, CLOCK)  # which builds it


def test_an_invalid_recipient_is_refused_as_compose_refuses_it() -> None:
    draft = Draft(to=["bad address@"], subject="s", body=b"x\n")
    with pytest.raises(DataError) as fast:
        plain.build(draft, CLOCK)
    with pytest.raises(DataError) as slow:
        reference(draft, CLOCK)
    assert str(fast.value) == str(slow.value)


def test_the_message_id_has_make_msgids_form() -> None:
    fast = plain.build(Draft(to=["a@example.com"], from_="me@example.org", body=b"x\n"), CLOCK)
    assert fast is not None
    found = MESSAGE_ID.search(bytes(fast))
    assert found is not None
    stamp, pid, random, domain = found.groups()
    assert abs(int(stamp) - time.time() * 100) < 6000
    assert int(pid) == os.getpid()
    assert int(random) < 2**64
    assert domain == b"example.org"


# -- the Date -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "zone",
    ["Europe/Paris", "America/St_Johns", "Asia/Kolkata", "UTC", "Pacific/Chatham"],
    indirect=True,
)
@pytest.mark.parametrize(
    "clock",
    [
        CLOCK,
        0.0,
        1_774_746_000.0,  # 2026-03-29 01:00 UTC: Paris springs forward
        1_792_890_000.0,  # 2026-10-25 01:00 UTC: Paris falls back
        1_792_886_400.9999996,  # rounds up to the next second, as datetime rounds
        1_792_886_400.0000004,
        1_792_886_400.4999995,
        4_102_444_799.5,
    ],
)
@pytest.mark.usefixtures("zone")
def test_the_date_is_format_datetime_of_the_local_time(clock: float) -> None:
    from email.utils import format_datetime

    assert plain._date(clock) == format_datetime(datetime.fromtimestamp(clock).astimezone())


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 4_000_000_000, allow_nan=False))
def test_the_date_for_any_clock(clock: float) -> None:
    from email.utils import format_datetime

    assert plain._date(clock) == format_datetime(datetime.fromtimestamp(clock).astimezone())


# -- the hand-rolled scanners against what they replace ---------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(max_codepoint=0x130), max_size=8))
def test_is_field_name_is_the_ftext_pattern(name: str) -> None:
    assert is_field_name(name) == bool(re.fullmatch(r"[!-9;-~]+", name))


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(max_codepoint=0x2030), max_size=8))
def test_has_control_is_unicodedata_s(text: str) -> None:
    import unicodedata

    expected = any(
        ch != "\t" and (unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029") for ch in text
    )
    assert _has_control(text) == expected


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=40) | st.text("a\x00\x07\x08\t\x0b\x1b\x7f\x0e", max_size=20).map(str.encode)
)
def test_the_byte_classes_are_composes_patterns(data: bytes) -> None:
    assert plain._is_binary(data) == bool(re.search(rb"[\x00-\x06\x0e-\x1a\x1c-\x1f\x7f]", data))
    control = bool(re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", data))
    assert plain._has_control_byte(data) == control
