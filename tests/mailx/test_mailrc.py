"""mailx.mailrc: s-nail quoting, lines, commands, evaluation, recipients, expansion."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailx import mailrc
from mailx.mailrc import (
    MailRc,
    default_rc_paths,
    evaluate,
    expand_recipients,
    home_directory,
    is_valid_alias_name,
    load,
    member_problem,
    parse,
    parse_recipient,
    read_rc,
    system_rc_path,
    user_rc_path,
)
from relay import DataError

CORPUS = Path(__file__).parent.parent / "data" / "mailrc"
CASES = sorted(p.stem for p in CORPUS.glob("*.rc"))


def table(rc: MailRc) -> dict[str, list[str]]:
    return {name: [m.text for m in members] for name, members in rc.aliases.items()}


def rc_of(text: str, **kwargs: object) -> MailRc:
    return evaluate([parse(text, "t.rc")], environ={}, **kwargs)  # type: ignore[arg-type]


# --- the corpus -----------------------------------------------------------------------


def test_corpus_is_there() -> None:
    assert len(CASES) >= 25
    assert "archwiki" in CASES


@pytest.mark.parametrize("case", CASES)
def test_corpus(case: str) -> None:
    expected = json.loads((CORPUS / f"{case}.json").read_text())
    rc = evaluate([read_rc(str(CORPUS / f"{case}.rc"))], environ={})
    assert table(rc) == expected["aliases"]
    assert rc.variables == expected["variables"]
    got = [(d.line, d.message) for d in rc.diagnostics]
    assert len(got) == len(expected["diagnostics"]), got
    for (line, message), (want_line, fragment) in zip(got, expected["diagnostics"], strict=True):
        assert line == want_line, got
        assert fragment in message, got


SNAIL = shutil.which("s-nail")
SNAIL_CASES = [c for c in CASES if json.loads((CORPUS / f"{c}.json").read_text())["snail"]]


@pytest.mark.skipif(SNAIL is None, reason="s-nail is not installed (apt-get install s-nail)")
@pytest.mark.parametrize("case", SNAIL_CASES)
def test_corpus_against_real_snail(case: str, tmp_path: Path) -> None:
    """s-nail sends each alias to exactly the envelope recipients we compute; except an
    alias with a member its `alias` command refused, which s-nail sends to the rest of
    the group and we refuse whole (65), so that nobody is silently left out."""
    assert SNAIL is not None
    record = tmp_path / "argv"
    mta = tmp_path / "mta"
    mta.write_text(
        '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$RECORD"\ncat >/dev/null\n'
    )
    mta.chmod(0o755)
    rc = evaluate([read_rc(str(CORPUS / f"{case}.rc"))], environ={})
    expected = json.loads((CORPUS / f"{case}.json").read_text())
    for name in expected["aliases"]:
        if name in rc.rejected:
            with pytest.raises(DataError, match="refused when the alias was read") as caught:
                expand_recipients([name], rc)
            assert caught.value.exit_code == 65
            continue
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "LC_ALL": "C.UTF-8",
            "MAILX_NO_SYSTEM_RC": "1",
            "MAILRC": str(CORPUS / f"{case}.rc"),
            "RECORD": str(record),
        }
        subprocess.run(
            [SNAIL, "-S", f"mta={mta}", "-S", "sendwait", "-s", "x", name],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            cwd=tmp_path,
            check=False,
            timeout=30,
        )
        argv = record.read_text().splitlines()
        theirs = argv[argv.index("--") + 1 :]
        ours = [r.envelope for r in expand_recipients([name], rc)]
        assert ours == theirs, name


# --- lines ----------------------------------------------------------------------------


def test_logical_lines_record_physical_spans() -> None:
    text = "# c\nalias a x@e.com \\\n   y@e.com\n\nset q=1"
    rc = parse(text, "t.rc")
    spans = [(ln.first, ln.last, text[ln.start : ln.end]) for ln in rc.lines]
    assert spans == [
        (1, 1, "# c\n"),
        (2, 3, "alias a x@e.com \\\n   y@e.com\n"),
        (4, 4, "\n"),
        (5, 5, "set q=1"),
    ]
    alias, assignment = rc.statements
    assert (alias.line, alias.logical) == (2, 1)
    assert text[alias.start : alias.end] == "alias a x@e.com \\\n   y@e.com"
    assert [text[w.start : w.end] for w in alias.words] == ["a", "x@e.com", "y@e.com"]
    assert text[assignment.start : assignment.end] == "set q=1"


def test_word_offsets_cover_their_quoted_source() -> None:
    text = "alias archuser 'My Name'<someone@example.com> \"b c\"@x.org; alias z z@x.org # c\n"
    rc = parse(text, "t.rc")
    first, second = rc.statements
    assert [text[w.start : w.end] for w in first.words] == [
        "archuser",
        "'My Name'<someone@example.com>",
        '"b c"@x.org',
    ]
    assert text[second.start : second.end] == "alias z z@x.org"


def test_dangling_continuation_at_end_of_file() -> None:
    rc = parse("alias a x@e.com \\", "t.rc")
    assert rc.lines[-1].dangling
    assert table(evaluate([rc], environ={})) == {"a": ["x@e.com"]}


def test_newline_style() -> None:
    assert parse("a\r\nb\r\n", "t").newline == "\r\n"
    assert parse("a\nb\n", "t").newline == "\n"
    assert parse("", "t").newline == "\n"


# --- quoting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "word"),
    [
        ("'a b'", "a b"),
        ("'a\\b'", "a\\b"),
        ('"a\\"b\\\\c\\$d\\qe"', 'a"b\\c$d\\qe'),
        ("$'\\a\\b\\e\\E\\f\\n\\r\\t\\v'", "\a\b\x1b\x1b\f\n\r\t\v"),
        ("$'\\x41\\x4a2'", "AJ2"),
        ("$'\\u00e9\\U0001F600'", "é😀"),
        ("$'\\101\\0101\\01012'", "AAA2"),
        ("$'\\cA\\c@x'", "\x01"),
        ("$'ab\\0cd'ef", "abef"),
        ("$'\\'\\\"\\\\'", "'\"\\"),
        ("$'\\z'", "z"),
        ("$'\\x'", "x"),
        ("$'\\xff'", "\udcff"),
        ("a\\ b\\'c", "a b'c"),
        ("pre'fix'\"mid\"$'suf'", "prefixmidsuf"),
        ("a#b", "a#b"),
        ("'#'x", "#x"),
    ],
)
def test_shell_style_words(source: str, word: str) -> None:
    rc = parse(f"alias n {source}\n", "t.rc")
    (statement,) = rc.statements
    assert statement.words[1].expand(lambda name: "") == word


def test_variables_expand_from_settings_then_environment() -> None:
    text = "set dom=example.com\nalias v $USER@$dom ${dom}x \"$dom\" '$dom' $'\\$dom' $nope\n"
    rc = evaluate([parse(text, "t.rc")], environ={"USER": "ann", "dom": "ignored"})
    (statement,) = [s for s in rc.files[0].statements if s.kind == "alias"]
    assert statement.words[1].literal == "${USER}@${dom}"
    words = [
        w.expand(lambda n: {"USER": "ann", "dom": "example.com"}.get(n, ""))
        for w in statement.words
    ]
    assert words == [
        "v",
        "ann@example.com",
        "example.comx",
        "example.com",
        "$dom",
        "example.com",
        "",
    ]


def test_old_style_set_quoting() -> None:
    rc = rc_of("set a=\"x\\\"y\" b='p q' c=r\\ s d=$'\\x41' e=\"open\n")
    assert rc.variables == {"a": 'x"y', "b": "p q", "c": "r s", "d": "$\\x41", "e": "open"}


def test_wysh_set_uses_shell_quoting() -> None:
    rc = rc_of("set dom=x.org\nwysh set from=me@$dom # comment\n")
    assert rc.variables == {"dom": "x.org", "from": "me@x.org"}


# --- commands -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("a n x@e.com", "alias"),
        ("al n x@e.com", "alias"),
        ("g n x@e.com", "alias"),
        ("group n x@e.com", "alias"),
        ("se v=1", "set"),
        ("uns v", "unset"),
        ("una n", "unalias"),
        ("ungroup n", "unalias"),
        ("ignerr alias n x@e.com", "alias"),
        ("\\alias n x@e.com", "alias"),
        ("retain from", "skip"),
        ("s x", "skip"),  # `save`, a reading-mode command
    ],
)
def test_command_abbreviations_follow_snails_table(line: str, kind: str) -> None:
    (statement,) = parse(line + "\n", "t.rc").statements
    assert statement.kind == kind


def test_unknown_command_drops_the_rest_of_its_line_only() -> None:
    rc = rc_of("bogus x; alias a a@e.com\nalias b b@e.com\n")
    assert table(rc) == {"b": ["b@e.com"]}
    assert [str(d) for d in rc.diagnostics] == ["t.rc:1: unknown command 'bogus'"]


def test_unterminated_quote_reports_file_and_line_and_goes_on() -> None:
    rc = rc_of("alias a 'x@e.com\nalias b b@e.com\n")
    assert table(rc) == {"b": ["b@e.com"]}
    assert str(rc.diagnostics[0]).startswith("t.rc:1: alias: no closing quote")


def test_alias_with_only_invalid_members_is_not_defined() -> None:
    rc = rc_of("alias a 'x y'\n")
    assert table(rc) == {}
    assert "invalid member 'x y'" in rc.diagnostics[0].message


def test_overrides_beat_the_files() -> None:
    rc = rc_of(
        "set from=file@e.com\nset nosave\nunset record\n",
        overrides={"from": "cli@e.com", "save": "", "record": "+sent", "DEAD": None},
    )
    assert rc.variables == {"from": "cli@e.com", "save": "", "record": "+sent"}


def test_if_terminal_and_unsupported_conditions() -> None:
    text = (
        "if t\nalias t tty@e.com\nelse\nalias t pipe@e.com\nendif\n"
        "if -N x\nalias u u@e.com\nendif\n"
    )
    assert table(rc_of(text, terminal=True))["t"] == ["tty@e.com"]
    rc = rc_of(text)
    assert table(rc) == {"t": ["pipe@e.com"]}
    assert [(d.line, d.severity) for d in rc.diagnostics] == [(6, "warning")]


def test_if_without_endif_and_stray_endif() -> None:
    rc = rc_of("endif\nif s\nalias a a@e.com\n")
    assert table(rc) == {"a": ["a@e.com"]}
    assert [(d.line, d.message) for d in rc.diagnostics] == [
        (1, "endif without if"),
        (2, "if: missing endif before end of file"),
    ]


def test_unclosed_define_block() -> None:
    rc = rc_of("define m {\nalias a a@e.com\n")
    assert table(rc) == {}
    assert "block not closed" in rc.diagnostics[0].message


def test_source_and_source_if(tmp_path: Path) -> None:
    extra = tmp_path / "extra.rc"
    extra.write_text("alias sourced s@e.com\n")
    text = (
        f"source {extra}\nsource_if {tmp_path}/missing.rc\n"
        f"source {tmp_path}/missing.rc\nsource 'cmd |'\n"
    )
    rc = rc_of(text)
    assert table(rc) == {"sourced": ["s@e.com"]}
    assert [d.line for d in rc.diagnostics] == [3, 4]
    assert "command pipes are not run" in rc.diagnostics[1].message


def test_source_loop_is_bounded(tmp_path: Path) -> None:
    me = tmp_path / "me.rc"
    me.write_text(f"alias a a@e.com\nsource {me}\n")
    rc = load([str(me)], environ={})
    assert table(rc) == {"a": ["a@e.com"] * 11}
    assert "nested deeper" in rc.diagnostics[-1].message


def test_load_skips_missing_and_reports_unreadable(tmp_path: Path) -> None:
    first = tmp_path / "system.rc"
    first.write_text("alias a sys@e.com\nset from=sys@e.com\n")
    second = tmp_path / "user.rc"
    second.write_text("alias a user@e.com\nset from=user@e.com\n")
    rc = load([str(first), str(tmp_path / "nope.rc"), str(second), str(tmp_path)], environ={})
    assert table(rc) == {"a": ["sys@e.com", "user@e.com"]}
    assert rc.variables["from"] == "user@e.com"
    assert [(d.path, d.line) for d in rc.diagnostics] == [(str(tmp_path), None)]
    assert rc.aliases["a"][1].path == str(second)


# --- names and recipients -------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "1x", "_u", "z-", "v$", "Bob", "r#:@!.", "xé"])
def test_valid_alias_names(name: str) -> None:
    assert is_valid_alias_name(name)


@pytest.mark.parametrize(
    "name", ["", "-y", ".w", "é", "a b", "a,b", "a;b", "q$r", "$", "a\nb", "a/b"]
)
def test_invalid_alias_names(name: str) -> None:
    assert not is_valid_alias_name(name)


@pytest.mark.parametrize(
    ("text", "header", "envelope", "kind"),
    [
        (
            "My Name<someone@example.com>",
            "My Name <someone@example.com>",
            "someone@example.com",
            "address",
        ),
        ("A, B <ab@x.org>", '"A, B" <ab@x.org>', "ab@x.org", "address"),
        ('"Jo \\"JJ\\" Smith" <j@x.org>', '"Jo \\"JJ\\" Smith" <j@x.org>', "j@x.org", "address"),
        ("<a@x.org>", "a@x.org", "a@x.org", "address"),
        ("a@x.org", "a@x.org", "a@x.org", "address"),
        ("c@x.org (Comment)", "Comment <c@x.org>", "c@x.org", "address"),
        ("Jörg <j@x.org>", "Jörg <j@x.org>", "j@x.org", "address"),
        ("bob", "bob", "bob", "local"),
        ("\\bob", "bob", "bob", "local"),
        ("/var/mail/x", "/var/mail/x", "/var/mail/x", "file"),
        ("|cat", "|cat", "|cat", "pipe"),
    ],
)
def test_parse_recipient(text: str, header: str, envelope: str, kind: str) -> None:
    recipient = parse_recipient(text)
    assert (recipient.header, recipient.envelope, recipient.kind) == (header, envelope, kind)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a@x.org, b@x.org",
        "foo bar",
        "a@",
        "@x.org",
        "b;c@x.org",
        'Na"me <a@x.org>',
        "a@x.org\nBcc: evil@x.org",
        "foo+bar",
        "a..b@x.org",
        "x <y>",
        "Caf\udce9 <c@x.org>",
    ],
)
def test_invalid_recipients(text: str) -> None:
    assert member_problem(text)
    with pytest.raises(DataError) as caught:
        parse_recipient(text)
    assert caught.value.exit_code == 65


# --- expansion for the front end ------------------------------------------------------


def test_expand_archwiki() -> None:
    rc = rc_of("alias archuser 'My Name'<someone@example.com>\n")
    (recipient,) = expand_recipients(["archuser"], rc)
    assert recipient.header == "My Name <someone@example.com>"
    assert recipient.envelope == "someone@example.com"
    assert recipient.via == ("archuser",)


def test_expand_groups_nesting_escape_self_and_dedup() -> None:
    rc = rc_of(
        "alias ops alice@x.org team\nalias team 'Bob B'<bob@x.org> \\\\ops carol\n"
        "alias john john john@x.org\nalias ops alice@x.org\n"
    )
    got = [
        (r.header, r.envelope, r.kind)
        for r in expand_recipients(["ops", "john", "dave", "bob@x.org"], rc)
    ]
    assert got == [
        ("alice@x.org", "alice@x.org", "address"),
        ("Bob B <bob@x.org>", "bob@x.org", "address"),
        ("ops", "ops", "local"),
        ("carol", "carol", "local"),
        ("john", "john", "local"),
        ("john@x.org", "john@x.org", "address"),
        ("dave", "dave", "local"),
    ]


def test_expand_refuses_a_loop_naming_it() -> None:
    rc = rc_of("alias a b\nalias b c\nalias c a\n")
    with pytest.raises(DataError, match=r"alias loop: a -> b -> c -> a") as caught:
        expand_recipients(["a"], rc)
    assert caught.value.exit_code == 65


def test_expand_refuses_file_and_pipe_targets_with_their_line() -> None:
    rc = rc_of("set x=1\nalias save /tmp/mbox\n")
    with pytest.raises(DataError, match="file recipient refused") as caught:
        expand_recipients(["save"], rc)
    assert (caught.value.path, caught.value.line) == ("t.rc", 2)
    with pytest.raises(DataError, match="pipe recipient refused"):
        expand_recipients(["|cat"], rc)


def test_expand_refuses_an_invalid_command_line_recipient() -> None:
    with pytest.raises(DataError, match="invalid recipient"):
        expand_recipients(["a@x.org\r\nBcc: x@y.org"], rc_of(""))


# --- where the files are --------------------------------------------------------------


def test_default_rc_paths() -> None:
    assert default_rc_paths({}, "/home/u") == ["/etc/mail.rc", "/home/u/.mailrc"]
    env = {"MAILX_SYSTEM_RC": "/opt/sys.rc", "MAILRC": "/tmp/my.rc"}
    assert default_rc_paths(env, "/home/u") == ["/opt/sys.rc", "/tmp/my.rc"]
    assert default_rc_paths({"MAILX_NO_SYSTEM_RC": ""}, "/h") == ["/h/.mailrc"]
    assert default_rc_paths({}, "/h", no_system=True) == ["/h/.mailrc"]
    assert system_rc_path({}) == "/etc/mail.rc"
    assert user_rc_path({"MAILRC": "~/x.rc", "HOME": "/h"}, "/h").endswith("/x.rc")


def test_home_directory() -> None:
    assert home_directory({"HOME": "/somewhere"}) == "/somewhere"
    assert home_directory({}).startswith("/")


# --- robustness -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("alias set unalias'\"$\\#;{}\r\n\t ab@.x0\x00é")), max_size=80
    )
)
def test_parser_never_crashes_and_offsets_are_in_bounds(text: str) -> None:
    rc = parse(text, "fuzz.rc")
    evaluate([rc], environ={})
    for statement in rc.statements:
        assert 0 <= statement.start <= statement.end <= len(text)
        for word in statement.words:
            assert statement.start <= word.start < word.end <= statement.end
    covered = "".join(text[line.start : line.end] for line in rc.lines)
    assert covered == text


def test_sample_etc_mail_rc_parses_clean() -> None:
    from mailx.aliasbook import check

    sample = Path(__file__).parent.parent.parent / "etc" / "mail.rc"
    rc = evaluate([read_rc(str(sample))], environ={})
    assert rc.diagnostics == []
    uncommented = re.sub(r"(?m)^#(alias|set|retain| {2,}\S)", r"\1", sample.read_text())
    rc = evaluate([parse(uncommented, str(sample))], environ={})
    assert check(rc, is_account=lambda name: False) == []
    (archuser,) = expand_recipients(["archuser"], rc)
    assert archuser.header == "My Name <someone@example.com>"
    assert [r.envelope for r in expand_recipients(["team"], rc)] == [
        "alice@example.com",
        "bob@example.com",
        "someone@example.com",
    ]


# --- groups with refused members, big alias trees ---------------------------------------


def test_expand_refuses_an_alias_with_a_member_its_alias_command_refused() -> None:
    rc = rc_of("alias team me, bob@example.org\n")
    assert "invalid member 'me,'" in rc.diagnostics[0].message
    assert table(rc) == {"team": ["bob@example.org"]}  # as s-nail reads it
    with pytest.raises(DataError, match="nothing sent to the group") as caught:
        expand_recipients(["team"], rc)
    assert (caught.value.path, caught.value.line, caught.value.exit_code) == ("t.rc", 1, 65)
    assert [r.envelope for r in expand_recipients(["bob@example.org"], rc)] == ["bob@example.org"]


def test_expand_refuses_an_alias_whose_only_member_was_refused() -> None:
    rc = rc_of("alias ops 'foo bar'\n")
    with pytest.raises(DataError, match="alias ops: member 'foo bar'"):
        expand_recipients(["ops"], rc)


def test_unalias_forgets_refused_members() -> None:
    rc = rc_of("alias team me, bob@example.org\nunalias team\nalias team bob@example.org\n")
    assert [r.envelope for r in expand_recipients(["team"], rc)] == ["bob@example.org"]


def test_expand_exponential_tree_is_linear_and_deduplicated() -> None:
    text = "".join(f"alias t{i} t{i + 1} t{i + 1}\n" for i in range(24))
    rc = rc_of(text + "alias t24 a@example.org a@EXAMPLE.org 'A'<a@Example.org> b@x.org\n")
    found = expand_recipients(["t0", "a@example.ORG"], rc)
    assert [(r.envelope, r.header) for r in found] == [
        ("a@example.org", "a@example.org"),
        ("b@x.org", "b@x.org"),
    ]
    assert found[0].via[:2] == ("t0", "t1")


# -- the scanners that replace regular expressions ------------------------------------------

SCANNED = st.text(st.sampled_from("aZ_09\\-!=?|#@.:+ \t$é{}\"'"), max_size=10)


@settings(max_examples=1000, deadline=None)
@given(SCANNED, st.integers(0, 10))
def test_name_scanner_is_the_shell_variable_pattern(text: str, at: int) -> None:
    import re

    found = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, at)
    assert mailrc._name_end(text, at) == (found.end() if found else at)


@settings(max_examples=1000, deadline=None)
@given(SCANNED, st.integers(0, 10))
def test_command_word_scanner_is_the_command_pattern(text: str, at: int) -> None:
    import re

    found = re.compile(r"\\?(?:[A-Za-z_][A-Za-z0-9_]*|[-!=?|#])").match(text, at)
    assert mailrc._command_word_end(text, at) == (found.end() if found else None)


@settings(max_examples=1000, deadline=None)
@given(SCANNED)
def test_set_name_check_is_the_set_pattern(text: str) -> None:
    import re

    found = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_@.:+-]*\Z").match(text)
    assert mailrc._is_set_name(text) == bool(found)


def test_a_full_command_name_is_looked_up_as_itself() -> None:
    # `_command_lookup`'s shortcut holds only while no name is the prefix of an earlier one.
    table = mailrc._COMMAND_TABLE
    for index, name in enumerate(table):
        assert not any(earlier.startswith(name) for earlier in table[:index]), name
        assert mailrc._command_lookup(name) == name
    assert mailrc._command_lookup("se") == "set"
    assert mailrc._command_lookup("a") == "alias"
