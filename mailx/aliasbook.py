"""Lossless, atomic, locked edits of a mail.rc alias book, and its checks (`mail-alias`).

Concern: add, remove and rename aliases in one s-nail mail.rc file so that every byte
outside the statements that define the alias stays as it was (comments, blank lines,
order, other commands, continuations, CRLF ends, a missing final newline, even lines
with syntax errors), and check an alias table for loops, undefined names, invalid
addresses, shadowed accounts and duplicates.

Edits are computed on text as a list of (start, end, replacement) ranges from the
positions `mailx.mailrc` records, then verified: the edited text is parsed again and must
give exactly the intended alias table with every other statement unchanged, or nothing
is written (exit 70, a bug). New members are written in s-nail's shell-style quoting:
`My Name <someone@example.com>` becomes `'My Name'<someone@example.com>` (the ArchWiki
form, which s-nail reads back as that address).

Writing (`edit_file`): take an exclusive `flock` on the file itself; a writer that waited
while another replaced the file checks, once it holds the lock, that the path still names
the inode it locked, and starts again if not (a rename leaves the old inode locked and the
new one free, so without that check two writers could both proceed and one would lose
its change). A file that does not exist yet is created under a lock on its directory.
Then: read, compute, write a temporary file in the same directory, copy the mode and
owner, fsync, rename over the original, fsync the directory. A symlinked mail.rc is
edited where it points, so the link survives.
"""

from __future__ import annotations

import difflib
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from mailx.mailrc import (
    AliasCommand,
    MailRc,
    Member,
    RcFile,
    Statement,
    evaluate,
    expand_recipients,
    is_valid_alias_name,
    member_problem,
    parse,
    parse_recipient,
    printable,
)
from relay import (
    AliasLoopError,
    CantCreateError,
    DataError,
    IOFailure,
    MissingFileError,
    NoUserError,
    RelayError,
    expand,
)

# Characters s-nail's shell-style parser reads as themselves outside quotes.
_SAFE = re.compile(r"[A-Za-z0-9@%+=:,./_<>!^~*?\[\]{}()-]+\Z")


# --- quoting --------------------------------------------------------------------------


def quote_word(text: str) -> str:
    """`text` as one word of s-nail's shell-style quoting (alias, unalias)."""
    plain = all(c.isprintable() and not ("\udc80" <= c <= "\udcff") for c in text)
    safe = all(not c.isascii() or _SAFE.match(c) for c in text)
    if text and plain and safe and not text.startswith("#"):
        return text
    if plain:
        return "'" + text.replace("'", "'\\''") + "'"
    out = []
    for char in text:
        code = ord(char)
        if "\udc80" <= char <= "\udcff":
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in "\\'":
            out.append("\\" + char)
        elif not char.isprintable() and code < 0x80:
            out.append(f"\\x{code:02x}")
        elif not char.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(char)
    return "$'" + "".join(out) + "'"


def normalize_member(text: str) -> str:
    """Validate an address or name for `add` and return it as s-nail member text.

    `My Name <someone@example.com>` gives `My Name<someone@example.com>`; a display
    name s-nail could not take bare (quotes, angle brackets) stays RFC 5322-quoted.
    Raises DataError (exit 65) for anything that is not an address or a local name,
    and for file and pipe targets.
    """
    recipient = parse_recipient(text)
    if recipient.kind in ("file", "pipe"):
        raise DataError(
            f"invalid address '{printable(text)}': {recipient.kind} targets are refused"
        )
    if recipient.kind == "local":
        return text.strip()
    if not recipient.display_name:
        return recipient.envelope
    name = recipient.display_name
    if any(c in name for c in '"\\<>()@'):  # read back bare, these would change meaning
        return recipient.header
    return f"{name}<{recipient.envelope}>"


def member_token(member: str) -> str:
    """A member as written in an `alias` line: `'My Name'<someone@example.com>`."""
    match = re.fullmatch(r"([^<>\"\\]+)<([^<>]+)>", member)
    if match and not match.group(1).startswith((" ", "\t")):
        return quote_word(match.group(1)) + quote_word("<" + match.group(2) + ">")
    return quote_word(member)


def alias_line(name: str, members: Sequence[str]) -> str:
    """The `alias NAME MEMBER...` command (without its line end)."""
    return " ".join(["alias", quote_word(name), *(member_token(m) for m in members)])


def validate_name(name: str) -> str:
    """An alias name s-nail accepts, or DataError (exit 65)."""
    if not is_valid_alias_name(name):
        raise DataError(
            f"invalid alias name '{printable(name)}': use letters, digits and _ - # : @ ! . "
            "(not first, except _), a $ only last, no spaces"
        )
    return name


# --- the book -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


class AliasBook:
    """One mail.rc file as `mail-alias` edits it: its parse and its own alias table.

    `source` is not followed here: an edit only knows, and only changes, this file.
    """

    def __init__(self, rc: RcFile, environ: Mapping[str, str] | None = None) -> None:
        self.rc = rc
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.state = evaluate([rc], environ=self.environ, follow_source=False)

    @classmethod
    def from_text(cls, text: str, path: str, environ: Mapping[str, str] | None = None) -> AliasBook:
        """Parse `text` as the mail.rc at `path`."""
        return cls(parse(text, path), environ)

    @property
    def text(self) -> str:
        """The file's text."""
        return self.rc.text

    def table(self) -> dict[str, list[str]]:
        """Alias name -> member texts, as s-nail would read this file alone."""
        return {name: [m.text for m in ms] for name, ms in self.state.aliases.items()}

    def definitions(self, name: str) -> list[AliasCommand]:
        """Every `alias NAME ...` statement for `name` (also in `if` branches)."""
        return [c for c in self.state.commands if c.kind == "alias" and c.args[:1] == (name,)]

    def unaliases(self, name: str) -> list[AliasCommand]:
        """Every `unalias` statement naming `name`."""
        return [c for c in self.state.commands if c.kind == "unalias" and name in c.args]

    def names(self) -> list[str]:
        """Every alias name this file defines or mentions in an alias statement."""
        seen = dict.fromkeys(c.args[0] for c in self.state.commands if c.kind == "alias" and c.args)
        return [n for n in seen if n]

    # -- the edits, each returning the new text ---------------------------------------

    def add(self, name: str, members: Sequence[str], *, replace: bool = False) -> str:
        """Append `members` (already normalised) to alias `name`, or replace its members.

        Members already in the alias (same envelope address) are skipped on append. The
        new line goes after the alias's last top-level definition, or for a new alias
        after the last top-level alias line, unless a later `unalias` would undo it;
        then at the end of the file. Raises DataError if the result would loop.
        """
        validate_name(name)
        wanted = _unique(members)
        if not replace:
            present = {_envelope(m) for m in self.table().get(name, [])}
            wanted = [m for m in wanted if _envelope(m) not in present]
            if not wanted:
                return self.text
        if not wanted:
            raise DataError(f"alias '{name}': no address given")
        line = alias_line(name, wanted)
        edits: list[_Edit] = []
        position: int | None = None
        definitions = self.definitions(name)
        if replace and definitions:
            # In place of the first definition; the unalias lines of `name` go too.
            edits = self._removal(name)
            first = definitions[0].statement.logical
            if definitions[0].depth == 0 and not self._undone(name, first, star_only=True):
                position = self.rc.lines[first].start
        else:
            # After the last top-level definition, or after the last alias line.
            after = [d for d in definitions if d.depth == 0 and d.active]
            if not definitions:
                after = [c for c in self.state.commands if c.kind == "alias" and c.depth == 0]
            if after:
                last = after[-1].statement.logical
                if not self._undone(name, last + 1, star_only=False):
                    position = self.rc.lines[last].end
        edits.append(self._insertion(line, position))
        expected = self.table()
        expected[name] = wanted if replace else expected.get(name, []) + wanted
        return self._apply(edits, expected, {name})

    def remove(self, name: str) -> str:
        """Remove every statement defining `name` (and `name` from `unalias` lines)."""
        self._require(name)
        expected = self.table()
        expected.pop(name, None)
        return self._apply(self._removal(name), expected, {name})

    def rename(self, old: str, new: str) -> str:
        """Rename alias `old` to `new` in its definitions and `unalias` lines only."""
        validate_name(new)
        self._require(old)
        if not is_valid_alias_name(old):
            raise DataError(
                f"alias '{old}' has an invalid name, which s-nail ignores; "
                "remove it and add its addresses under a valid name"
            )
        if new == old:
            return self.text
        if self.definitions(new):
            raise DataError(f"alias '{new}' already exists; remove it first")
        edits: list[_Edit] = []
        for command in [*self.definitions(old), *self.unaliases(old)]:
            words = command.statement.words
            targets = words[:1] if command.kind == "alias" else words
            for word, value in zip(targets, command.args, strict=False):
                if value == old:
                    edits.append(_Edit(word.start, word.end, quote_word(new)))
        expected = self.table()
        if old in expected:
            expected[new] = expected.pop(old)
        return self._apply(edits, expected, {old, new}, (old, new))

    # -- helpers -----------------------------------------------------------------------

    def _require(self, name: str) -> None:
        if not self.definitions(name):
            raise NoUserError(
                f"no alias '{name}' in this file",
                path=self.rc.path,
                hint=_suggest(name, self.names()),
            )

    def _undone(self, name: str, logical: int, *, star_only: bool) -> bool:
        """True when an `unalias *` (or, unless `star_only`, `unalias name`) at or after
        logical line `logical` would undo a definition inserted before that line."""
        for other in self.state.commands:
            if other.kind != "unalias" or other.statement.logical < logical:
                continue
            if "*" in other.args or (not star_only and name in other.args):
                return True
        return False

    def _insertion(self, line: str, position: int | None) -> _Edit:
        text, newline = self.text, self.rc.newline
        if position is not None and position < len(text):
            return _Edit(position, position, line + newline)
        prefix = "" if not text or text.endswith("\n") else newline
        if self.rc.lines and self.rc.lines[-1].dangling:
            prefix += newline  # a blank line ends the dangling continuation first
        if text and not text.endswith("\n"):
            return _Edit(len(text), len(text), prefix + line)  # keep "no final newline"
        return _Edit(len(text), len(text), prefix + line + newline)

    def _removal(self, name: str) -> list[_Edit]:
        """Edits deleting `name`'s definitions and its words in `unalias` statements."""
        doomed: set[int] = {id(c.statement) for c in self.definitions(name)}
        edits: list[_Edit] = []
        for command in self.unaliases(name):
            words = command.statement.words
            kept = [w for w, arg in zip(words, command.args, strict=True) if arg != name]
            if not kept:
                doomed.add(id(command.statement))
                continue
            # `unalias a name b`: the other words keep their bytes, one space between.
            source = " ".join(self.text[w.start : w.end] for w in kept)
            edits.append(_Edit(words[0].start, words[-1].end, source))
        by_line: dict[int, list[Statement]] = {}
        for st in self.rc.statements:
            by_line.setdefault(st.logical, []).append(st)
        for logical, statements in by_line.items():
            flags = [id(st) in doomed for st in statements]
            if not any(flags):
                continue
            if all(flags):
                line = self.rc.lines[logical]
                edits.append(_Edit(line.start, line.end, ""))
                continue
            # `alias a x; alias b y`: cut the statement and one separator, keep the rest.
            index = 0
            while index < len(statements):
                if not flags[index]:
                    index += 1
                    continue
                run_end = index
                while run_end + 1 < len(statements) and flags[run_end + 1]:
                    run_end += 1
                if run_end + 1 < len(statements):
                    start, end = statements[index].start, statements[run_end + 1].start
                else:
                    start, end = statements[index - 1].end, statements[run_end].end
                edits.append(_Edit(start, end, ""))
                index = run_end + 1
        return edits

    def _apply(
        self,
        edits: list[_Edit],
        expected: dict[str, list[str]],
        names: set[str],
        renamed: tuple[str, str] | None = None,
    ) -> str:
        text = self.text
        for edit in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
            text = text[: edit.start] + edit.text + text[edit.end :]
        after = AliasBook.from_text(text, self.rc.path, self.environ)
        if after.table() != expected or _others(self, names) != _others(after, names):
            raise RelayError(
                "internal error: the edit would change more than the alias lines; "
                "file left untouched",
                path=self.rc.path,
            )
        new_loops = _loops(after.state) - _loops(self.state, renamed)
        if new_loops:
            raise DataError(f"refused: this would create an {sorted(new_loops)[0]}")
        return text


def envelope_key(member: str) -> str:
    """What makes two members the same recipient: the envelope address, domain folded
    to lower case (`X <x@E.org>` is `x@e.org`); the text itself when it is invalid."""
    return _envelope(member)


def _unique(members: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    result: list[str] = []
    for member in members:
        key = _envelope(member)
        if key not in seen:
            seen.add(key)
            result.append(member)
    return result


def _envelope(member: str) -> str:
    if member_problem(member):
        return member
    return parse_recipient(member).key  # relay.dedupe_key: the domain case-folded


def _others(book: AliasBook, names: set[str]) -> list[tuple[str, str]]:
    """Every statement not about `names`, as (kind, source text), and every `unalias`
    without those names: what an edit of `names` must leave as it was."""
    about: set[int] = set()
    unaliases: list[tuple[str, str]] = []
    for command in book.state.commands:
        if command.kind == "alias" and command.args[:1] and command.args[0] in names:
            about.add(id(command.statement))
        elif command.kind == "unalias":
            about.add(id(command.statement))
            rest = [arg for arg in command.args if arg not in names]
            if rest:
                unaliases.append(("unalias", " ".join(rest)))
    kept = [
        (st.kind, book.text[st.start : st.end]) for st in book.rc.statements if id(st) not in about
    ]
    return kept + unaliases


def _loops(rc: MailRc, renamed: tuple[str, str] | None = None) -> set[str]:
    """Every alias loop in `rc`, named canonically; with `renamed`, as after the rename."""
    found: set[str] = set()
    for name in rc.aliases:
        try:
            expand([name], rc.lookup)
        except AliasLoopError as err:
            cycle = err.cycle
            if renamed:
                cycle = tuple(renamed[1] if n == renamed[0] else n for n in cycle)
            found.add(_loop_text(cycle))
        except DataError as err:
            found.add(err.message)
    return found


def _cycle_key(err: DataError) -> str:
    """What `check` reports for an expansion error; one text per loop."""
    return _loop_text(err.cycle) if isinstance(err, AliasLoopError) else err.message


def _loop_text(cycle: tuple[str, ...]) -> str:
    """`b -> a -> b` and `a -> b -> a` are one loop; name it from its smallest member
    so both report the same text."""
    ring = list(cycle[:-1])
    start = ring.index(min(ring))
    ring = ring[start:] + ring[:start]
    return "alias loop: " + " -> ".join([*ring, ring[0]])


def _suggest(name: str, names: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    return f"did you mean: {', '.join(close)}?" if close else None


def suggest(name: str, names: Sequence[str]) -> str | None:
    """'did you mean: a, b?' for the names closest to `name` (difflib), or None."""
    return _suggest(name, names)


# --- check ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One problem `check` reports: `path:line: severity: message`."""

    severity: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.severity}: {self.message}"


def is_local_account(name: str) -> bool:
    """True when `name` is a user in the passwd database."""
    import pwd

    try:
        pwd.getpwnam(name)
    except (KeyError, UnicodeEncodeError):
        return False
    return True


def check(rc: MailRc, *, is_account: Callable[[str], bool] = is_local_account) -> list[Finding]:
    """Problems in the alias table: errors (syntax, invalid addresses and names, file or
    pipe targets, loops, undefined names that are not local accounts) and warnings
    (undefined names that are local accounts, aliases shadowing an account, duplicate
    members, unused `unalias`), sorted by file and line."""
    findings = [Finding(d.severity, d.path, d.line, d.message) for d in rc.diagnostics]
    first: dict[str, Member] = {name: ms[0] for name, ms in rc.aliases.items() if ms}
    reported: set[str] = set()
    for name, members in rc.aliases.items():
        try:
            expand([name], rc.lookup)
        except DataError as err:
            key = _cycle_key(err)
            if key not in reported:
                reported.add(key)
                where = first[name]
                findings.append(Finding("error", where.path, where.line, key))
        if is_account(name):
            where = first[name]
            findings.append(
                Finding(
                    "warning",
                    where.path,
                    where.line,
                    f"alias '{name}' shadows the local account '{name}'",
                )
            )
        seen: dict[str, Member] = {}
        for member in members:
            findings.extend(_member_findings(rc, name, member, is_account))
            key = _envelope(member.text.lstrip("\\"))
            if key in seen:
                earlier = seen[key]
                findings.append(
                    Finding(
                        "warning",
                        member.path,
                        member.line,
                        f"alias '{name}': duplicate member '{member.text}' "
                        f"(also at {earlier.path}:{earlier.line})",
                    )
                )
            else:
                seen[key] = member
    findings.sort(key=lambda f: (f.path, f.line or 0))
    return findings


def _member_findings(
    rc: MailRc, name: str, member: Member, is_account: Callable[[str], bool]
) -> list[Finding]:
    problem = member_problem(member.text)
    if problem:
        return [Finding("error", member.path, member.line, f"alias '{name}': {problem}")]
    recipient = parse_recipient(member.text)
    if recipient.kind in ("file", "pipe"):
        return [
            Finding(
                "error",
                member.path,
                member.line,
                f"alias '{name}': {recipient.kind} target '{member.text}' is refused by mail",
            )
        ]
    if recipient.kind != "local" or member.text.startswith("\\"):
        return []
    local = recipient.envelope
    if local == name or local in rc.aliases:
        return []
    if is_account(local):
        return [
            Finding(
                "warning",
                member.path,
                member.line,
                f"alias '{name}': '{local}' is not an alias but a local account; "
                "the relay must resolve it (Aliases file or root=)",
            )
        ]
    hint = _suggest(local, [n for n in rc.aliases if n != name])
    return [
        Finding(
            "error",
            member.path,
            member.line,
            f"alias '{name}': '{local}' is neither an alias nor a local account"
            + (f"; {hint}" if hint else ""),
        )
    ]


# --- show -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One node of `show`: a member, where it was written, and what it expands to.

    `kind` is `alias`, `address`, `local` (left for the relay), `self` (the alias's own
    name, kept as a local name), `escaped` (`\\name`), `repeat` (an alias expanded
    earlier in the same tree), `loop` or `invalid`.
    """

    text: str
    kind: str
    path: str | None
    line: int | None
    children: tuple[Step, ...] = ()


def explain(
    rc: MailRc, name: str, *, _via: tuple[str, ...] = (), _done: set[str] | None = None
) -> Step:
    """The expansion tree of alias `name` with file:line of every member. An alias
    already shown in this tree is a `repeat` leaf: the tree stays linear in the size of
    the alias book (`alias t0 t1 t1` nested 24 deep would otherwise be 2**24 lines)."""
    done: set[str] = set() if _done is None else _done
    done.add(name)
    members = rc.aliases.get(name, [])
    where = members[0] if members else None
    children = []
    chain = (*_via, name)
    for member in members:
        children.append(_explain_member(rc, member, chain, done))
    return Step(
        name, "alias", where.path if where else None, where.line if where else None, tuple(children)
    )


def _explain_member(rc: MailRc, member: Member, chain: tuple[str, ...], done: set[str]) -> Step:
    text = member.text
    if text.startswith("\\"):
        return Step(text[1:], "escaped", member.path, member.line)
    if text == chain[-1]:
        return Step(text, "self", member.path, member.line)
    if text in chain:
        return Step(text, "loop", member.path, member.line)
    if text in done and text in rc.aliases:
        return Step(text, "repeat", member.path, member.line)
    if text in rc.aliases:
        sub = explain(rc, text, _via=chain, _done=done)
        return Step(text, "alias", member.path, member.line, sub.children)
    if member_problem(text):
        return Step(text, "invalid", member.path, member.line)
    recipient = parse_recipient(text)
    kind = "local" if recipient.kind == "local" else "address"
    return Step(recipient.header, kind, member.path, member.line)


def final_addresses(rc: MailRc, name: str) -> list[str]:
    """The header forms `name` finally expands to; DataError for loops and bad members."""
    return [r.header for r in expand_recipients([name], rc)]


# --- writing --------------------------------------------------------------------------


@contextmanager
def _locked(path: str) -> Iterator[int | None]:
    """Hold an exclusive lock for editing `path`; yields an fd open on it, or None when
    the file does not exist (then the directory is what is locked)."""
    directory = os.path.dirname(path) or "."
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fcntl.flock(dir_fd, fcntl.LOCK_EX)
                if os.path.lexists(path):
                    continue  # created while we waited: lock the file instead
                yield None
                return
            finally:
                os.close(dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                continue
            held = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                continue  # replaced while we waited: the lock we hold guards nothing
            yield fd
            return
        finally:
            os.close(fd)


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def edit_file(path: str, change: Callable[[str], str], *, create: bool = True) -> bool:
    """Apply `change` (old text -> new text) to the mail.rc at `path` under the lock, and
    write the result atomically if it differs. True if the file was written.

    A missing file reads as empty text when `create`, else raises MissingFileError (a
    NoUserError, 67).
    Raises CantCreateError (73) when the file or its directory is not writable and
    IOFailure (74) when writing fails; in every failure the file is left untouched.
    """
    real = os.path.realpath(path)
    directory = os.path.dirname(real) or "."
    try:
        with _locked(real) as fd:
            if fd is None and not create:
                raise MissingFileError("no such file", path=path)
            data = _read_fd(fd) if fd is not None else b""
            info = os.fstat(fd) if fd is not None else None
            old = data.decode("utf-8", "surrogateescape")
            new = change(old)
            if new == old and info is not None:
                return False
            if info is not None and not os.access(real, os.W_OK):
                raise CantCreateError("file is not writable", path=path)
            _replace(real, path, directory, new.encode("utf-8", "surrogateescape"), info)
            return True
    except PermissionError as err:
        raise CantCreateError(f"cannot lock or read: {err.strerror}", path=path) from err
    except FileNotFoundError as err:
        raise CantCreateError(f"no such directory: {directory}", path=path) from err
    except IsADirectoryError as err:
        raise CantCreateError("is a directory, not a mail.rc", path=path) from err
    except OSError as err:
        raise IOFailure(f"cannot read: {err.strerror}", path=path) from err


def _replace(
    real: str, shown: str, directory: str, data: bytes, info: os.stat_result | None
) -> None:
    try:
        fd, temp = tempfile.mkstemp(
            prefix=f".{os.path.basename(real)}.", suffix=".tmp", dir=directory
        )
    except OSError as err:
        raise CantCreateError(
            f"cannot create a file in {directory}: {err.strerror}", path=shown
        ) from err
    try:
        try:
            if info is not None:
                os.fchmod(fd, stat.S_IMODE(info.st_mode))
                now = os.fstat(fd)
                if (now.st_uid, now.st_gid) != (info.st_uid, info.st_gid):
                    try:
                        os.fchown(fd, info.st_uid, info.st_gid)
                    except PermissionError as err:
                        raise CantCreateError(
                            f"cannot keep the file's owner (uid {info.st_uid}, "
                            f"gid {info.st_gid}); run as that user or root",
                            path=shown,
                        ) from err
            else:
                os.fchmod(fd, 0o666 & ~_umask())
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, real)
    except RelayError:
        os.unlink(temp)
        raise
    except OSError as err:
        os.unlink(temp)
        raise IOFailure(f"cannot write: {err.strerror}", path=shown) from err
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        raise IOFailure(
            f"renamed into place, but syncing {directory} failed: {err.strerror}", path=shown
        ) from err
