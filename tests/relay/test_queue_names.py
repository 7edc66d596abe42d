"""relay.queue's names: the entry-name scanner against the regular expression it replaced,
and `sorted_names` (the streamed, sorted listing a flush and `mailq` walk) against
`sorted(os.listdir())`, including a directory that changes while it is walked."""

from __future__ import annotations

import os
import re
import string
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.queue import is_entry_name, new_id, sorted_names

#: What relay/queue.py matched entry names with before the scanner (`^...$` there; `$`
#: also matched before a final newline, which no directory entry made by us has).
ID_PATTERN = re.compile(r"[0-9]{14}\.[0-9]{6}\.[0-9]+\.[0-9a-f]{6}")


def _digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=low, max_size=high)


#: Near misses as well as hits: each part right or slightly off, joined by dots or not.
_PART = st.one_of(
    _digits(0, 16),
    st.text(alphabet="0123456789abcdefABCDEFg", min_size=0, max_size=8),
    st.text(alphabet="0123456789٠١２", min_size=1, max_size=15),  # other scripts' digits
)
_NEARLY = st.builds(
    lambda parts, seps: "".join(p + s for p, s in zip(parts, seps, strict=False)) + parts[-1],
    st.lists(_PART, min_size=1, max_size=5),
    st.lists(st.sampled_from([".", ".", ".", "", "-", "\n"]), min_size=4, max_size=4),
)
_VALID = st.builds(
    lambda a, b, c, d: f"{a}.{b}.{c}.{d}",
    _digits(14, 14),
    _digits(6, 6),
    _digits(1, 7),
    st.text(alphabet="0123456789abcdef", min_size=6, max_size=6),
)


@settings(max_examples=600)
@given(st.one_of(_VALID, _NEARLY, st.text(max_size=40)))
def test_is_entry_name_agrees_with_the_regular_expression(name: str) -> None:
    assert is_entry_name(name) == (ID_PATTERN.fullmatch(name) is not None)


def test_is_entry_name_examples() -> None:
    assert is_entry_name(new_id(1_700_000_000.25))
    assert is_entry_name("20260101000000.000000.1.abcdef")
    for bad in (
        "20260101000000.000000.1.abcdef\n",
        "20260101000000.000000..abcdef",
        "20260101000000.000000.1.ABCDEF",
        "2026010100000.000000.1.abcdef",
        "20260101000000.000000.1.abcdef.done",
        "２0260101000000.000000.1.abcdef",
        "notes.txt",
        "",
    ):
        assert not is_entry_name(bad), bad


_NAME = st.text(alphabet=string.ascii_lowercase + string.digits + ".", min_size=1, max_size=12)
_NAMES = st.sets(_NAME.filter(lambda n: n not in (".", "..")), max_size=60)


def _populate(where: str, names: set[str]) -> int:
    for name in names:
        Path(where, name).touch()
    return os.open(where, os.O_RDONLY | os.O_DIRECTORY)


@settings(max_examples=120, deadline=None)
@given(_NAMES, st.integers(min_value=1, max_value=7), st.booleans())
def test_sorted_names_is_sorted_listdir(names: set[str], per_pass: int, snapshot: bool) -> None:
    with tempfile.TemporaryDirectory() as where:
        fd = _populate(where, names)
        try:
            got = list(sorted_names(fd, per_pass=per_pass, snapshot=snapshot))
        finally:
            os.close(fd)
    assert got == sorted(names)


@settings(max_examples=80, deadline=None)
@given(_NAMES, st.integers(min_value=1, max_value=5), st.data())
def test_sorted_names_while_the_directory_changes(
    names: set[str], per_pass: int, data: st.DataObject
) -> None:
    """Removing what was yielded (a flush) and adding names meanwhile: none twice, every
    name there throughout exactly once, nothing added after the first pass with
    `snapshot`."""
    with tempfile.TemporaryDirectory() as where:
        fd = _populate(where, names)
        seen: list[str] = []
        added: set[str] = set()
        try:
            for name in sorted_names(fd, per_pass=per_pass, snapshot=True):
                seen.append(name)
                if data.draw(st.booleans()):
                    os.unlink(os.path.join(where, name))
                if data.draw(st.booleans()):
                    new = "~" + data.draw(st.text(alphabet="xyz", min_size=1, max_size=4))
                    Path(where, new).touch()  # "~" sorts after every original name
                    added.add(new)
        finally:
            os.close(fd)
    assert len(seen) == len(set(seen))
    assert seen == sorted(names)  # everything there from the start, once, in order
    assert not added & set(seen)


def test_sorted_names_holds_one_pass(tmp_path: Path) -> None:
    """The memory claim: a walk holds the names of a pass (at most 2 x per_pass), not
    the directory's: its peak allocation stays far below one list of all the names."""
    import tracemalloc

    for number in range(5000):
        (tmp_path / f"20260101000000.{number:06d}.1.abcdef").touch()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        tracemalloc.start()
        everything = sorted(os.listdir(fd))
        _, whole = tracemalloc.get_traced_memory()
        del everything
        tracemalloc.reset_peak()
        count, last = 0, ""
        for name in sorted_names(fd, per_pass=50):
            assert name > last
            count, last = count + 1, name
        _, walked = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        os.close(fd)
    assert count == 5000
    assert walked < whole / 10, (walked, whole)
