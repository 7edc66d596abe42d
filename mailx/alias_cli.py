"""`mail-alias`: list, show, add, remove, rename and check the aliases of a mail.rc.

Concern: argv (docopt-ng) to `mailx.mailrc` / `mailx.aliasbook` calls and their results
to stdout; `relay.run_command` turns every error into one stderr line and its sysexits
status (the table in relay/errors.py, listed in mail-alias(1)): 64 usage, 65 invalid name
or address (or `check` found errors), 67 no such alias, 70 internal error, 73 file not
writable, 74 write failed or standard output closed, 78 unreadable mail.rc.
Only what parsing argv needs is imported at module level; `--help` and a usage error
load neither `email` nor the mail.rc parser.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from docopt import DocoptExit, docopt

if TYPE_CHECKING:
    from mailx.aliasbook import Step
    from mailx.mailrc import MailRc

USAGE = """\
Usage:
  mail-alias [options] list [--expanded] [--json]
  mail-alias [options] show [--json] NAME
  mail-alias [options] add [--replace] NAME ADDRESS...
  mail-alias [options] remove NAME
  mail-alias [options] rename OLD NEW
  mail-alias [options] check [--json]
  mail-alias -h | --help
  mail-alias --version

Options:
  -f FILE, --file=FILE  Read and edit FILE only.
  --system              Read and edit only the system mail.rc
                        ($MAILX_SYSTEM_RC, else /etc/mail.rc).
  --expanded            list: resolve each alias to its final addresses.
  --json                Print JSON, for scripts.
  --replace             add: replace the alias's members instead of appending.
  -h, --help            Show this help.
  --version             Show the version.

Without --file or --system, edits go to $MAILRC or ~/.mailrc, and list, show and
check read what `mail` reads: the system mail.rc (unless MAILX_NO_SYSTEM_RC is set),
then that file. ADDRESS is `someone@example.com`, `My Name <someone@example.com>`,
another alias or a local name.
"""

PROG = "mail-alias"
SHORT_USAGE = (
    "usage: mail-alias [--file F | --system] list [--expanded] [--json] | show NAME | "
    "add [--replace] NAME ADDRESS... | remove NAME | rename OLD NEW | check"
)


def main(argv: list[str] | None = None) -> int:
    """Run `mail-alias` with `argv`; without it, as the console script (sys.argv[1:],
    and the process ends there). Returns the exit status."""
    from relay import run_command

    return run_command(PROG, _main, argv)


def _main(argv: list[str]) -> int:
    try:
        opts: dict[str, Any] = docopt(USAGE, argv=argv)
    except DocoptExit:
        from relay import UsageError

        raise UsageError(f"{SHORT_USAGE} (see {PROG} --help)") from None
    except SystemExit as err:  # --help was printed
        return err.code if isinstance(err.code, int) else os.EX_OK
    if opts["--version"]:
        from relay import __version__

        print(f"{PROG} (mailx-relay) {__version__}")
        return os.EX_OK
    return _run(opts)


# --- which files ----------------------------------------------------------------------


def _files(opts: dict[str, Any]) -> tuple[str, list[str]]:
    """(the file edits go to, the files read for list/show/check)."""
    from mailx.mailrc import default_rc_paths, home_directory, system_rc_path, user_rc_path
    from relay import UsageError

    if opts["--file"] and opts["--system"]:
        raise UsageError("--file and --system exclude each other")
    if opts["--file"]:
        return opts["--file"], [opts["--file"]]
    if opts["--system"]:
        path = system_rc_path(os.environ)
        return path, [path]
    home = home_directory(os.environ)
    return user_rc_path(os.environ, home), default_rc_paths(os.environ, home)


def _load(paths: list[str], *, quiet: bool = False) -> MailRc:
    """The mail.rc view; an unreadable file is fatal (78), other diagnostics warnings."""
    from mailx.mailrc import load
    from relay import ConfigError

    rc = load(paths)
    for diagnostic in rc.diagnostics:
        if diagnostic.line is None:
            raise ConfigError(diagnostic.message, path=diagnostic.path)
        if not quiet:
            print(f"{PROG}: {diagnostic.severity}: {diagnostic}", file=sys.stderr)
    return rc


def _run(opts: dict[str, Any]) -> int:
    target, view = _files(opts)
    if opts["list"]:
        return _list(_load(view), expanded=opts["--expanded"], as_json=opts["--json"])
    if opts["show"]:
        return _show(_load(view), opts["NAME"], target, as_json=opts["--json"])
    if opts["check"]:
        return _check(_load(view, quiet=True), view, as_json=opts["--json"])
    if opts["add"]:
        return _add(target, opts["NAME"], opts["ADDRESS"], replace=opts["--replace"])
    if opts["remove"]:
        return _remove(target, view, opts["NAME"])
    return _rename(target, view, opts["OLD"], opts["NEW"])


# --- reading --------------------------------------------------------------------------


def _shown(text: str) -> str:
    """A member as a header would show it; as written when it is not an address."""
    from mailx.mailrc import member_problem, parse_recipient

    if text.startswith("\\") or member_problem(text):
        return text
    return parse_recipient(text).header


def _dump(value: object) -> None:
    import json

    print(json.dumps(value, indent=2, ensure_ascii=False))


def _list(rc: MailRc, *, expanded: bool, as_json: bool) -> int:
    from mailx.mailrc import expand_recipients
    from relay import DataError

    status = os.EX_OK
    records: list[dict[str, object]] = []
    for name, members in rc.aliases.items():
        record: dict[str, object] = {
            "name": name,
            "members": [
                {"member": m.text, "address": _shown(m.text), "file": m.path, "line": m.line}
                for m in members
            ],
        }
        shown = [_shown(m.text) for m in members]
        if expanded:
            try:
                finals = expand_recipients([name], rc)
            except DataError as err:
                print(f"{PROG}: {err.describe()}", file=sys.stderr)
                status = status or err.exit_code
                record["expanded"] = None
                record["error"] = err.message
                shown = ["(error: see above)"]
            else:
                record["expanded"] = [
                    {"header": r.header, "envelope": r.envelope, "kind": r.kind, "via": r.via}
                    for r in finals
                ]
                shown = [r.header for r in finals]
        records.append(record)
        if not as_json:
            print(f"{name}: {', '.join(shown)}")
    if as_json:
        _dump(records)
    return status


_NOTES = {
    "local": "local name, left to the relay",
    "self": "the alias's own name, kept as a local name",
    "escaped": "\\name: not expanded",
    "loop": "LOOP",
    "invalid": "invalid, dropped",
    "repeat": "expanded above",
}


def _tree_lines(step: Step, depth: int) -> list[str]:
    where = f"{step.path}:{step.line}" if step.path else "?"
    note = _NOTES.get(step.kind)
    lines = ["  " * depth + f"{step.text}  ({where}{'; ' + note if note else ''})"]
    for child in step.children:
        lines.extend(_tree_lines(child, depth + 1))
    return lines


def _tree_json(step: Step) -> dict[str, object]:
    return {
        "member": step.text,
        "kind": step.kind,
        "file": step.path,
        "line": step.line,
        "children": [_tree_json(c) for c in step.children],
    }


def _show(rc: MailRc, name: str, target: str, *, as_json: bool) -> int:
    from mailx.aliasbook import explain, suggest
    from mailx.mailrc import expand_recipients
    from relay import DataError, NoUserError

    if name not in rc.aliases:
        where = ", ".join(f.path for f in rc.files) or target
        raise NoUserError(f"no alias '{name}' in {where}", hint=suggest(name, list(rc.aliases)))
    tree = explain(rc, name)
    error: DataError | None = None
    try:
        finals = expand_recipients([name], rc)
    except DataError as err:
        error, finals = err, []
    if as_json:
        _dump(
            {
                "name": name,
                "tree": _tree_json(tree),
                "expanded": [
                    {"header": r.header, "envelope": r.envelope, "kind": r.kind, "via": r.via}
                    for r in finals
                ],
                "error": error.message if error else None,
            }
        )
    else:
        print("\n".join(_tree_lines(tree, 0)))
        if not error:
            print(f"expands to {len(finals)} recipient{'s' if len(finals) != 1 else ''}:")
            for recipient in finals:
                local = "  (local name)" if recipient.kind == "local" else ""
                print(f"  {recipient.header}{local}")
    if error:
        raise error
    return os.EX_OK


def _check(rc: MailRc, view: list[str], *, as_json: bool) -> int:
    from mailx.aliasbook import check
    from relay import DataError, status_for

    findings = check(rc)
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    if as_json:
        _dump(
            {
                "errors": errors,
                "warnings": warnings,
                "findings": [
                    {"severity": f.severity, "file": f.path, "line": f.line, "message": f.message}
                    for f in findings
                ],
            }
        )
    else:
        for finding in findings:
            print(finding)
        read = ", ".join(f.path for f in rc.files) or "no mail.rc found"
        if findings:
            print(f"{errors} error(s), {warnings} warning(s) in {read}")
        else:
            print(f"no problems found: {len(rc.aliases)} alias(es) in {read}")
    return status_for(DataError) if errors else os.EX_OK


# --- editing --------------------------------------------------------------------------


def _add(target: str, name: str, addresses: list[str], *, replace: bool) -> int:
    from mailx.aliasbook import AliasBook, edit_file, envelope_key, normalize_member, validate_name

    validate_name(name)
    members = [normalize_member(address) for address in addresses]  # before any I/O
    notes: list[str] = []

    def change(text: str) -> str:
        book = AliasBook.from_text(text, target)
        if not replace:
            have = {envelope_key(m) for m in book.table().get(name, [])}
            notes[:] = [m for m in members if envelope_key(m) in have]
        return book.add(name, members, replace=replace)

    edit_file(target, change)
    for member in notes:
        print(f"{PROG}: note: {_shown(member)} is already in alias '{name}'", file=sys.stderr)
    return os.EX_OK


def _missing(target: str, view: list[str], name: str, here: list[str]) -> Exception:
    """NoUserError for `name`, suggesting close names and where else it is defined."""
    from mailx.aliasbook import suggest
    from mailx.mailrc import load
    from relay import NoUserError

    elsewhere = [
        f"{m.path}:{m.line}"
        for path in view
        if path != target
        for m in load([path]).aliases.get(name, [])[:1]
    ]
    hint = suggest(name, here)
    if elsewhere:
        hint = f"it is defined in {elsewhere[0]} (use --system or --file)"
    return NoUserError(f"no alias '{name}' in this file", path=target, hint=hint)


def _remove(target: str, view: list[str], name: str) -> int:
    from mailx.aliasbook import AliasBook, edit_file
    from relay import MissingFileError

    def change(text: str) -> str:
        book = AliasBook.from_text(text, target)
        if not book.definitions(name):
            raise _missing(target, view, name, book.names())
        return book.remove(name)

    try:
        edit_file(target, change, create=False)
    except MissingFileError:
        raise _missing(target, view, name, []) from None
    _warn_references(view, name, "is now a plain local name")
    return os.EX_OK


def _rename(target: str, view: list[str], old: str, new: str) -> int:
    from mailx.aliasbook import AliasBook, edit_file, validate_name
    from relay import MissingFileError

    validate_name(new)

    def change(text: str) -> str:
        book = AliasBook.from_text(text, target)
        if not book.definitions(old):
            raise _missing(target, view, old, book.names())
        return book.rename(old, new)

    try:
        edit_file(target, change, create=False)
    except MissingFileError:
        raise _missing(target, view, old, []) from None
    _warn_references(view, old, f"is no alias any more (renamed to '{new}')")
    return os.EX_OK


def _warn_references(view: list[str], name: str, what: str) -> None:
    """Aliases that still list `name` as a member: the edit changed only its own lines."""
    from mailx.mailrc import load

    rc = load(view)
    for alias, members in rc.aliases.items():
        for member in members:
            if member.text == name:
                print(
                    f"{PROG}: warning: {member.path}:{member.line}: alias '{alias}' still "
                    f"lists '{name}', which {what}",
                    file=sys.stderr,
                )


if __name__ == "__main__":
    sys.exit(main())
