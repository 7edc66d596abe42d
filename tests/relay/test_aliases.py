"""relay.aliases: the aliases file and the loop-detecting expander."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from relay.aliases import MAX_DEPTH, expand, parse_alias_file
from relay.errors import AliasLoopError, ConfigError, DataError


def table(**entries: Sequence[str]) -> dict[str, Sequence[str]]:
    return entries


def addresses(names: list[str], entries: dict[str, Sequence[str]]) -> list[str]:
    return [item.address for item in expand(names, entries.get)]


def test_nested_groups_expand_in_order_without_duplicates() -> None:
    entries = table(ops=["alice", "bob@x.org"], alice=["alice@x.org"], all=["ops", "alice"])
    assert addresses(["all"], entries) == ["alice@x.org", "bob@x.org"]


def test_via_records_the_chain() -> None:
    result = expand(["all"], table(all=["ops"], ops=["a@x.org"]).get)
    assert result[0].via == ("all", "ops")


def test_self_reference_is_the_name_itself() -> None:
    assert addresses(["john"], table(john=["john", "john@x.org"])) == ["john", "john@x.org"]


def test_backslash_stops_expansion() -> None:
    assert addresses(["a"], table(a=["\\b"], b=["b@x.org"])) == ["b"]


def test_loop_is_refused_naming_the_cycle() -> None:
    with pytest.raises(DataError, match=r"alias loop: a -> b -> c -> a") as caught:
        expand(["a"], table(a=["b"], b=["c"], c=["a"]).get)
    # The cycle as data, for callers that compare loops (mail-alias check).
    assert isinstance(caught.value, AliasLoopError)
    assert caught.value.cycle == ("a", "b", "c", "a")


def test_a_loop_entered_midway_names_only_the_cycle() -> None:
    with pytest.raises(AliasLoopError) as caught:
        expand(["team"], table(team=["a"], a=["b"], b=["a"]).get)
    assert caught.value.cycle == ("a", "b", "a")
    assert caught.value.exit_code == 65


def test_depth_is_bounded() -> None:
    entries = {f"n{i}": [f"n{i + 1}"] for i in range(MAX_DEPTH + 5)}
    with pytest.raises(DataError, match="deeper than"):
        expand(["n0"], entries.get)


def test_alias_file_format() -> None:
    parsed = parse_alias_file(
        "# comment\nRoot: ops@x.org, boss@x.org\n\nops: a@x.org,\n  b@x.org\n"
        "root: extra@x.org\ndefault: catchall@x.org\n",
        "/etc/aliases",
    )
    assert parsed.lookup("root") == ("ops@x.org", "boss@x.org", "extra@x.org")
    assert parsed.lookup("ROOT") == parsed.lookup("root")
    assert parsed.lookup("ops") == ("a@x.org", "b@x.org")
    assert parsed.default == ("catchall@x.org",)
    assert parsed.lookup("nobody") is None


@pytest.mark.parametrize(("text", "line"), [("bad line\n", 1), ("# c\nempty:\n", 2)])
def test_alias_file_errors_have_lines(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_alias_file(text, "/etc/aliases")
    assert caught.value.line == line
