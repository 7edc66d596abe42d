"""mailx.tilde: every escape of the compose state machine, driven without a terminal."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import pytest

from mailx.compose import Draft, build, envelope_recipients
from mailx.tilde import HELP, Action, Compose, Hooks
from relay import ConfigError, NoInputError


@dataclass
class Fake:
    """Records what the state machine asks of the operating system."""

    files: dict[str, bytes] = field(default_factory=dict)
    printed: list[str] = field(default_factory=list)
    edits: list[tuple[bytes, str]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    edited: bytes = b"edited body\n"
    editor_fails: bool = False

    def read_file(self, path: str) -> bytes:
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path) from None

    def check(self, path: str) -> None:
        if path not in self.files:
            raise NoInputError("cannot read attachment", path=path)

    def edit(self, body: bytes, variable: str) -> bytes:
        self.edits.append((body, variable))
        if self.editor_fails:
            raise OSError(errno.ENOENT, "No such file or directory")
        return self.edited

    def shell(self, command: str) -> None:
        self.commands.append(command)

    def hooks(self, *, shell: bool = True) -> Hooks:
        return Hooks(
            output=self.printed.append,
            read_file=self.read_file,
            edit=self.edit,
            check_attachment=self.check,
            shell=self.shell if shell else None,
        )


@pytest.fixture
def fake() -> Fake:
    return Fake(files={"notes.txt": b"from a file\n", "report.pdf": b"%PDF", "a b.txt": b"x"})


def session(
    fake: Fake, *, escapes: bool = True, shell: bool = False, subject: str | None = None
) -> Compose:
    return Compose(Draft(to=("bob",), subject=subject), fake.hooks(), escapes=escapes, shell=shell)


def feed_all(compose: Compose, lines: list[str]) -> Action:
    for line in lines:
        action = compose.feed(line + "\n")
        if action is not None:
            return action
    return compose.finish()


def test_plain_lines_are_the_body_and_eof_sends(fake: Fake) -> None:
    compose = session(fake)
    assert feed_all(compose, ["hello", ".", "", "bye"]) is Action.SEND
    assert compose.body == b"hello\n.\n\nbye\n"
    assert fake.printed == []


def test_line_without_newline_gets_one_crlf_is_kept(fake: Fake) -> None:
    compose = session(fake)
    assert compose.feed("no newline") is None
    assert compose.feed(b"crlf\r\n") is None
    assert compose.body == b"no newline\ncrlf\r\n"


def test_bytes_lines_keep_invalid_utf8(fake: Fake) -> None:
    compose = session(fake)
    compose.feed(b"caf\xe9\n")
    assert compose.body == b"caf\xe9\n"


def test_escapes_off_every_line_is_body_text(fake: Fake) -> None:
    lines = ["~s evil", "~c evil@example.org", "~! rm -rf /", "~.", "~q", "~~x"]
    compose = session(fake, escapes=False, shell=True)
    assert feed_all(compose, lines) is Action.SEND
    assert compose.body == "".join(f"{line}\n" for line in lines).encode()
    assert compose.subject is None
    assert compose.cc == []
    assert fake.commands == []
    assert fake.printed == []


def test_tilde_s_sets_the_subject(fake: Fake) -> None:
    compose = session(fake, subject="old")
    assert compose.feed("~s  Grüße aus Köln \n") is None
    assert compose.subject == "Grüße aus Köln"
    assert compose.body == b""
    compose.feed("~s")
    assert compose.subject == ""


@pytest.mark.parametrize(("escape", "attribute"), [("t", "to"), ("c", "cc"), ("b", "bcc")])
def test_recipient_escapes_add_addresses(fake: Fake, escape: str, attribute: str) -> None:
    compose = session(fake)
    compose.feed(f"~{escape} alice@example.com carol\n")
    compose.feed(f'~{escape} "Doe, John" <j@example.com>, Jürgen <j2@exämple.de>\n')
    expected = [
        "alice@example.com",
        "carol",
        '"Doe, John" <j@example.com>',
        "Jürgen <j2@xn--exmple-cua.de>",
    ]
    initial = ["bob"] if attribute == "to" else []
    assert getattr(compose, attribute) == initial + expected
    assert compose.body == b""
    assert fake.printed == []


@pytest.mark.parametrize(
    "line",
    [
        "~c good@example.com bad@@example.com",
        "~c a@example.com\rBcc: evil@example.org",
        "~b <unclosed@example.com",
        "~t jürgen@example.com",
        "~t ok@example.com, $(touch x)@example.org",
        "~c a@example.org <b@example.org>",
    ],
)
def test_a_bad_address_adds_nothing_from_the_line(fake: Fake, line: str) -> None:
    compose = session(fake)
    assert compose.feed(line + "\n") is None
    assert (compose.to, compose.cc, compose.bcc) == (["bob"], [], [])
    assert len(fake.printed) == 1
    assert "nothing added" in fake.printed[0]
    assert compose.body == b""


@pytest.mark.parametrize("escape", ["t", "c", "b"])
def test_recipient_escape_without_addresses_says_so(fake: Fake, escape: str) -> None:
    compose = session(fake)
    compose.feed(f"~{escape}\n")
    assert fake.printed == [f"~{escape}: give one or more addresses"]


@pytest.mark.parametrize("escape", ["a", "@"])
def test_attach_escapes(fake: Fake, escape: str) -> None:
    compose = session(fake)
    compose.feed(f"~{escape} notes.txt 'a b.txt'\n")
    compose.feed(f"~{escape} report.pdf missing.bin\n")
    assert compose.attachments == ["notes.txt", "a b.txt", "report.pdf"]
    assert fake.printed == ["missing.bin: cannot read attachment; not attached"]
    fake.printed.clear()
    compose.feed(f"~{escape}\n")
    assert fake.printed == ["Attachments: notes.txt, a b.txt, report.pdf"]
    assert compose.body == b""


def test_attach_needs_a_name_and_balanced_quotes(fake: Fake) -> None:
    compose = session(fake)
    compose.feed("~a\n")
    compose.feed("~a 'unbalanced\n")
    assert compose.attachments == []
    assert fake.printed[0] == "~a: give a file name"
    assert fake.printed[1].startswith("~a: No closing quotation")


def test_attachment_check_defaults_to_build_time(fake: Fake) -> None:
    hooks = Hooks(output=fake.printed.append, read_file=fake.read_file, edit=fake.edit)
    compose = Compose(Draft(to=["bob"]), hooks, escapes=True)
    compose.feed("~a /nonexistent/file\n")
    assert compose.attachments == ["/nonexistent/file"]
    with pytest.raises(NoInputError):
        build(compose.draft())


def test_tilde_r_reads_a_file_into_the_body(fake: Fake) -> None:
    fake.files["no-eol"] = b"last line"
    compose = session(fake)
    compose.feed("before\n")
    compose.feed("~r notes.txt\n")
    compose.feed("~r no-eol\n")
    compose.feed("after\n")
    assert compose.body == b"before\nfrom a file\nlast line\nafter\n"
    assert fake.printed == ['"notes.txt" 1 lines, 12 bytes', '"no-eol" 0 lines, 9 bytes']


def test_tilde_r_errors_are_reported(fake: Fake) -> None:
    compose = session(fake)
    compose.feed("~r missing\n")
    compose.feed("~r\n")
    compose.feed("~r one two\n")
    assert compose.body == b""
    assert fake.printed == [
        "missing: No such file or directory",
        "~r: give a file name",
        "~r: one file name, please",
    ]


def test_tilde_p_prints_the_message_so_far(fake: Fake) -> None:
    compose = session(fake, subject="Status")
    compose.feed("~c c@example.com\n")
    compose.feed("~b hidden@example.com\n")
    compose.feed("~a report.pdf\n")
    compose.feed(b"line one caf\xe9\n")
    assert compose.feed("~p\n") is None
    assert fake.printed == [
        "-------\nMessage contains:\nTo: bob\nCc: c@example.com\nBcc: hidden@example.com\n"
        "Subject: Status\nAttachments: report.pdf\n\nline one caf\ufffd",
        "(continue)",
    ]
    assert compose.body == b"line one caf\xe9\n"


@pytest.mark.parametrize(("escape", "variable"), [("e", "EDITOR"), ("v", "VISUAL")])
def test_editor_escapes_replace_the_body(fake: Fake, escape: str, variable: str) -> None:
    compose = session(fake)
    compose.feed("draft text\n")
    compose.feed(f"~{escape}\n")
    assert fake.edits == [(b"draft text\n", variable)]
    assert compose.body == b"edited body\n"
    assert fake.printed == ["(continue)"]
    compose.feed("more\n")
    assert compose.body == b"edited body\nmore\n"


def test_editor_failure_keeps_the_body(fake: Fake) -> None:
    fake.editor_fails = True
    compose = session(fake)
    compose.feed("draft\n")
    compose.feed("~v\n")
    assert compose.body == b"draft\n"
    assert fake.printed == ["$VISUAL: No such file or directory; the message is unchanged"]


@pytest.mark.parametrize(
    ("line", "action"), [("~.", Action.SEND), ("~q", Action.ABORT_SAVE), ("~x", Action.ABORT)]
)
def test_ending_escapes(fake: Fake, line: str, action: Action) -> None:
    compose = session(fake)
    compose.feed("kept\n")
    assert compose.feed(line + "\n") is action
    assert compose.ended is action
    assert compose.feed("dropped after the end\n") is action
    assert compose.finish() is action
    assert compose.body == b"kept\n"


def test_end_of_input_sends(fake: Fake) -> None:
    compose = session(fake)
    assert compose.finish() is Action.SEND
    assert compose.ended is Action.SEND


def test_double_tilde_is_a_literal_line(fake: Fake) -> None:
    compose = session(fake)
    assert compose.feed("~~s not a subject\n") is None
    assert compose.feed("~~\n") is None
    assert compose.body == b"~s not a subject\n~\n"
    assert compose.subject is None


def test_help(fake: Fake) -> None:
    compose = session(fake)
    compose.feed("~?\n")
    assert fake.printed == [HELP]
    for escape in "stcbar@pev.qx~?!":
        assert f"~{escape}" in HELP


def test_shell_runs_only_when_allowed(fake: Fake) -> None:
    interactive = session(fake, shell=True)
    interactive.feed("~!ls -l /tmp\n")
    interactive.feed("~! date\n")
    assert fake.commands == ["ls -l /tmp", "date"]
    assert fake.printed == ["!", "!"]
    assert interactive.body == b""


def test_shell_refused_from_a_pipe_even_with_escapes(fake: Fake) -> None:
    piped = session(fake, shell=False)
    piped.feed("~!touch /tmp/pwned\n")
    assert fake.commands == []
    assert piped.body == b""
    assert fake.printed == ["~!: shell escapes are allowed only in an interactive session"]


def test_shell_refused_without_a_shell_hook(fake: Fake) -> None:
    compose = Compose(Draft(to=["bob"]), fake.hooks(shell=False), escapes=True, shell=True)
    compose.feed("~!id\n")
    assert fake.commands == []
    assert fake.printed == ["~!: shell escapes are allowed only in an interactive session"]


def test_shell_without_command_or_failing(fake: Fake) -> None:
    def broken(command: str) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    hooks = Hooks(
        output=fake.printed.append, read_file=fake.read_file, edit=fake.edit, shell=broken
    )
    compose = Compose(Draft(to=["bob"]), hooks, escapes=True, shell=True)
    compose.feed("~!\n")
    compose.feed("~!id\n")
    assert fake.printed == ["~!: give a command", "~!: Permission denied"]


@pytest.mark.parametrize("line", ["~h", "~|sort", "~:set", "~", "~z", "~ü"])
def test_unknown_escape_is_reported_and_dropped(fake: Fake, line: str) -> None:
    compose = session(fake)
    assert compose.feed(line + "\n") is None
    assert compose.body == b""
    assert len(fake.printed) == 1
    assert fake.printed[0].startswith("Unknown tilde escape: " + line[:2])


def test_other_escape_character(fake: Fake) -> None:
    compose = Compose(Draft(to=["bob"]), fake.hooks(), escapes=True, escape="!")
    compose.feed("!s subject\n")
    compose.feed("~s stays text\n")
    compose.feed("!!bang\n")
    assert compose.subject == "subject"
    assert compose.body == b"~s stays text\n!bang\n"
    with pytest.raises(ValueError, match="one character"):
        Compose(Draft(to=["bob"]), fake.hooks(), escapes=True, escape="~~")


def test_unknown_input_charset_is_a_config_error(fake: Fake) -> None:
    with pytest.raises(ConfigError, match="unknown charset"):
        Compose(Draft(to=["bob"], input_charset="bogus"), fake.hooks(), escapes=True)


def test_latin1_terminal(fake: Fake) -> None:
    compose = Compose(Draft(to=["bob"], input_charset="iso-8859-1"), fake.hooks(), escapes=True)
    compose.feed(b"~s Gr\xfc\xdfe\n")
    compose.feed("Grüße\n")
    assert compose.subject == "Grüße"
    assert compose.body == "Grüße\n".encode("iso-8859-1")


def test_draft_carries_everything_into_build(fake: Fake) -> None:
    start = Draft(to=["a@example.com"], body=b"quoted from -q\n", from_="me@example.com")
    compose = Compose(start, fake.hooks(), escapes=True)
    for line in ["~s Weekly", "~t b@example.com", "~c c@example.com", "~b d@example.com"]:
        compose.feed(line + "\n")
    compose.feed("~a report.pdf\n")
    compose.feed("body line\n")
    assert compose.feed("~.\n") is Action.SEND
    draft = compose.draft()
    assert draft.from_ == "me@example.com"
    assert draft.subject == "Weekly"
    assert draft.body == b"quoted from -q\nbody line\n"
    assert draft.attachments == ("report.pdf",)
    assert envelope_recipients(draft) == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ]
    assert start.subject is None  # the starting draft is not changed
