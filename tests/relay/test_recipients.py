"""relay.recipients: the one recipient model, classifier, IDNA encoder and duplicate key.

The classifier's cases are a table (tests/data/recipients/*.jsonl), so that what every
command accepts and refuses can be read in one place; the rest checks that each reader
of recipients (sendmail arguments, `-t` headers, the Aliases file, mail.rc aliases, the
mail message builder) agrees with it, and that alias expansion stays linear.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from relay import recipients
from relay.aliases import MAX_ADDRESSES, expand, parse_alias_file
from relay.config import Config, Mailhub
from relay.envelope import Resolver, parse_recipient_args, validate_address
from relay.errors import DataError
from relay.message import parse
from relay.recipients import (
    Recipient,
    classify,
    dedupe,
    dedupe_key,
    envelope_address,
    idna_domain,
    split_list,
)

DATA = Path(__file__).parent.parent / "data" / "recipients"


def corpus(name: str) -> list[dict[str, Any]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# --- the classifier -------------------------------------------------------------------


@pytest.mark.parametrize("case", corpus("classify.jsonl"), ids=lambda c: repr(c["input"]))
def test_classify_corpus(case: dict[str, Any]) -> None:
    text = case["input"]
    if "error" in case:
        with pytest.raises(DataError) as caught:
            classify(text)
        assert caught.value.exit_code == os.EX_DATAERR
        message = str(caught.value)
        assert case["error"] in message
        assert message.startswith("invalid recipient '")
        assert "\n" not in message and "\r" not in message and "))" not in message
        assert recipients.problem(text) is not None
        return
    found = classify(text)
    assert found.kind == case["kind"]
    assert found.envelope == case["envelope"]
    assert found.header == case["header"]
    assert found.display_name == case.get("display_name", "")
    assert found.needs_smtputf8 == case.get("smtputf8", False)
    assert found.key == (case["envelope"] if found.kind == "address" else found.address)
    assert recipients.problem(text) is None


def test_refusals_say_what_to_do() -> None:
    with pytest.raises(DataError, match=r"as 'Name <address>'$"):
        classify("$(touch x)@example.org")
    with pytest.raises(DataError, match=r"quote the name"):
        classify("a@b.org <c@d.org>")
    with pytest.raises(DataError, match=r"options must come before the recipients"):
        classify("-f")


def test_what_names_the_field() -> None:
    with pytest.raises(DataError, match=r"^invalid To header recipient 'a@'"):
        classify("a@", "To header recipient")


def test_argument_refuses_file_and_pipe() -> None:
    assert recipients.argument("a@x.org").envelope == "a@x.org"
    for target in ("/tmp/mbox", "|cat"):
        with pytest.raises(DataError, match="recipient refused"):
            recipients.argument(target)


def test_recipient_value_and_via() -> None:
    first = classify("Bob <bob@Example.org>")
    again = first.with_via(("team",))
    assert again.via == ("team",) and first.via == ()
    assert (again.envelope, again.header) == (first.envelope, first.header)
    assert again != first and classify("Bob <bob@Example.org>") == first
    assert "bob@example.org" in repr(first)
    assert Recipient("x", "bob", recipients.LOCAL).domain is None
    assert first.domain == "Example.org" and first.local_part == "bob"


def test_non_ascii_display_name_is_written_by_the_email_package() -> None:
    assert classify("Jörg Müller <j@example.de>").header == "Jörg Müller <j@example.de>"
    assert classify('"Jo \\"JJ\\" Smith" <j@x.org>').header == '"Jo \\"JJ\\" Smith" <j@x.org>'


# --- lists ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", corpus("lists.jsonl"), ids=lambda c: repr(c["input"]))
def test_split_list_corpus(case: dict[str, Any]) -> None:
    assert split_list(case["input"]) == case["items"]


def test_split_list_keeps_empty_items_when_asked() -> None:
    assert split_list(",a@x.org", keep_empty=True) == ["", "a@x.org"]
    assert split_list("a@x.org,,b@x.org", keep_empty=True) == ["a@x.org", "", "b@x.org"]


# --- the IDNA encoder and the duplicate key ---------------------------------------------


def test_idna_domain() -> None:
    assert idna_domain("example.org") == "example.org"
    assert idna_domain("bücher.example") == "xn--bcher-kva.example"
    with pytest.raises(DataError, match="cannot be encoded with IDNA"):
        idna_domain("a" * 70 + "ü.example")


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ("bob@Example.org", "bob@example.org", True),
        ("bob@EXAMPLE.ORG", "bob@example.org", True),
        ("u@Bücher.example", "u@xn--bcher-kva.example", True),
        ("Bob@example.org", "bob@example.org", False),  # RFC 5321 2.4: the host decides
        ("bob", "BOB", False),
        ("bob", "bob@example.org", False),
    ],
)
def test_dedupe_key(one: str, other: str, same: bool) -> None:
    assert (dedupe_key(one) == dedupe_key(other)) is same
    assert dedupe_key(envelope_address(one)) == dedupe_key(one)


def test_dedupe_first_wins_and_shares_seen() -> None:
    seen: set[str] = set()
    to = dedupe(["bob@Example.org", "bob@example.org", "Bob@example.org"], seen=seen)
    cc = dedupe([classify("B <bob@EXAMPLE.org>"), classify("c@x.org")], seen=seen)
    assert to == ["bob@Example.org", "Bob@example.org"]
    assert [r.envelope for r in cc] == ["c@x.org"]
    assert dedupe(["x", "y", "x"], key=str.upper) == ["x", "y"]


# --- every reader agrees ----------------------------------------------------------------


def conf(**values: object) -> Config:
    values.setdefault("mailhubs", (Mailhub("h", 25),))
    values.setdefault("hostname", "box.example.net")
    return Config(path="/etc/ssmtp/ssmtp.conf", **values)  # type: ignore[arg-type]


def resolver(aliases: str | None = None) -> Resolver:
    table = parse_alias_file(aliases, "/etc/aliases") if aliases else None
    users = {"root": 0, "bob": 1000}
    return Resolver(
        conf(root="admin@example.org"),
        table,
        getpwnam=lambda name: SimpleNamespace(pw_uid=users[name]),
    )


def test_sendmail_arguments_use_the_classifier() -> None:
    assert parse_recipient_args(["bob@Example.org", "bob@example.org, Bob@example.org"]) == [
        "bob@Example.org",
        "Bob@example.org",
    ]
    with pytest.raises(DataError, match="would change where the mail goes"):
        parse_recipient_args(["$(touch x)@example.org"])
    with pytest.raises(DataError, match="pipe recipient refused"):
        parse_recipient_args(["|cat"])


def test_resolver_dedupes_with_the_key_and_sends_utf8_mailboxes() -> None:
    final = resolver("ops: Bob@EXAMPLE.org, jöran@example.org\n").resolve_all(
        ["bob@example.org", "Bob@example.org", "ops", "bob@Example.ORG"]
    )
    assert final == ["bob@example.org", "Bob@example.org", "jöran@example.org"]


def test_validate_address_accepts_utf8_and_refuses_display_forms() -> None:
    assert validate_address("jöran@example.org") == "jöran@example.org"
    for bad in ("Name <a@x.org>", "a@x.org (c)", "<a@x.org>", "a(b)@x.org"):
        with pytest.raises(DataError):
            validate_address(bad)


def test_t_headers_use_the_classifier() -> None:
    message = parse(
        b'To: "Doe, John" <j@example.org>, Bob <bob@Example.org>\n'
        b"Cc: team: bob@example.org, c@x.org;\nBcc: undisclosed-recipients:;\n\nhi\n"
    )
    assert message.header_recipients() == ["j@example.org", "bob@example.org", "c@x.org"]
    bad = parse(b"To: $(touch x)@example.org\n\nhi\n")
    with pytest.raises(DataError, match="To header recipient"):
        bad.header_recipients()


# --- alias expansion is linear -------------------------------------------------------


def exponential_book(levels: int) -> dict[str, list[str]]:
    book = {f"t{i}": [f"t{i + 1}", f"t{i + 1}"] for i in range(levels)}
    book[f"t{levels}"] = ["a@example.org", "a@Example.ORG", "B@example.org"]
    return book


def test_exponential_alias_tree_is_walked_once_per_name() -> None:
    book = exponential_book(24)
    calls: list[str] = []

    def lookup(name: str) -> list[str] | None:
        calls.append(name)
        return book.get(name)

    started = time.monotonic()
    found = expand(["t0"], lookup)
    assert time.monotonic() - started < 1
    assert [e.address for e in found] == ["a@example.org", "B@example.org"]
    assert found[0].via == tuple(f"t{i}" for i in range(25))
    assert len(calls) <= 2 * len(book) + 3  # not 2**24


def test_loop_still_found_and_named_after_memoising() -> None:
    book = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": ["x@y.org", "c"]}
    with pytest.raises(DataError, match=r"^alias loop: d -> c -> d$"):
        expand(["a"], book.get)


def test_expansion_result_is_capped() -> None:
    book = {"all": [f"u{i}@example.org" for i in range(MAX_ADDRESSES + 1)]}
    with pytest.raises(DataError, match=rf"more than {MAX_ADDRESSES} addresses \(alias all\)"):
        expand(["all"], book.get)
    book = {"all": [f"u{i}@example.org" for i in range(MAX_ADDRESSES)]}
    assert len(expand(["all"], book.get)) == MAX_ADDRESSES


# --- start-up cost -----------------------------------------------------------------------


def test_importing_and_classifying_loads_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import relay.recipients as r\n"
        "x = r.classify('Bob <bob@Example.org>'); x.header; r.classify('a@b.c (d)')\n"
        "r.dedupe(['a@b.c', 'a@B.c']); r.split_list('a@b.c, d@e.f')\n"
        "new = set(sys.modules) - before\n"
        "print(sorted(m for m in new if m.split('.')[0] in "
        "('re', 'typing', 'dataclasses', 'email', 'inspect')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import relay\n" + code],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.decode().strip() == "[]"
