"""mail.rc files as s-nail reads them: aliases, variables and `file:line` diagnostics.

Concern: turn `/etc/mail.rc` and `~/.mailrc` text into an alias table and a variable table
exactly as s-nail v14.9 would, and keep enough positions (every statement and every word
with its offsets in the file, every logical line with its physical line span) for
`mailx.aliasbook` to edit the file without touching any other byte.

Format (s-nail(1) "COMMANDS", measured against s-nail v14.9.24; see man/mail.rc.5):
- One command per line. Leading and trailing whitespace is dropped, blank lines are
  skipped. A `\\` at the very end of a line (an odd number of them) joins the next line,
  whose leading whitespace is dropped. CRLF line ends and a missing final newline are
  accepted. A line starting with `#` is a comment; a trailing `\\` continues it too.
- Commands may be abbreviated: the first entry of s-nail's command table that starts
  with the word is meant (`a` is alias, `se` set, `uns` unset).
- `alias`/`group NAME MEMBER...` (repeating appends), `unalias NAME...` (`*` = all),
  `unset NAME...` and `source FILE` use shell-style quoting: `'...'` literal, `"..."`
  with `\\` escaping `$ \\` " \\\\`, `$'...'` with C escapes, a bare `\\` escaping the next
  character, adjacent pieces forming one word, `$name`/`${name}` expansion, an unquoted
  `#` starting a word begins a comment, and an unquoted `;` ends the command.
- `set` uses s-nail's old-style quoting unless prefixed by `wysh`: paired quotes, `\\`
  outside quotes escaping the next character, no comments, no `;`, no `$` expansion.
  `set name=value`, `set name` (empty value), `set noname` (unset); several per line.
- `if`/`elif`/`else`/`endif` with the conditions `r`(eceive), `s`(end), `t`(erminal), a
  boolean, `$var`, and `$var ==|!=|=@|!@ value`; a `define`/`account NAME {` block is
  a macro body and not executed. All other s-nail commands are skipped silently; an
  unknown command is a diagnostic and the rest of the file is still read.

Alias members are validated as s-nail does when the `alias` command runs: an invalid one
is reported and dropped, the valid ones are kept. Addresses are parsed with
`email.headerregistry`; only s-nail's `Name<addr>` form is split by hand.
"""

from __future__ import annotations

import os

from relay import (
    DataError,
    classify_recipient,
    dedupe_recipients,
    expand,
    is_local_name,
    recipient_problem,
)
from relay import (
    Recipient as Recipient,  # re-exported: mail's recipient is relay's model
)
from relay.records import Record, Value

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

# s-nail's command table in lookup order (`s-nail -X list`, v14.9.24). An abbreviation
# means the first command it is a prefix of, so the order matters: `a` is alias, `g`
# group, `se` set, `uns` unset.
_COMMAND_TABLE: tuple[str, ...] = tuple(
    """
    # - ! = ? | alias account addrcodec alternates answered bind copy cache call call_if
    cd certsave chdir charsetalias colour commandalias connect Copy collapse csop cwd
    delete discard Decrypt decrypt define digmsg disconnect dotmove dp dt draft edit echo
    echoerr echon echoerrn else elif endif environ errors eval exit Followup from File file
    filetype flag followup Folder folder folders Forward forward followupall followupsender
    fwddiscard fwdignore fwdretain group ghost headers headerpick help history hold if
    ignore imap imapcodec Lfollowup list localopts Lreply Mail mail mailcap mbox mimetype
    mimeview mlist mlsubscribe More more Move move mtaaliases Mv mv next netrc New new
    newmail noop Print print Page page Pipe pipe preserve quit reply read readsh readall
    readctl remove rename Reply Resend resend Respond respond retain return replyall
    replysender respondall respondsender Save save set search Seen seen shell shcodec shift
    shortcut Show show size sleep source sort source_if spamclear spamforget spamham
    spamrate spamset spamspam saveignore savediscard saveretain Type type tls Top top touch
    thread undelete unalias unaccount unalternates unanswered unbind uncharsetalias
    uncollapse uncolour uncommandalias undefine undraft unfiletype unflag ungroup
    unheaderpick unignore unmlist unmlsubscribe unmimetype Unread unread unretain unset
    unshortcut unsort urlcodec unfwdignore unfwdretain unghost unsaveignore unsaveretain
    unthread visual varshow verify version vexpr vpospar write xit xcall Z z
    """.split()  # noqa: SIM905 (kept as s-nail prints it, easy to compare)
)

_COMMAND_NAMES = frozenset(_COMMAND_TABLE)

# What this module does with a command; everything else in the table is "skip".
_KINDS: dict[str, str] = {
    "alias": "alias",
    "group": "alias",
    "unalias": "unalias",
    "ungroup": "unalias",
    "set": "set",
    "unset": "unset",
    "source": "source",
    "source_if": "source_if",
    "if": "if",
    "elif": "elif",
    "else": "else",
    "endif": "endif",
    "define": "define",
    "account": "account",
    "#": "comment",
}

# Commands whose arguments s-nail always splits with the shell-style rules.
_SHELL_STYLE = frozenset({"alias", "unalias", "unset", "source", "source_if"})

# s-nail's command modifiers (s-nail(1) "Command modifiers"), words before the command.
_MODIFIERS = frozenset({"ignerr", "wysh", "local", "u", "scope"})

_WS = " \t"
_STRIP = " \t\r\f\v"
# Character classes scanned with str methods, not `re`: every `mail` parses its mail.rc
# files, and the patterns (below, as `re` would write them) cost `re` its import.
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
_SET_NAME_CHARS = _NAME_CHARS | frozenset("@.:+-")
_SIGN_COMMANDS = frozenset("-!=?|#")


def _name_end(s: str, i: int) -> int:
    """The end of `[A-Za-z_][A-Za-z0-9_]*` matched at `i`; `i` when there is none."""
    if i >= len(s) or s[i] not in _NAME_START:
        return i
    i += 1
    while i < len(s) and s[i] in _NAME_CHARS:
        i += 1
    return i


def _command_word_end(s: str, i: int) -> int | None:
    """The end of `\\?(?:[A-Za-z_][A-Za-z0-9_]*|[-!=?|#])` matched at `i`, or None."""
    start = i + 1 if s.startswith("\\", i) else i
    end = _name_end(s, start)
    if end > start:
        return end
    if start < len(s) and s[start] in _SIGN_COMMANDS:
        return start + 1
    return None


def _is_set_name(name: str) -> bool:
    """`[A-Za-z0-9_][A-Za-z0-9_@.:+-]*` the whole of `name`: a variable `set` takes."""
    return bool(name) and name[0] in _NAME_CHARS and all(ch in _SET_NAME_CHARS for ch in name)


_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "E": "\x1b",
    "e": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
}
_BOOLEANS = {"on": True, "yes": True, "y": True, "true": True}
_BOOLEANS.update({"off": False, "no": False, "n": False, "false": False})

#: `source` nesting deeper than this is refused (a file sourcing itself).
MAX_SOURCE_DEPTH = 10
#: Where the system mail.rc lives unless $MAILX_SYSTEM_RC names another file.
SYSTEM_RC = "/etc/mail.rc"


# --- the parse tree -------------------------------------------------------------------
# Values (`relay.records.Value`: hashable), as the frozen dataclasses they were; not
# dataclasses, whose import (`inspect`) and generated code cost every `mail` its start.


class Diagnostic(Value):
    """A problem found while reading a mail.rc: `path:line: message`."""

    __slots__ = ("line", "message", "path", "severity")

    path: str
    line: int | None
    message: str
    #: "error", or "warning" for what s-nail reports but cannot change the outcome.
    severity: str

    def __init__(self, path: str, line: int | None, message: str, severity: str = "error") -> None:
        self.path = path
        self.line = line
        self.message = message
        self.severity = severity

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"


class Var(Value):
    """A `$name` or `${name}` reference inside a word, expanded when the command runs."""

    __slots__ = ("name",)

    name: str

    def __init__(self, name: str) -> None:
        self.name = name


class Word(Value):
    """One argument after quote removal; `start`/`end` are offsets of its source text."""

    __slots__ = ("end", "pieces", "start")

    pieces: tuple[str | Var, ...]
    start: int
    end: int

    def __init__(self, pieces: tuple[str | Var, ...], start: int, end: int) -> None:
        self.pieces = pieces
        self.start = start
        self.end = end

    @property
    def literal(self) -> str:
        """The word with variable references written back as `${name}`."""
        return "".join(p if isinstance(p, str) else "${" + p.name + "}" for p in self.pieces)

    def expand(self, lookup: Callable[[str], str]) -> str:
        """The word with each variable reference replaced by `lookup(name)`."""
        return "".join(p if isinstance(p, str) else lookup(p.name) for p in self.pieces)


class LogicalLine(Value):
    """Physical lines joined by continuations; offsets span them with their line ends."""

    __slots__ = ("dangling", "end", "first", "last", "start")

    start: int
    end: int
    first: int
    last: int
    #: The last physical line ends in a continuation `\\` with nothing left to join.
    dangling: bool

    def __init__(self, start: int, end: int, first: int, last: int, dangling: bool = False) -> None:
        self.start = start
        self.end = end
        self.first = first
        self.last = last
        self.dangling = dangling


class Statement(Value):
    """One command: `kind` is what this module does with it (`alias`, `set`, `skip`...)."""

    __slots__ = ("command", "end", "error", "kind", "line", "logical", "start", "words")

    kind: str
    command: str
    words: tuple[Word, ...]
    start: int
    end: int
    line: int
    logical: int
    error: str | None

    def __init__(
        self,
        kind: str,
        command: str,
        words: tuple[Word, ...],
        start: int,
        end: int,
        line: int,
        logical: int,
        error: str | None = None,
    ) -> None:
        self.kind = kind
        self.command = command
        self.words = words
        self.start = start
        self.end = end
        self.line = line
        self.logical = logical
        self.error = error


class RcFile(Value):
    """A parsed mail.rc: its text, logical lines, statements and syntax diagnostics."""

    __slots__ = ("diagnostics", "lines", "path", "statements", "text")

    path: str
    text: str
    lines: tuple[LogicalLine, ...]
    statements: tuple[Statement, ...]
    diagnostics: tuple[Diagnostic, ...]

    def __init__(
        self,
        path: str,
        text: str,
        lines: tuple[LogicalLine, ...],
        statements: tuple[Statement, ...],
        diagnostics: tuple[Diagnostic, ...],
    ) -> None:
        self.path = path
        self.text = text
        self.lines = lines
        self.statements = statements
        self.diagnostics = diagnostics

    @property
    def newline(self) -> str:
        """The file's dominant line end, for lines an edit adds."""
        crlf = self.text.count("\r\n")
        return "\r\n" if crlf and crlf * 2 >= self.text.count("\n") else "\n"


# --- lines ----------------------------------------------------------------------------


class _Logical(Record):
    __slots__ = ("chars", "line", "offs")

    line: LogicalLine
    chars: str
    offs: list[int]

    def __init__(self, line: LogicalLine, chars: str, offs: list[int]) -> None:
        self.line = line
        self.chars = chars
        self.offs = offs


def _physical(text: str) -> Iterable[tuple[int, int, int]]:
    """(start, end of content, start of next line) of each line; CRLF counts as the end."""
    pos, size = 0, len(text)
    while pos < size:
        newline = text.find("\n", pos)
        if newline < 0:
            yield pos, size, size
            return
        end = newline - 1 if newline > pos and text[newline - 1] == "\r" else newline
        yield pos, end, newline + 1
        pos = newline + 1


def _logical_lines(text: str) -> list[_Logical]:
    physical = list(_physical(text))
    result: list[_Logical] = []
    index = 0
    while index < len(physical):
        first = index
        chars: list[str] = []
        offs: list[int] = []
        joined = False
        while True:
            start, end, _ = physical[index]
            pos = start
            if joined:  # s-nail drops the leading whitespace of a continuation line
                while pos < end and text[pos] in _WS:
                    pos += 1
            back = end
            while back > pos and text[back - 1] == "\\":
                back -= 1
            continued = (end - back) % 2 == 1
            stop = end - 1 if continued else end
            chars.extend(text[pos:stop])
            offs.extend(range(pos, stop))
            index += 1
            if continued and index < len(physical):
                joined = True
                continue
            break
        line = LogicalLine(
            start=physical[first][0],
            end=physical[index - 1][2],
            first=first + 1,
            last=index,
            dangling=continued,
        )
        lo, hi = 0, len(chars)
        while lo < hi and chars[lo] in _STRIP:
            lo += 1
        while hi > lo and chars[hi - 1] in _STRIP:
            hi -= 1
        result.append(_Logical(line, "".join(chars[lo:hi]), offs[lo:hi]))
    return result


# --- words ----------------------------------------------------------------------------


class _Pieces:
    def __init__(self) -> None:
        self.parts: list[str | Var] = []
        self.buffer: list[str] = []

    def text(self, value: str) -> None:
        self.buffer.append(value)

    def var(self, name: str) -> None:
        self.flush()
        self.parts.append(Var(name))

    def flush(self) -> None:
        if self.buffer:
            self.parts.append("".join(self.buffer))
            self.buffer = []

    def done(self) -> tuple[str | Var, ...]:
        self.flush()
        return tuple(self.parts)


class _Unterminated(Exception):
    pass


def _variable(s: str, i: int, out: _Pieces) -> int:
    """`s[i]` is `$`: a `${name}` or `$name` reference, else a literal `$`."""
    if i + 1 < len(s) and s[i + 1] == "{":
        close = s.find("}", i + 2)
        if close > i + 2:
            out.var(s[i + 2 : close])
            return close + 1
    end = _name_end(s, i + 1)
    if end > i + 1:
        out.var(s[i + 1 : end])
        return end
    out.text("$")
    return i + 1


def _double_quoted(s: str, i: int, out: _Pieces) -> int:
    """`s[i]` follows `"`; return the index after the closing quote."""
    while i < len(s):
        char = s[i]
        if char == '"':
            return i + 1
        if char == "\\" and i + 1 < len(s) and s[i + 1] in '$`"\\':
            out.text(s[i + 1])
            i += 2
        elif char == "$":
            i = _variable(s, i, out)
        else:
            out.text(char)
            i += 1
    raise _Unterminated('"')


def _take(s: str, i: int, digits: str, most: int) -> str:
    end = i
    while end < len(s) and end - i < most and s[end] in digits:
        end += 1
    return s[i:end]


_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"


def _byte(value: int) -> str:
    """One byte from an escape; a non-ASCII byte is kept as `decode()` keeps it."""
    value &= 0xFF
    return chr(value) if value < 0x80 else chr(0xDC00 + value)


def _escape(s: str, i: int, out: _Pieces) -> tuple[str | None, int]:
    """`s[i]` is the character after `\\` in `$'...'`: (text or None for `$var`, next i)."""
    char = s[i]
    if char in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[char], i + 1
    if char in _OCTAL:
        if char == "0":  # `\0NNN`: an optional extra leading 0 (`\0101` is "A")
            rest = _take(s, i + 1, _OCTAL, 3)
            if len(rest) == 3:
                return _byte(int(rest, 8)), i + 4
        digits = _take(s, i, _OCTAL, 3)
        return _byte(int(digits, 8)), i + len(digits)
    if char in "xuU":
        most = {"x": 2, "u": 4, "U": 8}[char]
        digits = _take(s, i + 1, _HEX, most)
        if not digits:
            return char, i + 1
        value = int(digits, 16)
        if char == "x":
            return _byte(value), i + 1 + len(digits)
        if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            return "\\" + char + digits, i + 1 + len(digits)  # s-nail leaves it unexpanded
        return chr(value), i + 1 + len(digits)
    if char == "c" and i + 1 < len(s):
        return chr((ord(s[i + 1].upper()) ^ 64) & 0x7F), i + 2
    if char == "$":
        return None, _variable(s, i, out)
    return char, i + 1


def _dollar_quoted(s: str, i: int, out: _Pieces) -> int:
    """`s[i]` follows `$'`; C escapes; a NUL suppresses the rest of the quote."""
    silent = _Pieces()  # receives what a NUL suppressed
    target = out
    while i < len(s):
        char = s[i]
        if char == "'":
            return i + 1
        if char != "\\":
            target.text(char)
            i += 1
            continue
        if i + 1 >= len(s):
            break
        text, i = _escape(s, i + 1, target)
        if text == "\0":
            target = silent
        elif text is not None:
            target.text(text)
    raise _Unterminated("$'")


_RawWord = tuple[tuple[str | Var, ...], int, int]


def _shell_words(s: str, i: int) -> tuple[list[_RawWord], int | None]:
    """Shell-style words of `s[i:]`: ([(pieces, start, end)], index after `;` or None)."""
    words: list[_RawWord] = []
    size = len(s)
    while True:
        while i < size and s[i] in _WS:
            i += 1
        if i >= size or s[i] == "#":
            return words, None
        if s[i] == ";":
            return words, i + 1
        start = i
        out = _Pieces()
        while i < size and s[i] not in " \t;":
            char = s[i]
            if char == "'":
                close = s.find("'", i + 1)
                if close < 0:
                    raise _Unterminated("'")
                out.text(s[i + 1 : close])
                i = close + 1
            elif char == '"':
                i = _double_quoted(s, i + 1, out)
            elif char == "$" and i + 1 < size and s[i + 1] == "'":
                i = _dollar_quoted(s, i + 2, out)
            elif char == "$":
                i = _variable(s, i, out)
            elif char == "\\" and i + 1 < size:
                out.text(s[i + 1])
                i += 2
            else:
                out.text(char)
                i += 1
        words.append((out.done(), start, i))


def _old_words(s: str, i: int) -> list[_RawWord]:
    """s-nail's old-style words: paired quotes (`\\` only escapes the quote), `\\` outside."""
    words: list[_RawWord] = []
    size = len(s)
    while True:
        while i < size and s[i] in _WS:
            i += 1
        if i >= size:
            return words
        start = i
        buffer: list[str] = []
        while i < size and s[i] not in _WS:
            char = s[i]
            if char in "'\"":
                i += 1
                while i < size and s[i] != char:
                    if s[i] == "\\" and i + 1 < size and s[i + 1] == char:
                        i += 1
                    buffer.append(s[i])
                    i += 1
                i = min(i + 1, size)  # s-nail accepts a missing closing quote here
            elif char == "\\" and i + 1 < size:
                buffer.append(s[i + 1])
                i += 2
            else:
                buffer.append(char)
                i += 1
        words.append((("".join(buffer),), start, i))


def _command_lookup(word: str) -> str | None:
    if word in _COMMAND_NAMES:
        return word  # no command is a prefix of an earlier one: a full name is itself
    for name in _COMMAND_TABLE:
        if name.startswith(word):
            return name
    return None


# --- parse ----------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.statements: list[Statement] = []
        self.diagnostics: list[Diagnostic] = []

    def parse(self) -> RcFile:
        logical = _logical_lines(self.text)
        block: tuple[str, int] | None = None
        for index, item in enumerate(logical):
            if block is not None:
                if item.chars == "}":
                    block = None
                continue
            if not item.chars:
                continue
            pos: int | None = 0
            while pos is not None:
                pos, opened = self.statement(item, index, pos)
                if opened:
                    block = (opened, item.line.first)
        if block is not None:
            self.diag(block[1], f"{block[0]}: block not closed with '}}' before end of file")
        return RcFile(
            path=self.path,
            text=self.text,
            lines=tuple(item.line for item in logical),
            statements=tuple(self.statements),
            diagnostics=tuple(self.diagnostics),
        )

    def diag(self, line: int, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.path, line, message))

    def statement(self, item: _Logical, index: int, pos: int) -> tuple[int | None, str]:
        """Parse one command at `item.chars[pos:]`: (start of the next one, block opened)."""
        s, lineno = item.chars, item.line.first
        while pos < len(s) and s[pos] in _WS:
            pos += 1
        if pos >= len(s):
            return None, ""
        start = pos
        if s[pos] == "#":
            return None, ""
        wysh = False
        while True:
            end = _command_word_end(s, pos)
            written = s[pos:end] if end is not None else s[pos:].split(None, 1)[0]
            if end is not None and written in _MODIFIERS and end < len(s) and s[end] in _WS:
                wysh = wysh or written in ("wysh", "local")
                pos = end
                while pos < len(s) and s[pos] in _WS:
                    pos += 1
                continue
            break
        name = _command_lookup(written.lstrip("\\")) if end is not None else None
        if name is None:
            # s-nail cancels the rest of the line after an unknown command.
            self.diag(lineno, f"unknown command '{printable(written)}'")
            return None, ""
        assert end is not None
        pos = end
        kind = _KINDS.get(name, "skip")
        error: str | None = None
        following: int | None = None
        raw: list[_RawWord] = []
        if kind in _SHELL_STYLE or (kind == "set" and wysh):
            try:
                raw, following = _shell_words(s, pos)
            except _Unterminated as err:
                error = f"{name}: no closing quote ({err})"
                self.diag(lineno, error)
        elif kind != "skip":
            raw = _old_words(s, pos)
        last = raw[-1][2] if raw else (len(s) if kind == "skip" else pos)
        if error is not None:
            last = len(s)
        words = tuple(Word(p, item.offs[a], item.offs[b - 1] + 1) for p, a, b in raw)
        self.statements.append(
            Statement(
                kind=kind,
                command=name,
                words=words,
                start=item.offs[start],
                end=item.offs[last - 1] + 1,
                line=lineno,
                logical=index,
                error=error,
            )
        )
        opened = ""
        if kind in ("define", "account") and words and words[-1].literal == "{":
            opened = name
        return following, opened


def parse(text: str, path: str) -> RcFile:
    """Parse mail.rc `text` (read from `path`, for diagnostics) into statements."""
    return _Parser(text, path).parse()


def decode(data: bytes) -> str:
    """mail.rc bytes as text; bytes that are not UTF-8 survive a round trip unchanged."""
    return data.decode("utf-8", "surrogateescape")


def read_rc(path: str) -> RcFile:
    """Read and parse one file; raises OSError (FileNotFoundError when it is missing)."""
    with open(path, "rb") as handle:
        return parse(decode(handle.read()), path)


# --- names and members ----------------------------------------------------------------


def printable(text: str) -> str:
    """`text` for a one-line message: control characters and stray bytes escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def is_valid_alias_name(name: str, *, member: bool = False) -> bool:
    """s-nail's alias name rule (measured): `[A-Za-z0-9_]` first, then also `-#:@!.` and
    8-bit characters, and `$` as the last character. As a `member` (a local user name),
    `:` is refused too, since s-nail rejects `a:b` there (`relay.is_local_name`)."""
    if member:
        return is_local_name(name)
    return is_local_name(name.replace(":", "-")) if name[:1] != ":" else False


def member_problem(text: str) -> str | None:
    """Why s-nail's `alias` would refuse this member, or None if it is acceptable
    (`relay.recipients`, the one classifier)."""
    return recipient_problem(text)


def parse_recipient(text: str) -> Recipient:
    """Parse an alias member or command-line recipient (`My Name<a@x>`, `a@x`, `bob`).

    Raises DataError (exit 65) when it is neither an address nor a valid local name.
    File and pipe targets parse, with `kind` saying so; delivering to them is refused.
    """
    return classify_recipient(text)


# --- evaluation -----------------------------------------------------------------------


class Member(Value):
    """One alias member as written (after quote removal) and where it was written."""

    __slots__ = ("line", "path", "text")

    text: str
    path: str
    line: int

    def __init__(self, text: str, path: str, line: int) -> None:
        self.text = text
        self.path = path
        self.line = line


class AliasCommand(Value):
    """An `alias` or `unalias` statement with its expanded words, for `mail-alias`.

    `args` is (name, member...) for alias and (name...) for unalias; `active` is False in
    an `if` branch not taken; `depth` counts the enclosing `if` blocks.
    """

    __slots__ = ("active", "args", "depth", "kind", "path", "statement")

    kind: str
    statement: Statement
    path: str
    args: tuple[str, ...]
    active: bool
    depth: int

    def __init__(
        self,
        kind: str,
        statement: Statement,
        path: str,
        args: tuple[str, ...],
        active: bool,
        depth: int,
    ) -> None:
        self.kind = kind
        self.statement = statement
        self.path = path
        self.args = args
        self.active = active
        self.depth = depth


class MailRc(Record):
    """Everything the mail.rc files said, in the order s-nail would have applied it."""

    __slots__ = ("aliases", "commands", "diagnostics", "files", "origins", "rejected", "variables")

    aliases: dict[str, list[Member]]
    variables: dict[str, str]
    #: variable -> (file, line) of the `set` that gave its value; -S values have none.
    origins: dict[str, tuple[str, int]]
    diagnostics: list[Diagnostic]
    files: list[RcFile]
    commands: list[AliasCommand]
    #: Members the `alias` command refused (reported as diagnostics, as s-nail does, and
    #: left out of `aliases`): sending to such an alias is refused, not done short.
    rejected: dict[str, list[Member]]

    def __init__(
        self,
        aliases: dict[str, list[Member]] | None = None,
        variables: dict[str, str] | None = None,
        origins: dict[str, tuple[str, int]] | None = None,
        diagnostics: list[Diagnostic] | None = None,
        files: list[RcFile] | None = None,
        commands: list[AliasCommand] | None = None,
        rejected: dict[str, list[Member]] | None = None,
    ) -> None:
        self.aliases = {} if aliases is None else aliases
        self.variables = {} if variables is None else variables
        self.origins = {} if origins is None else origins
        self.diagnostics = [] if diagnostics is None else diagnostics
        self.files = [] if files is None else files
        self.commands = [] if commands is None else commands
        self.rejected = {} if rejected is None else rejected

    def lookup(self, name: str) -> list[str] | None:
        """Members of alias `name` (case-sensitive, as s-nail), None when not an alias;
        the `lookup` of `relay.aliases.expand`."""
        members = self.aliases.get(name)
        return [m.text for m in members] if members else None


class _Branch(Record):
    __slots__ = ("active", "line", "parent", "taken")

    line: int
    parent: bool
    active: bool
    taken: bool

    def __init__(self, line: int, parent: bool, active: bool, taken: bool) -> None:
        self.line = line
        self.parent = parent
        self.active = active
        self.taken = taken


class _Evaluator:
    def __init__(
        self,
        environ: Mapping[str, str],
        overrides: Mapping[str, str | None],
        terminal: bool,
        follow_source: bool,
    ) -> None:
        self.environ = environ
        self.fixed = overrides
        self.terminal = terminal
        self.follow_source = follow_source
        self.rc = MailRc()
        for name, value in overrides.items():
            if value is not None:
                self.rc.variables[name] = value
        self.depth = 0

    def value(self, name: str) -> str:
        found = self.rc.variables.get(name)
        return found if found is not None else self.environ.get(name, "")

    def diag(self, path: str, line: int | None, message: str, severity: str = "error") -> None:
        self.rc.diagnostics.append(Diagnostic(path, line, message, severity))

    def run(self, rc: RcFile) -> None:
        self.rc.files.append(rc)
        self.rc.diagnostics.extend(rc.diagnostics)
        stack: list[_Branch] = []
        for st in rc.statements:
            if st.kind in ("if", "elif", "else", "endif"):
                self.branch(rc.path, st, stack)
                continue
            active = not stack or stack[-1].active
            if st.kind in ("alias", "unalias") and st.error is None:
                args = tuple(w.expand(self.value) for w in st.words)
                record = AliasCommand(st.kind, st, rc.path, args, active, len(stack))
                self.rc.commands.append(record)
            if not active or st.error is not None:
                continue
            if st.kind == "alias":
                self.alias(rc.path, st)
            elif st.kind == "unalias":
                self.unalias(rc.path, st)
            elif st.kind == "set":
                self.set(rc.path, st)
            elif st.kind == "unset":
                for word in st.words:
                    name = word.expand(self.value)
                    if name not in self.fixed:
                        self.rc.variables.pop(name, None)
            elif st.kind in ("source", "source_if"):
                self.source(rc.path, st)
        for branch in stack:
            self.diag(rc.path, branch.line, "if: missing endif before end of file")

    def branch(self, path: str, st: Statement, stack: list[_Branch]) -> None:
        words = [w.literal for w in st.words]
        if st.kind == "if":
            parent = not stack or stack[-1].active
            result = self.condition(words)
            if result is None:
                self.diag(
                    path, st.line, f"if: unsupported condition '{' '.join(words)}'", "warning"
                )
                stack.append(_Branch(st.line, parent, False, True))  # skip every branch
            else:
                stack.append(_Branch(st.line, parent, parent and result, result))
            return
        if not stack:
            self.diag(path, st.line, f"{st.kind} without if")
            return
        top = stack[-1]
        if st.kind == "endif":
            stack.pop()
        elif st.kind == "else":
            top.active = top.parent and not top.taken
            top.taken = True
        else:
            result = False if top.taken else self.condition(words)
            if result is None:
                self.diag(
                    path, st.line, f"elif: unsupported condition '{' '.join(words)}'", "warning"
                )
                result = False
            top.active = top.parent and result
            top.taken = top.taken or result

    def condition(self, words: list[str]) -> bool | None:
        """s-nail's old-style `if` conditions this front end can decide, else None."""
        if len(words) == 1:
            word = words[0].lower()
            if word in ("r", "receive"):
                return False
            if word in ("s", "send"):
                return True
            if word in ("t", "term", "terminal"):
                return self.terminal
            if word in _BOOLEANS:
                return _BOOLEANS[word]
            if word.isdigit():
                return int(word) != 0
            if word.startswith("$"):
                name = words[0][1:].strip("{}")
                return name in self.rc.variables or name in self.environ
            return None
        if len(words) == 3 and words[0].startswith("$"):
            left = self.value(words[0][1:].strip("{}"))
            op, right = words[1], words[2]
            if right.startswith("$"):
                right = self.value(right[1:].strip("{}"))
            if op.endswith("?"):
                op, left, right = op[:-1], left.lower(), right.lower()
            tests = {
                "==": left == right,
                "!=": left != right,
                "=@": right in left,
                "!@": right not in left,
            }
            return tests.get(op)
        return None

    def alias(self, path: str, st: Statement) -> None:
        words = [w.expand(self.value) for w in st.words]
        if len(words) < 2:
            return  # `alias` and `alias NAME` only display, in s-nail
        name = words[0]
        if not is_valid_alias_name(name):
            self.diag(path, st.line, f"alias: not a valid name: '{printable(name)}'")
            return
        members: list[Member] = []
        for text in words[1:]:
            if not text:
                continue  # an unquoted `$unset` expands to nothing
            problem = member_problem(text)
            if problem:
                shown = printable(text)
                self.diag(path, st.line, f"alias {name}: invalid member '{shown}': {problem}")
                self.rc.rejected.setdefault(name, []).append(Member(text, path, st.line))
            else:
                members.append(Member(text, path, st.line))
        if members:
            self.rc.aliases.setdefault(name, []).extend(members)

    def unalias(self, path: str, st: Statement) -> None:
        for word in st.words:
            name = word.expand(self.value)
            if name == "*":
                self.rc.aliases.clear()
                self.rc.rejected.clear()
            else:
                had_members = self.rc.aliases.pop(name, None) is not None
                had_refused = self.rc.rejected.pop(name, None) is not None
                if not (had_members or had_refused):
                    self.diag(path, st.line, f"unalias: no such alias '{name}'", "warning")

    def set(self, path: str, st: Statement) -> None:
        seen: list[str] = []
        for word in st.words:
            text = word.expand(self.value)
            seen.append(text)
            name, equals, value = text.partition("=")
            if not equals and name.startswith("no") and len(name) > 2:
                name = name[2:]
                if name not in self.fixed:
                    self.rc.variables.pop(name, None)
                continue
            if not _is_set_name(name):
                hint = " ('#' starts no comment after set)" if name.startswith("#") else ""
                # Never echo a word that follows a password variable: it may be the
                # password, written the way s-nail's old syntax takes it.
                secret = any("pass" in w.lower() for w in seen)
                shown = f"'{name}'" if not secret else f"(word {len(seen)}, not shown)"
                self.diag(path, st.line, f"set: invalid variable name {shown}{hint}")
                continue
            if name not in self.fixed:  # -S beats the files, as in s-nail
                self.rc.variables[name] = value
                self.rc.origins[name] = (path, st.line)

    def source(self, path: str, st: Statement) -> None:
        if not self.follow_source or not st.words:
            return
        target = os.path.expanduser(st.words[0].expand(self.value))
        if target.endswith("|"):
            self.diag(path, st.line, f"{st.command}: command pipes are not run: '{target}'")
            return
        if self.depth >= MAX_SOURCE_DEPTH:
            self.diag(path, st.line, f"{st.command}: nested deeper than {MAX_SOURCE_DEPTH}")
            return
        try:
            rc = read_rc(target)
        except FileNotFoundError:
            if st.command == "source":
                self.diag(path, st.line, f"source: no such file: '{target}'")
            return
        except OSError as err:
            self.diag(path, st.line, f"{st.command}: cannot read '{target}': {err.strerror}")
            return
        self.depth += 1
        try:
            self.run(rc)
        finally:
            self.depth -= 1


def evaluate(
    files: Iterable[RcFile],
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
    terminal: bool = False,
    follow_source: bool = True,
) -> MailRc:
    """Apply parsed files in order. `overrides` are `-S` settings (None unsets), which
    the files cannot change; `terminal` answers `if t`."""
    evaluator = _Evaluator(
        os.environ if environ is None else environ, overrides or {}, terminal, follow_source
    )
    for rc in files:
        evaluator.run(rc)
    return evaluator.rc


def load(
    paths: Sequence[str],
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
    terminal: bool = False,
) -> MailRc:
    """Read and apply the mail.rc files in order; a missing file is skipped, an
    unreadable one is a diagnostic (the caller decides whether that is fatal)."""
    files: list[RcFile] = []
    unreadable: list[Diagnostic] = []
    for path in paths:
        try:
            files.append(read_rc(path))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as err:
            unreadable.append(Diagnostic(path, None, f"cannot read: {err.strerror or err}"))
    rc = evaluate(files, environ=environ, overrides=overrides, terminal=terminal)
    rc.diagnostics[:0] = unreadable
    return rc


# --- where the files are --------------------------------------------------------------


def system_rc_path(environ: Mapping[str, str]) -> str:
    """The system mail.rc: $MAILX_SYSTEM_RC, else /etc/mail.rc."""
    return environ.get("MAILX_SYSTEM_RC") or SYSTEM_RC


def user_rc_path(environ: Mapping[str, str], home: str) -> str:
    """The user's mail.rc: $MAILRC, else ~/.mailrc."""
    return os.path.expanduser(environ.get("MAILRC") or os.path.join(home, ".mailrc"))


def home_directory(environ: Mapping[str, str]) -> str:
    """The home for `~/.mailrc`: $HOME, else the passwd entry. (s-nail ignores $HOME for
    root; this front end does not, so a test or `sudo -H` can point it elsewhere.)"""
    if environ.get("HOME"):
        return environ["HOME"]
    import relay

    # Without $HOME, the passwd home, found as the relay finds it for dead.letter.
    return relay.own_home({}, os.getuid()) or "/"


def default_rc_paths(
    environ: Mapping[str, str], home: str, *, no_system: bool = False
) -> list[str]:
    """The files `mail` reads, in order (mail(1) FILES): the system file unless `-n`
    (`no_system`) or MAILX_NO_SYSTEM_RC is set (to anything, as in s-nail), then the
    user's."""
    paths: list[str] = []
    if not no_system and "MAILX_NO_SYSTEM_RC" not in environ:
        paths.append(system_rc_path(environ))
    paths.append(user_rc_path(environ, home))
    return paths


# --- expansion for the front end ------------------------------------------------------


def _origin(rc: MailRc, text: str, via: tuple[str, ...]) -> tuple[str | None, int | None]:
    if via:
        for member in rc.aliases.get(via[-1], ()):
            if member.text == text or member.text == "\\" + text:
                return member.path, member.line
    return None, None


def expand_recipients(names: Iterable[str], rc: MailRc) -> list[Recipient]:
    """Expand recipients through the mail.rc aliases (relay.aliases.expand: nesting,
    `\\name`, self-reference, loops refused, linear in the size of the book) into
    header and envelope forms.

    `alias archuser 'My Name'<someone@example.com>` gives header
    `My Name <someone@example.com>` and envelope `someone@example.com`; a local name
    left over stays a bare `local` recipient for the relay. Duplicates
    (`relay.dedupe_key`: domain case-folded) are dropped, first wins. Raises DataError
    (exit 65) for a loop, an invalid address, a file or pipe target, or an alias with a
    member its `alias` command refused: nothing is sent rather than part of a group.
    """

    def lookup(name: str) -> list[str] | None:
        refused = rc.rejected.get(name)
        if refused:
            member = refused[0]
            raise DataError(
                f"alias {name}: member '{printable(member.text)}' was refused when the "
                f"alias was read ({member_problem(member.text)}); nothing sent to the "
                "group rather than part of it: fix the alias (mail-alias check)",
                path=member.path,
                line=member.line,
            )
        return rc.lookup(name)

    result: list[Recipient] = []
    for item in expand(names, lookup):
        try:
            recipient = classify_recipient(item.address)
        except DataError as err:
            path, line = _origin(rc, item.address, item.via)
            chain = f" (alias {' -> '.join(item.via)})" if item.via else ""
            problem = member_problem(item.address) or err.message
            raise DataError(
                f"invalid recipient '{printable(item.address)}'{chain}: {problem}",
                path=path,
                line=line,
            ) from None
        if recipient.kind in ("file", "pipe"):
            path, line = _origin(rc, item.address, item.via)
            raise DataError(
                f"{recipient.kind} recipient refused: '{printable(item.address)}'",
                path=path,
                line=line,
            )
        result.append(recipient.with_via(item.via))
    return dedupe_recipients(result)
