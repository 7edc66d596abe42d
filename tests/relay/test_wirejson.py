"""relay.wirejson gives what `json` gives: the same text written, the same value (or the
same kind of error) read, on generated values, on `json`'s own output in every layout,
and on broken input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay import handoff, wirejson

#: Text with everything an argument may hold: controls, quotes, backslashes, non-ASCII,
#: and the lone surrogates of undecodable bytes (surrogateescape).
any_text = st.text(st.characters(blacklist_categories=()), max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), any_text)
flat = st.dictionaries(any_text, st.one_of(scalars, st.lists(scalars, max_size=4)), max_size=6)
values = st.recursive(
    st.one_of(scalars, st.floats(allow_nan=False)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)
    ),
    max_leaves=20,
)


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return "value", call()
    except RecursionError:
        return "error", RecursionError
    except ValueError:
        return "error", ValueError


@settings(max_examples=1000, deadline=None)
@given(flat)
def test_dumps_is_json_dumps_compact(data: dict[str, Any]) -> None:
    assert wirejson.dumps(data) == json.dumps(data, separators=(",", ":"))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(any_text, values, max_size=4))
def test_dumps_of_anything_else_is_json_s(data: dict[str, Any]) -> None:
    assert wirejson.dumps(data) == json.dumps(data, separators=(",", ":"))


@settings(max_examples=1000, deadline=None)
@given(values, st.sampled_from([None, 0, 2]), st.booleans())
def test_loads_reads_json_s_output_in_every_layout(
    value: Any, indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only).encode(
        "utf-8", "surrogatepass"
    )
    assert outcome(lambda: wirejson.loads(text)) == outcome(lambda: json.loads(text))


JSONISH = '{}[]",:-0123456789.eEtruefalsnl \t\n\r\x0b\x0c\xa0\\u00/x'


@settings(max_examples=3000, deadline=None)
@given(st.text(st.sampled_from(JSONISH), max_size=30))
@example('{"status": 0, "lines": ["sent"], "transcript": ""}')
@example('{"status": 0, "lines": ["sent"]} x')
@example('{"status": 01}')
@example('{"status": -}')
@example('{"status": 1e3}')
@example('{"a": "\\ud800"}')
@example('{"a": "\\x"}')
@example('{"a": "\x01"}')
@example('{"a": 1,}')
@example("[" * 40 + "]" * 40)
@example("[" * 100000)
@example("1" * 5000)
@example(" ")
@example("")
def test_loads_is_json_loads_on_broken_input(text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    assert outcome(lambda: wirejson.loads(data)) == outcome(lambda: json.loads(data))


@pytest.mark.parametrize("data", [b"\xef\xbb\xbf{}", b'{"a": "\xc3\xa9"}', b"\xff"])
def test_non_ascii_input_is_json_s_to_read(data: bytes) -> None:
    assert outcome(lambda: wirejson.loads(data)) == outcome(lambda: json.loads(data))


@settings(max_examples=500, deadline=None)
@given(
    st.lists(any_text, max_size=5),
    st.booleans(),
    st.one_of(st.none(), any_text),
    st.one_of(st.none(), any_text),
    st.booleans(),
    st.integers(-1, 2**32 - 1),
)
def test_the_request_line_is_what_json_wrote(
    recipients: list[str],
    read_recipients: bool,
    envelope_from: str | None,
    full_name: str | None,
    verbose: bool,
    claimed_uid: int,
) -> None:
    request = handoff.Request(
        tuple(recipients),
        read_recipients=read_recipients,
        envelope_from=envelope_from,
        full_name=full_name,
        verbose=verbose,
        claimed_uid=claimed_uid,
    )
    data = {
        "recipients": recipients,
        "read_recipients": read_recipients,
        "envelope_from": envelope_from,
        "full_name": full_name,
        "verbose": verbose,
        "claimed_uid": claimed_uid,
    }
    expected = json.dumps(data, separators=(",", ":")).encode("ascii")
    assert handoff.encode(request) == handoff.MAGIC + expected + b"\n"
