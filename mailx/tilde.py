"""Interactive compose: s-nail's tilde escapes as a line-driven state machine (mail(1)).

`Compose` is fed the lines of the message one at a time and answers with an `Action`
when the message is finished or abandoned. It does no I/O of its own: reading files,
checking attachments, running the editor or a shell and printing all go through the
callables of a `Hooks`, so every escape can be driven from a test.

Escapes, each only at the start of a line (the escape character is `~` unless set):

    ~s subject     set the Subject          ~a file...  attach files (also ~@; s-nail's ~a
    ~t addr...     add To recipients                    inserts a signature instead)
    ~c addr...     add Cc recipients        ~r file     read a file into the body
    ~b addr...     add Bcc recipients       ~p          print the message so far
    ~e, ~v         edit the body in $EDITOR, $VISUAL
    ~.             end the message, send    ~q          abort, keep it in dead.letter
    ~x             abort, keep nothing      ~~text      a body line starting with ~text
    ~?             help                     ~!command   shell, only when allowed

When escapes are off (stdin is not a terminal and `-~` was not given) every line is body
text. `~!` is honoured only when the caller says so (an interactive terminal); from a
pipe a `~!` line is refused, never run and never sent. A line holding a single `.` is
body text, as in s-nail without `dot`. An unknown escape is reported and not added.

Addresses are checked as they are given (`mailx.compose.parse_addresses`, which reads
them with the relay's one recipient classifier, `relay.classify_recipient`), so a typo
or a form that would change the address is reported at once; a line is taken whole or
not at all. Duplicates are dropped when the message is built, by the same key as the
envelope's (`relay.dedupe_key`).
"""

from __future__ import annotations

import codecs
import enum
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailx.cli import literal
from mailx.compose import parse_addresses
from mailx.draft import Draft
from relay import ConfigError, RelayError

__all__ = ["HELP", "Action", "Compose", "Hooks"]


class Action(enum.Enum):
    """How a compose session ended."""

    SEND = "send"  # ~. or end of input
    ABORT_SAVE = "abort-save"  # ~q: nothing sent, the draft goes to dead.letter
    ABORT = "abort"  # ~x: nothing sent, nothing kept


def _no_check(path: str) -> None:
    """Accept every path: `mailx.compose.build` reads the files and reports errors."""


@dataclass(frozen=True)
class Hooks:
    """The edges of the operating system that escapes need, supplied by the caller.

    Each callable reports failure by raising OSError or a RelayError; the message is
    printed through `output` and compose goes on.
    """

    #: Print one message for the user (no trailing newline needed).
    output: Callable[[str], None]
    #: The whole content of a file, for `~r`.
    read_file: Callable[[str], bytes]
    #: Run the editor named by the variable ("VISUAL" or "EDITOR") on the body; return
    #: the edited body.
    edit: Callable[[bytes, str], bytes]
    #: Raise if the file cannot be attached (`~a`); the default accepts anything and
    #: leaves the check to `mailx.compose.build`.
    check_attachment: Callable[[str], None] = _no_check
    #: Run a shell command line, for `~!`; None: no shell at all.
    shell: Callable[[str], None] | None = None


HELP = """\
-------------------- ~ tilde escapes --------------------
~s subject    set the subject         ~a file...  attach files (also ~@)
~t addr...    add To recipients       ~r file     read a file into the body
~c addr...    add Cc recipients       ~p          print the message so far
~b addr...    add Bcc recipients      ~e / ~v     edit the body ($EDITOR / $VISUAL)
~.            send the message        ~q          abort, save to dead.letter
~x            abort, save nothing     ~~text      a line starting with ~text
~!command     run a shell command (interactive sessions only)
~?            this help
---------------------------------------------------------"""

_ADDRESS_SYNTAX = frozenset(',<>"()')


class Compose:
    """The state of one message being composed: headers given so far and the body."""

    def __init__(
        self,
        draft: Draft,
        hooks: Hooks,
        *,
        escapes: bool,
        shell: bool = False,
        escape: str = "~",
    ) -> None:
        """Start from `draft` (the command line's subject, recipients, -q text).

        `escapes`: whether tilde escapes are honoured at all (a terminal, or `-~`).
        `shell`: whether `~!` may run a command (only for an interactive terminal).
        `escape`: the escape character (s-nail's `escape` variable).
        """
        if len(escape) != 1:
            raise ValueError(f"the escape character must be one character, not {escape!r}")
        try:
            codecs.lookup(draft.input_charset)
        except LookupError as err:
            raise ConfigError(f"input charset: unknown charset {draft.input_charset!r}") from err
        self._initial = draft
        self._hooks = hooks
        self._escapes = escapes
        self._shell = shell and hooks.shell is not None
        self._escape = escape
        self._charset = draft.input_charset
        self.subject: str | None = draft.subject
        self.to: list[str] = list(draft.to)
        self.cc: list[str] = list(draft.cc)
        self.bcc: list[str] = list(draft.bcc)
        self.attachments: list[str] = list(draft.attachments)
        self._body: list[bytes] = [draft.body] if draft.body else []
        self.ended: Action | None = None

    @property
    def body(self) -> bytes:
        """The body so far, as bytes in the input charset."""
        return b"".join(self._body)

    def draft(self) -> Draft:
        """The starting draft with everything the session added."""
        return self._initial.replace(
            subject=self.subject,
            to=tuple(self.to),
            cc=tuple(self.cc),
            bcc=tuple(self.bcc),
            attachments=tuple(self.attachments),
            body=self.body,
        )

    def feed(self, line: str | bytes) -> Action | None:
        """Take one input line (with or without its line end); an Action ends the session.

        After the end, further lines are ignored and the same Action is returned: s-nail
        drops what follows `~.` on stdin.
        """
        if self.ended is not None:
            return self.ended
        raw = line if isinstance(line, bytes) else line.encode(self._charset, "surrogateescape")
        escape = self._escape.encode(self._charset)
        if not self._escapes or not raw.startswith(escape):
            self._add_line(raw)
            return None
        rest = raw[len(escape) :].removesuffix(b"\n").removesuffix(b"\r")
        if rest.startswith(escape):
            self._add_line(raw[len(escape) :])
            return None
        self._escape_command(rest)
        return self.ended

    def finish(self) -> Action:
        """End of input (Ctrl-D on a terminal): the message is sent, as in s-nail."""
        if self.ended is None:
            self.ended = Action.SEND
        return self.ended

    def _add_line(self, raw: bytes) -> None:
        self._body.append(raw if raw.endswith(b"\n") else raw + b"\n")

    def _escape_command(self, rest: bytes) -> None:
        text = rest.decode(self._charset, "replace")
        command, argument = text[:1], text[1:].strip()
        # File names keep their exact bytes (the file system's encoding, PEP 383).
        path_argument = os.fsdecode(rest[1:]).strip() if command.isascii() else ""
        if command == "s":
            self.subject = argument
        elif command in ("t", "c", "b"):
            self._add_recipients(command, argument)
        elif command in ("a", "@"):
            self._attach(command, path_argument)
        elif command == "r":
            self._read(path_argument)
        elif command == "p":
            self._print()
        elif command in ("e", "v"):
            self._edit("EDITOR" if command == "e" else "VISUAL")
        elif command == ".":
            self.ended = Action.SEND
        elif command == "q":
            self.ended = Action.ABORT_SAVE
        elif command == "x":
            self.ended = Action.ABORT
        elif command == "?":
            self._hooks.output(HELP)
        elif command == "!":
            self._run_shell(text[1:].strip())
        else:
            self._say(f"Unknown tilde escape: {self._escape}{command}; {self._escape}? for help")

    def _say(self, message: str) -> None:
        self._hooks.output(message)

    def _add_recipients(self, command: str, argument: str) -> None:
        target = {"t": self.to, "c": self.cc, "b": self.bcc}[command]
        field = {"t": "To", "c": "Cc", "b": "Bcc"}[command]
        if not argument:
            self._say(f"{self._escape}{command}: give one or more addresses")
            return
        # "a@x b@y" (s-nail's word list) unless the line uses address syntax.
        if _ADDRESS_SYNTAX.intersection(argument):
            entries: Sequence[str] = [argument]
        else:
            entries = argument.split()
        try:
            found = [
                a for entry in entries for a in parse_addresses(entry, field, allow_local=True)
            ]
        except RelayError as err:
            self._say(f"{err}; nothing added")
            return
        # `<-odd@example.org>` stays in that form: bare, the leading '-' is refused later.
        target.extend(literal(str(address)) for address in found)

    def _words(self, command: str, argument: str) -> list[str] | None:
        try:
            words = shlex.split(argument)
        except ValueError as err:
            self._say(f"{self._escape}{command}: {err}")
            return None
        if not words:
            self._say(f"{self._escape}{command}: give a file name")
            return None
        return words

    def _attach(self, command: str, argument: str) -> None:
        if not argument and self.attachments:
            self._say("Attachments: " + ", ".join(self.attachments))
            return
        paths = self._words(command, argument)
        for path in paths or ():
            try:
                self._hooks.check_attachment(path)
            except (OSError, RelayError) as err:
                self._say(f"{path}: {_reason(err)}; not attached")
                continue
            self.attachments.append(path)

    def _read(self, argument: str) -> None:
        words = self._words("r", argument)
        if words is None:
            return
        if len(words) != 1:
            self._say(f"{self._escape}r: one file name, please")
            return
        path = words[0]
        try:
            content = self._hooks.read_file(path)
        except (OSError, RelayError) as err:
            self._say(f"{path}: {_reason(err)}")
            return
        if content:
            self._add_line(content)
        lines = content.count(b"\n")
        self._say(f'"{path}" {lines} lines, {len(content)} bytes')

    def _print(self) -> None:
        lines = ["-------", "Message contains:"]
        for name, values in (("To", self.to), ("Cc", self.cc), ("Bcc", self.bcc)):
            if values:
                lines.append(f"{name}: {', '.join(values)}")
        if self.subject is not None:
            lines.append(f"Subject: {self.subject}")
        if self.attachments:
            lines.append(f"Attachments: {', '.join(self.attachments)}")
        lines.append("")
        text = self.body.decode(self._charset, "replace")
        self._say("\n".join(lines) + "\n" + text.removesuffix("\n"))
        self._say("(continue)")

    def _edit(self, variable: str) -> None:
        try:
            edited = self._hooks.edit(self.body, variable)
        except (OSError, RelayError) as err:
            self._say(f"${variable}: {_reason(err)}; the message is unchanged")
            return
        self._body = [edited] if edited else []
        self._say("(continue)")

    def _run_shell(self, command_line: str) -> None:
        if not self._shell or self._hooks.shell is None:
            self._say(f"{self._escape}!: shell escapes are allowed only in an interactive session")
            return
        if not command_line:
            self._say(f"{self._escape}!: give a command")
            return
        try:
            self._hooks.shell(command_line)
        except (OSError, RelayError) as err:
            self._say(f"{self._escape}!: {_reason(err)}")
            return
        self._say("!")


def _reason(err: OSError | RelayError) -> str:
    """The reason alone: the callers print the path themselves."""
    if isinstance(err, RelayError):
        return err.message
    return err.strerror or str(err)
