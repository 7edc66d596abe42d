"""The start-up fast paths of relay.envelope and relay.message give exactly what the
`email` package gives: addresses, display names, folded headers, dates, Message-IDs.

Each fast path skips the `email` import for the common case; these tests hold it to the
slow path's answer on every generated input (the same call with the fast paths switched
off, or the email package itself), so it can never be a second opinion.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.headerregistry import Address
from email.policy import SMTP
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import envelope
from relay import message as message_module
from relay.message import Message, format_date, make_msgid, parse

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
local = st.lists(st.text(ATEXT, min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)
domain = st.lists(st.text("abz09-", min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)
plain_address = st.builds(lambda lp, d: f"{lp}@{d}", local, domain)
words = st.lists(st.text("abQZ09_'+-", min_size=1, max_size=8), min_size=1, max_size=3)
plain_name = words.map(" ".join)
NOISE = "ab.@<>\" ,()\\:;[]-_+'\t"
noisy = st.text(NOISE, max_size=20)
#: Plain forms (the fast paths), noise (the email package), and plain forms spoiled at an
#: end, where a fast path that accepts too much would show.
spoiled = st.builds(
    lambda before, address, after: before + address + after,
    st.text(NOISE, max_size=2),
    plain_address,
    st.text(NOISE, max_size=2),
)
address_like = st.one_of(plain_address, noisy, spoiled)
from_values = st.one_of(
    address_like,
    st.builds(lambda n, a: f"{n} <{a}>", plain_name, plain_address),
    st.builds(lambda a: f"<{a}>", plain_address),
    st.builds(lambda n, a: f"{n} <{a}>", noisy, address_like),
)
NEVER = re.compile(r"(?!)")


@contextmanager
def slow_paths() -> Iterator[None]:
    """Every fast path of relay.envelope and relay.message switched off."""
    with pytest.MonkeyPatch.context() as patch:
        for module in (envelope, message_module):
            patch.setattr(module, "PLAIN_ADDRESS", NEVER)
            patch.setattr(module, "PLAIN_NAME", NEVER)
        patch.setattr(message_module, "_folds_to_itself", lambda name, value: False)
        yield


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """The result of `call`, or the kind of error it raised."""
    try:
        return "result", call()
    except Exception as err:
        return "error", type(err)


def fast_and_slow(call: Callable[[], Any]) -> tuple[tuple[str, Any], tuple[str, Any]]:
    fast = outcome(call)
    with slow_paths():
        slow = outcome(call)
    return fast, slow


@settings(max_examples=300, deadline=None)
@given(plain_address)
def test_plain_addresses_are_what_the_email_package_reads(address: str) -> None:
    assert envelope.PLAIN_ADDRESS.fullmatch(address)
    parsed = Address(addr_spec=address)
    assert parsed.username and parsed.domain
    assert parsed.addr_spec == address
    assert email.utils.getaddresses([address]) == [("", address)]
    if not address.startswith("-"):  # refused: it looks like an option
        assert envelope.validate_address(address) == address
        assert envelope.parse_recipient_args([address]) == [address]


@settings(max_examples=300, deadline=None)
@given(address_like)
def test_anything_else_takes_the_email_package_path(text: str) -> None:
    fast, slow = fast_and_slow(lambda: envelope.validate_address(text))
    assert fast == slow
    fast, slow = fast_and_slow(lambda: envelope.parse_recipient_args([text]))
    assert fast == slow
    if envelope.PLAIN_ADDRESS.fullmatch(text):
        assert Address(addr_spec=text).addr_spec == text


@settings(max_examples=300, deadline=None)
@given(plain_name, plain_address)
def test_from_header_fast_path_matches_the_email_package(name: str, address: str) -> None:
    username, _, host = address.rpartition("@")
    slow = str(Address(display_name=name, username=username, domain=host))
    assert envelope.format_from(name, address) == slow
    fast, slowed = fast_and_slow(lambda: envelope.format_from(name, address))
    assert fast == slowed == ("result", slow)
    message = Message()
    message.add("From", slow)
    assert message.header_bytes() == SMTP.header_factory("From", slow).fold(policy=SMTP).encode(
        "ascii"
    )
    assert message.addresses("from") == [
        a for _n, a in email.utils.getaddresses(message.values("from"))
    ]


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=4_000_000_000))
def test_date_is_formatdate(when: int) -> None:
    assert format_date(when) == email.utils.formatdate(when, localtime=True)
    message = Message()
    message.add("Date", format_date(when))
    expected = SMTP.header_factory("Date", format_date(when)).fold(policy=SMTP)
    assert message.header_bytes() == expected.encode("ascii")


def test_message_id_has_the_email_package_form() -> None:
    msgid = make_msgid("bench.example.org")
    assert msgid.startswith("<") and msgid.endswith("@bench.example.org>")
    assert make_msgid("x.org") != make_msgid("x.org")
    message = Message()
    message.add("Message-ID", msgid)
    expected = SMTP.header_factory("Message-ID", msgid).fold(policy=SMTP)
    assert message.header_bytes() == expected.encode("ascii")


@settings(max_examples=300, deadline=None)
@given(from_values)
def test_header_addresses_agree_with_getaddresses(value: str) -> None:
    message = parse(b"From: " + value.strip().encode() + b"\n\n")
    expected = [a for _n, a in email.utils.getaddresses(message.values("from")) if a]
    assert message.addresses("from") == expected
    fast, slow = fast_and_slow(lambda: message.addresses("from"))
    assert fast == slow == ("result", expected)

    def folded() -> bytes:
        written = Message()
        written.add("From", value.strip())
        return written.header_bytes()

    fast, slow = fast_and_slow(folded)
    assert fast == slow
