"""mailx.aliasbook: quoting, lossless edits on the corpus, properties, check, show, writing."""

from __future__ import annotations

import difflib
import fcntl
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mailx import aliasbook
from mailx.aliasbook import (
    AliasBook,
    alias_line,
    check,
    edit_file,
    explain,
    final_addresses,
    member_token,
    normalize_member,
    quote_word,
    validate_name,
)
from mailx.mailrc import MailRc, evaluate, is_valid_alias_name, parse, parse_recipient
from relay import CantCreateError, DataError, MissingFileError, NoUserError, RelayError

CORPUS = Path(__file__).parent.parent / "data" / "mailrc"
CASES = sorted(p.stem for p in CORPUS.glob("*.rc"))


def book_of(text: str) -> AliasBook:
    return AliasBook.from_text(text, "t.rc", environ={})


def rc_of(text: str) -> MailRc:
    return evaluate([parse(text, "t.rc")], environ={})


def lines(text: str) -> list[str]:
    """Physical lines with their ends (str.splitlines would also split at \\x0b, \\x1c...)."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


# --- quoting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("someone@example.com", "someone@example.com"),
        ("My Name", "'My Name'"),
        ("O'Brien", "'O'\\''Brien'"),
        ("a$b", "'a$b'"),
        ("#x", "'#x'"),
        ("x#", "'x#'"),
        ("Jörg", "Jörg"),
        ("", "''"),
        ("a\nb", "$'a\\x0ab'"),
        ("caf\udce9", "$'caf\\xe9'"),
    ],
)
def test_quote_word(text: str, quoted: str) -> None:
    assert quote_word(text) == quoted


@settings(max_examples=400, deadline=None)
@given(
    st.text(
        st.one_of(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            st.sampled_from(["\udc80", "\udce9", "\udcff"]),  # bytes that were not UTF-8
        ),
        max_size=30,
    )
)
def test_quote_word_round_trips_through_the_parser(text: str) -> None:
    rc = parse(f"alias n {quote_word(text)} tail\n", "t.rc")
    (statement,) = rc.statements
    words = [w.expand(lambda name: "") for w in statement.words]
    assert words == ["n", text, "tail"]


def test_archwiki_form_is_written_and_read_back() -> None:
    member = normalize_member("My Name <someone@example.com>")
    assert member == "My Name<someone@example.com>"
    assert alias_line("archuser", [member]) == "alias archuser 'My Name'<someone@example.com>"
    rc = rc_of(alias_line("archuser", [member]) + "\n")
    assert final_addresses(rc, "archuser") == ["My Name <someone@example.com>"]


@pytest.mark.parametrize(
    ("given_", "member", "token"),
    [
        ("a@x.org", "a@x.org", "a@x.org"),
        ("<a@x.org>", "a@x.org", "a@x.org"),
        ("A, B <ab@x.org>", "A, B<ab@x.org>", "'A, B'<ab@x.org>"),
        (
            '"Jo \\"JJ\\" Smith" <j@x.org>',
            '"Jo \\"JJ\\" Smith" <j@x.org>',
            '\'"Jo \\"JJ\\" Smith" <j@x.org>\'',
        ),
        ("bob", "bob", "bob"),
        ("\\bob", "\\bob", "'\\bob'"),
        ('"a b"@x.org', '"a b"@x.org', "'\"a b\"@x.org'"),
    ],
)
def test_normalize_member_and_token(given_: str, member: str, token: str) -> None:
    assert normalize_member(given_) == member
    assert member_token(member) == token


@pytest.mark.parametrize(
    "bad", ["a@x.org, b@x.org", "x y", "a@x.org\r\nBcc: e@x.org", "|cat", "/tmp/f", "a@", ""]
)
def test_normalize_member_refuses(bad: str) -> None:
    with pytest.raises(DataError) as caught:
        normalize_member(bad)
    assert caught.value.exit_code == 65


@pytest.mark.parametrize("bad", ["my team", "-x", "", "a\nb", "x;y"])
def test_validate_name_refuses(bad: str) -> None:
    with pytest.raises(DataError):
        validate_name(bad)


_DISPLAY = st.text(
    st.sampled_from(list("abc XYZ,.'\"\\<>()#$;:!é日")), min_size=1, max_size=16
).filter(lambda s: s.strip() != "")
_LOCAL = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,8}[a-z0-9]", fullmatch=True).filter(
    lambda s: ".." not in s
)


@settings(max_examples=300, deadline=None)
@given(_DISPLAY, _LOCAL)
def test_any_display_name_round_trips(display: str, local: str) -> None:
    from email.headerregistry import Address

    addr = f"{local}@example.com"
    header = str(Address(display_name=display, addr_spec=addr))
    written = alias_line("n", [normalize_member(header)])
    (recipient,) = [parse_recipient(m.text) for m in rc_of(written + "\n").aliases["n"]]
    assert recipient.envelope == addr
    assert recipient.header == str(Address(display_name=" ".join(display.split()), addr_spec=addr))


# --- edits on the corpus --------------------------------------------------------------


def corpus(case: str) -> str:
    return (CORPUS / f"{case}.rc").read_bytes().decode("utf-8", "surrogateescape")


def about_lines(book: AliasBook, name: str) -> set[int]:
    """0-based physical lines of the logical lines holding statements about `name`."""
    found: set[int] = set()
    for command in book.state.commands:
        if name in command.args[:1] or (command.kind == "unalias" and name in command.args):
            line = book.rc.lines[command.statement.logical]
            found.update(range(line.first - 1, line.last))
    return found


def assert_only(old: str, new: str, allowed: set[int], name: str) -> None:
    """Every changed old line is in `allowed`; every purely added line defines `name`."""
    a, b = lines(old), lines(new)
    if a and not a[-1].endswith("\n") and new.startswith(old + "\n"):
        a[-1] = b[len(a) - 1]  # the last line only gained the newline an addition needs
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        assert set(range(i1, i2)) <= allowed, (tag, a[i1:i2], b[j1:j2])
        if i1 == i2:
            for added in b[j1:j2]:
                if not added.strip():
                    continue  # the blank line that ends a dangling continuation
                (statement,) = parse(added, "x").statements
                assert statement.kind == "alias"
                assert statement.words[0].expand(lambda n: "") == name


@pytest.mark.parametrize("case", CASES)
def test_corpus_add_new_alias(case: str) -> None:
    old = corpus(case)
    book = book_of(old)
    members = [normalize_member("New Person <new@example.com>"), "other@example.com"]
    new = book.add("zz-new", members)
    expected = book.table() | {"zz-new": members}
    assert book_of(new).table() == expected
    assert_only(old, new, set(), "zz-new")
    assert new.startswith(old[: len(old) - len(old.lstrip())])  # nothing before is touched
    if old and not old.endswith("\n"):
        assert new.startswith(old)  # no final newline: the old bytes stay a prefix


@pytest.mark.parametrize("case", CASES)
def test_corpus_append_to_each_alias(case: str) -> None:
    old = corpus(case)
    book = book_of(old)
    for name, members in book.table().items():
        new = book.add(name, ["appended@example.com"])
        assert book_of(new).table() == book.table() | {name: [*members, "appended@example.com"]}
        assert_only(old, new, set(), name)


@pytest.mark.parametrize("case", CASES)
def test_corpus_replace_each_alias(case: str) -> None:
    old = corpus(case)
    book = book_of(old)
    for name in book.table():
        new = book.add(name, ["only@example.com"], replace=True)
        assert book_of(new).table() == book.table() | {name: ["only@example.com"]}
        assert_only(old, new, about_lines(book, name), name)


@pytest.mark.parametrize("case", CASES)
def test_corpus_remove_each_alias(case: str) -> None:
    old = corpus(case)
    book = book_of(old)
    for name in book.names():
        new = book.remove(name)
        expected = {k: v for k, v in book.table().items() if k != name}
        assert book_of(new).table() == expected
        assert_only(old, new, about_lines(book, name), name)
        assert len(new) < len(old)


@pytest.mark.parametrize("case", CASES)
def test_corpus_rename_each_alias(case: str) -> None:
    old = corpus(case)
    book = book_of(old)
    for name in book.names():
        if not is_valid_alias_name(name):
            with pytest.raises(DataError, match="invalid name"):
                book.rename(name, "renamed_x")
            continue
        new = book.rename(name, "renamed_x")
        table = book.table()
        expected = {("renamed_x" if k == name else k): v for k, v in table.items()}
        assert book_of(new).table() == expected
        assert_only(old, new, about_lines(book, name), "renamed_x")


def test_corpus_cases_with_byte_quirks_keep_them() -> None:
    crlf = book_of(corpus("crlf")).add("n", ["n@example.com"])
    assert "alias n n@example.com\r\n" in crlf
    assert crlf.count("\r\n") == crlf.count("\n")
    bare = book_of(corpus("no-final-newline")).add("n", ["n@example.com"])
    assert bare == corpus("no-final-newline") + "\nalias n n@example.com"
    latin = book_of(corpus("latin1-bytes")).add("n", ["n@example.com"])
    assert latin.encode("utf-8", "surrogateescape").startswith(
        (CORPUS / "latin1-bytes.rc").read_bytes()
    )


# --- edit details ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("alias a x@e.org; alias b y@e.org # c\n", "a", "alias b y@e.org # c\n"),
        ("alias a x@e.org; alias b y@e.org # c\n", "b", "alias a x@e.org # c\n"),
        ("alias a x@e.org; alias b y@e.org; set q=1\n", "b", "alias a x@e.org; set q=1\n"),
        ("set a=1\nalias ops a@e.org \\\n   b@e.org # c\nset b=2\n", "ops", "set a=1\nset b=2\n"),
        ("alias x 'oops\nalias a x@e.org\nfrob\n", "a", "alias x 'oops\nfrob\n"),
        (
            "alias a x@e.org\nalias b y@e.org\nunalias b a  c\nalias a z@e.org\n",
            "a",
            "alias b y@e.org\nunalias b c\n",
        ),
        ("alias a x@e.org\nunalias a\n", "a", ""),
        ("set x=1\nalias a x@e.org", "a", "set x=1\n"),
    ],
)
def test_remove_cases(old: str, name: str, new: str) -> None:
    assert book_of(old).remove(name) == new


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            "alias a x@e.org\nset y=1\nalias b z@e.org\n",
            "alias a x@e.org\nalias a w@e.org\nset y=1\nalias b z@e.org\n",
        ),
        (
            "alias a x@e.org\nunalias a\nset y=1\n",
            "alias a x@e.org\nunalias a\nset y=1\nalias a w@e.org\n",
        ),
        ("if r\nalias a x@e.org\nendif\n", "if r\nalias a x@e.org\nendif\nalias a w@e.org\n"),
        ("set x=1\n# comment \\\n", "set x=1\n# comment \\\n\nalias a w@e.org\n"),
        ("alias b x@e.org \\", "alias b x@e.org \\\n\nalias a w@e.org"),
        ("alias b x@e.org\nunalias *\n", "alias b x@e.org\nunalias *\nalias a w@e.org\n"),
        ("", "alias a w@e.org\n"),
    ],
)
def test_append_positions(old: str, new: str) -> None:
    assert book_of(old).add("a", ["w@e.org"]) == new


def test_replace_goes_where_the_first_definition_was() -> None:
    old = "# top\nalias a x@e.org\nset y=1\nalias a q@e.org\nunalias a b\n"
    assert book_of(old).add("a", ["w@e.org"], replace=True) == (
        "# top\nalias a w@e.org\nset y=1\nunalias b\n"
    )


def test_add_skips_members_already_there() -> None:
    old = "alias a x@e.org\n"
    assert book_of(old).add("a", ["X <x@E.ORG>"]) == old
    assert book_of(old).add("a", ["x@e.org", "y@e.org", "y@e.org"]) == old + "alias a y@e.org\n"


def test_rename_renames_definitions_and_unalias_only() -> None:
    old = "alias a x@e.org\nunalias a\nalias 'a' z@e.org\nalias t a\n"
    assert book_of(old).rename("a", "bee") == (
        "alias bee x@e.org\nunalias bee\nalias bee z@e.org\nalias t a\n"
    )


def test_rename_refusals() -> None:
    book = book_of("alias a x@e.org\nalias b y@e.org\nalias t c\nalias c2 t\n")
    with pytest.raises(DataError, match="already exists"):
        book.rename("a", "b")
    with pytest.raises(DataError, match="loop"):
        book.rename("c2", "c")
    with pytest.raises(NoUserError) as caught:
        book.rename("aa", "z")
    assert caught.value.hint == "did you mean: a?"


def test_edits_refuse_new_loops_but_keep_old_ones() -> None:
    with pytest.raises(DataError, match=r"alias loop: a -> b -> a"):
        book_of("alias a b\n").add("b", ["a"])
    looping = book_of("alias a b\nalias b a\n")
    assert "alias c c@e.org" in looping.add("c", ["c@e.org"])
    assert "alias x" in looping.rename("a", "x")


def test_remove_missing_suggests_close_names() -> None:
    with pytest.raises(NoUserError) as caught:
        book_of("alias archuser a@e.org\nalias archive b@e.org\n").remove("archusr")
    assert caught.value.exit_code == 67
    assert caught.value.hint == "did you mean: archuser?"


def test_verification_catches_an_edit_that_would_change_other_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    book = book_of("alias a x@e.org\nset q=1\n")

    def sloppy(_self: AliasBook, _name: str) -> list[object]:
        return [aliasbook._Edit(0, len(book.text), "")]

    monkeypatch.setattr(AliasBook, "_removal", sloppy)
    with pytest.raises(RelayError, match="internal error") as caught:
        book.remove("a")
    assert caught.value.exit_code == 70


# --- property: parsing the edited file gives the intended table -----------------------

NAMES = ["a", "b", "team", "ops-1", "x.y", "Bob", "z$"]
ADDRESSES = [
    "a@example.com",
    "My Name <someone@example.com>",
    "O'Brien, Pat <pat@example.org>",
    '"Jo \\"JJ\\" Smith" <jo@example.net>',
    "Jörg Müller <jm@example.de>",
    "dollar$sign@example.com",
    "hash#tag@example.com",
    "localuser",
]
NOISE = [
    "# a comment",
    "   # indented comment",
    "",
    'set from="Host <h@example.com>"',
    "set sendcharsets=utf-8,iso-8859-1 nosave",
    "retain date from to subject",
    "# continued comment \\\n   still comment",
    "if r\n  set folder=mail\nendif",
    "alias 'broken name' x@example.com",
    "alias unterminated 'x@example.com",
    "frobnicate",
]


@st.composite
def alias_file(draw: st.DrawFn) -> tuple[str, dict[str, list[str]], list[str]]:
    """(text, the alias table it defines, its noise lines in order)."""
    model: dict[str, list[str]] = {}
    pieces: list[str] = []
    noise: list[str] = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            line = draw(st.sampled_from(NOISE))
            pieces.append(line)
            noise.append(line)
            continue
        name = draw(st.sampled_from(NAMES))
        members = draw(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3, unique=True))
        normal = [normalize_member(m) for m in members]
        style = draw(st.sampled_from(["plain", "group", "continued", "comment"]))
        line = alias_line(name, normal)
        if style == "group":
            line = "group" + line[len("alias") :]
        elif style == "continued":
            head, _, tail = line.rpartition(" ")
            line = f"{head} \\\n    {tail}"
        elif style == "comment":
            line += "   # why"
        pieces.append(line)
        model.setdefault(name, []).extend(normal)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(p.replace("\n", newline) for p in pieces)
    if pieces and draw(st.booleans()):
        text += newline
    return text, model, [n.replace("\n", newline) for n in noise]


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.sampled_from(NAMES),
            st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3),
            st.booleans(),
        ),
        st.tuples(st.just("remove"), st.sampled_from(NAMES)),
        st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    ),
    max_size=6,
)


def is_subsequence(parts: list[str], text: str) -> bool:
    position = 0
    for part in parts:
        found = text.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return True


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alias_file(), OPS)
def test_edits_give_the_intended_alias_table(
    spec: tuple[str, dict[str, list[str]], list[str]], ops: list[tuple[object, ...]]
) -> None:
    text, model, noise = spec
    assume(not any("\r" in n for n in noise) or "\r\n" in text)
    assert book_of(text).table() == model
    for op in ops:
        book = book_of(text)
        if op[0] == "add":
            _, name, members, replace = op
            assert isinstance(name, str) and isinstance(members, list)
            normal = [normalize_member(m) for m in members]
            text = book.add(name, normal, replace=bool(replace))
            unique = list(dict.fromkeys(normal))
            if replace or name not in model:
                model[name] = unique
            else:
                model[name] = model[name] + [m for m in unique if m not in model[name]]
        elif op[0] == "remove":
            name = str(op[1])
            if not book.definitions(name):
                with pytest.raises(NoUserError):
                    book.remove(name)
                continue
            text = book.remove(name)
            model.pop(name, None)
        else:
            old, new = str(op[1]), str(op[2])
            if not book.definitions(old):
                with pytest.raises(NoUserError):
                    book.rename(old, new)
                continue
            if old != new and book.definitions(new):
                with pytest.raises(DataError):
                    book.rename(old, new)
                continue
            text = book.rename(old, new)
            if old in model:
                model[new] = model.pop(old)
        assert book_of(text).table() == model
        assert is_subsequence(noise, text)


# --- check and show -------------------------------------------------------------------


def test_check_reports_each_kind_of_problem() -> None:
    text = (
        "alias a b\n"  # 1 loop a -> b -> a
        "alias b a\n"  # 2
        "alias team alice@x.org typo root\n"  # 3 undefined typo, root is an account
        "alias root admin@x.org\n"  # 4 shadows the account root
        "alias dup d@x.org 'D'<d@X.ORG>\n"  # 5 duplicate
        "alias save /tmp/mbox '|cat'\n"  # 6 file and pipe
        "alias bad 'x y'\n"  # 7 invalid member (a parse diagnostic)
        "bogus\n"  # 8 unknown command
        "alias teem t@x.org\n"  # 9 (for the suggestion)
        "alias self self self@x.org\n"  # 10 fine
        "alias esc \\\\nobody\n"  # 11 fine: escaped on purpose
    )
    accounts = {"root", "nobody"}
    found = [str(f) for f in check(rc_of(text), is_account=accounts.__contains__)]
    assert found == [
        "t.rc:1: error: alias loop: a -> b -> a",
        "t.rc:3: error: alias 'team': 'typo' is neither an alias nor a local account",
        "t.rc:4: warning: alias 'root' shadows the local account 'root'",
        "t.rc:5: warning: alias 'dup': duplicate member 'D<d@X.ORG>' (also at t.rc:5)",
        "t.rc:6: error: alias 'save': file target '/tmp/mbox' is refused by mail",
        "t.rc:6: error: alias 'save': pipe target '|cat' is refused by mail",
        "t.rc:7: error: alias bad: invalid member 'x y': not a valid address or local name",
        "t.rc:8: error: unknown command 'bogus'",
    ]


def test_check_clean_file() -> None:
    rc = rc_of("alias archuser 'My Name'<someone@example.com>\nalias team archuser b@x.org\n")
    assert check(rc, is_account=lambda name: False) == []


def test_check_local_account_member_is_a_warning() -> None:
    rc = rc_of("alias admins root\n")
    (finding,) = check(rc, is_account=lambda name: name == "root")
    assert finding.severity == "warning"
    assert "the relay must resolve it" in finding.message


def test_check_suggests_close_alias_names() -> None:
    rc = rc_of("alias opss opss-x\nalias all opss-x\nalias ops-x x@x.org\n")
    first, second = check(rc, is_account=lambda name: False)
    assert first.message.endswith("did you mean: ops-x?")  # never the alias itself
    assert second.message.endswith("did you mean: ops-x, opss?")


def test_explain_tree() -> None:
    rc = rc_of("alias ops alice@x.org\nalias team ops 'Carol C'<carol@x.org> \\\\ops dave team\n")
    tree = explain(rc, "team")
    assert (tree.text, tree.kind, tree.line) == ("team", "alias", 2)
    assert [(s.text, s.kind, s.line) for s in tree.children] == [
        ("ops", "alias", 2),
        ("Carol C <carol@x.org>", "address", 2),
        ("ops", "escaped", 2),
        ("dave", "local", 2),
        ("team", "self", 2),
    ]
    assert [(s.text, s.line) for s in tree.children[0].children] == [("alice@x.org", 1)]


def test_explain_shows_each_alias_once_so_big_trees_stay_small() -> None:
    text = "".join(f"alias t{i} t{i + 1} t{i + 1}\n" for i in range(24))
    rc = rc_of(text + "alias t24 a@example.org\n")
    tree = explain(rc, "t0")
    depth = 0
    while tree.children and tree.children[0].kind == "alias":
        assert [c.kind for c in tree.children] == ["alias", "repeat"]
        tree = tree.children[0]
        depth += 1
    assert depth == 24
    assert [(c.text, c.kind) for c in tree.children] == [("a@example.org", "address")]
    assert final_addresses(rc, "t0") == ["a@example.org"]


def test_explain_marks_loops() -> None:
    rc = rc_of("alias a b\nalias b a\n")
    tree = explain(rc, "a")
    assert tree.children[0].children[0].kind == "loop"
    with pytest.raises(DataError, match="alias loop"):
        final_addresses(rc, "a")


# --- writing --------------------------------------------------------------------------


def append(member: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        return book_of(text).add("a", [member])

    return change


def test_edit_file_keeps_bytes_mode_and_owner(tmp_path: Path) -> None:
    path = tmp_path / "mail.rc"
    path.write_bytes(b"# keep\r\nset x=1\r\nalias a x@e.org\r\nretain from")
    path.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    before = path.stat()
    assert edit_file(str(path), append("y@e.org"))
    after = path.stat()
    assert (
        path.read_bytes()
        == b"# keep\r\nset x=1\r\nalias a x@e.org\r\nalias a y@e.org\r\nretain from"
    )
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert after.st_ino != before.st_ino  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mail.rc"]


def test_edit_file_without_a_change_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "mail.rc"
    path.write_text("alias a y@e.org\n")
    inode = path.stat().st_ino
    assert not edit_file(str(path), append("y@e.org"))
    assert path.stat().st_ino == inode


def test_edit_file_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "mailrc"
    target.parent.mkdir()
    target.write_text("alias a x@e.org\n")
    link = tmp_path / ".mailrc"
    link.symlink_to(target)
    edit_file(str(link), append("y@e.org"))
    assert link.is_symlink()
    assert target.read_text() == "alias a x@e.org\nalias a y@e.org\n"


def test_edit_file_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "new.rc"
    old = os.umask(0o027)
    try:
        edit_file(str(path), append("y@e.org"))
    finally:
        os.umask(old)
    assert path.read_text() == "alias a y@e.org\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with pytest.raises(NoUserError):
        edit_file(str(tmp_path / "other.rc"), append("y@e.org"), create=False)


def test_edit_file_leaves_the_file_untouched_on_refusal(tmp_path: Path) -> None:
    path = tmp_path / "mail.rc"
    path.write_text("alias a b\n")
    inode = path.stat().st_ino

    def loop(text: str) -> str:
        return book_of(text).add("b", ["a"])

    with pytest.raises(DataError):
        edit_file(str(path), loop)
    assert path.read_text() == "alias a b\n"
    assert path.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mail.rc"]


def test_edit_file_without_create_on_a_missing_file_says_which(tmp_path: Path) -> None:
    path = tmp_path / "none.rc"
    with pytest.raises(MissingFileError) as caught:
        edit_file(str(path), append("y@e.org"), create=False)
    assert (caught.value.path, caught.value.exit_code) == (str(path), 67)
    assert not path.exists()


def test_check_reports_a_loop_once_whichever_alias_enters_it() -> None:
    found = [str(f) for f in check(rc_of("alias c a\nalias b c\nalias a b\nalias t b\n"))]
    assert found == ["t.rc:1: error: alias loop: a -> b -> c -> a"]


def test_edit_file_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mail.rc"
    path.write_text("alias a x@e.org\n")
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(CantCreateError) as caught:
        edit_file(str(path), append("y@e.org"))
    assert caught.value.exit_code == 73
    assert caught.value.path == str(path)
    assert path.read_text() == "alias a x@e.org\n"


def test_edit_file_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CantCreateError) as caught:
        edit_file(str(tmp_path / "no" / "mail.rc"), append("y@e.org"))
    assert caught.value.exit_code == 73


def test_edit_file_write_failure_removes_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mail.rc"
    path.write_text("alias a x@e.org\n")

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(RelayError) as caught:
        edit_file(str(path), append("y@e.org"))
    assert caught.value.exit_code == 74
    assert path.read_text() == "alias a x@e.org\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mail.rc"]


def test_concurrent_threads_all_land(tmp_path: Path) -> None:
    path = tmp_path / "mail.rc"
    path.write_text("# shared\n")
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        try:
            edit_file(str(path), lambda text: book_of(text).add(f"u{number}", [f"u{number}@e.org"]))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(book_of(path.read_text()).table()) == {f"u{n}" for n in range(20)}


def flock_waiter_on(inode: int) -> bool:
    """Whether a flock request on `inode` is blocked, waiting for another's lock."""
    with open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()
            if "->" in fields and "FLOCK" in fields and fields[-3].endswith(f":{inode}"):
                return True
    return False


def test_a_writer_that_waited_on_a_replaced_file_starts_again(tmp_path: Path) -> None:
    """The lock is on the inode; after someone renames a new file in, the waiting writer
    must notice and lock the new file, or it would overwrite the other change."""
    path = tmp_path / "mail.rc"
    path.write_text("alias a x@e.org\n")
    holder = os.open(path, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    done = threading.Event()

    def waiting_writer() -> None:
        edit_file(str(path), append("late@e.org"))
        done.set()

    thread = threading.Thread(target=waiting_writer)
    thread.start()
    # Replace the file only once the writer waits for our lock on the old inode: the
    # kernel lists that request as a blocked one ("->") in /proc/locks.
    inode = os.fstat(holder).st_ino
    deadline = time.monotonic() + 10
    while not flock_waiter_on(inode):
        assert time.monotonic() < deadline, "the writer never waited for the lock"
        time.sleep(0.005)
    assert not done.is_set()  # blocked on our lock
    replacement = tmp_path / "replacement"
    replacement.write_text("alias a x@e.org\nalias other o@e.org\n")
    os.replace(replacement, path)
    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    thread.join(5)
    assert done.is_set()
    assert book_of(path.read_text()).table() == {
        "a": ["x@e.org", "late@e.org"],
        "other": ["o@e.org"],
    }


def test_json_corpus_descriptions_exist() -> None:
    for case in CASES:
        assert json.loads((CORPUS / f"{case}.json").read_text())["description"]
