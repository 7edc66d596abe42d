"""The hand-off request line shared by the submission service and the offline drop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import handoff
from relay.errors import DataError


def test_round_trip_keeps_every_field() -> None:
    request = handoff.Request(
        ("archuser@example.org", "root"),
        read_recipients=True,
        envelope_from="me@example.org",
        full_name="Me, Myself",
        verbose=True,
        claimed_uid=1500,
    )
    line = handoff.encode(request)
    assert line.startswith(handoff.MAGIC)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert handoff.decode(line) == request


@given(
    st.lists(st.text(min_size=1, max_size=40), max_size=5),
    st.one_of(st.none(), st.text(min_size=1, max_size=40)),
)
def test_any_text_survives_as_one_ascii_line(recipients: list[str], name: str | None) -> None:
    request = handoff.Request(tuple(recipients), full_name=name)
    line = handoff.encode(request)
    assert line.isascii()
    assert line.count(b"\n") == 1
    assert handoff.decode(line) == request


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"HELO\n", "bad magic"),
        (b"MAILX-RELAY-SUBMIT 2 {}\n", "bad magic"),
        (handoff.MAGIC + b"[1]\n", "not a JSON object"),
        (handoff.MAGIC + b"{\n", "not ASCII JSON"),
        (handoff.MAGIC + b'{"uid": 0}\n', "unknown field 'uid'"),
        (handoff.MAGIC + b'{"recipients": "root"}\n', "recipients must be a list"),
        (handoff.MAGIC + b'{"recipients": [""]}\n', "recipient must be a string"),
        (handoff.MAGIC + b'{"recipients": [7]}\n', "recipient must be a string"),
        (handoff.MAGIC + b'{"verbose": 1}\n', "verbose must be true or false"),
        (handoff.MAGIC + b'{"claimed_uid": true}\n', "claimed_uid must be a uid"),
        (handoff.MAGIC + b'{"claimed_uid": -5}\n', "claimed_uid must be a uid"),
        (handoff.MAGIC + b'{"envelope_from": ""}\n', "envelope from must be a string"),
    ],
)
def test_malformed_requests_are_refused_with_one_line(line: bytes, says: str) -> None:
    with pytest.raises(DataError, match=says) as caught:
        handoff.decode(line)
    assert "\n" not in str(caught.value)


def test_bounds_are_enforced_before_parsing() -> None:
    with pytest.raises(DataError, match="too long"):
        handoff.decode(handoff.MAGIC + b" " * handoff.MAX_REQUEST_LINE + b"{}")
    many = handoff.Request(tuple(f"u{i}@example.org" for i in range(handoff.MAX_RECIPIENTS + 1)))
    with pytest.raises(DataError, match="at most 1000"):
        handoff.decode(handoff.encode(many))
    with pytest.raises(DataError, match="1 to 998"):
        handoff.decode(handoff.encode(handoff.Request(("a" * 999,))))
