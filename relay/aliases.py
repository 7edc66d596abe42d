"""Alias files and the one loop-detecting alias expander.

Two alias books exist: the relay's `Aliases` file (this module reads it, in the
/etc/aliases form msmtp uses: `name: addr, addr`, `#` comments, a `default:` entry that
catches every local name without an entry of its own), and the front end's mail.rc
aliases (`mailx.mailrc` reads those). Both are expanded by `expand()`, so nesting,
`\\name` and loop refusal behave the same in both.

Rules (s-nail's, except that a loop is refused: mail.rc(5) "DIFFERENCES FROM S-NAIL"):
- a member that names another alias is expanded recursively;
- a member equal to the alias being expanded stays as that name (`alias john john
  john@x`): self-reference is not a loop;
- `\\name` stops expansion and yields `name`;
- a cycle through two or more aliases is an `AliasLoopError` (a `DataError`) with the `cycle`;
- results are deduplicated, first occurrence wins.
"""

from __future__ import annotations

from relay.errors import AliasLoopError, ConfigError, DataError
from relay.records import Record

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

#: Deeper nesting than this is refused even without a cycle (s-nail stops at 25).
MAX_DEPTH = 25
#: An expansion giving more addresses than this is refused: no SMTP server takes them
#: in one message (RFC 5321 4.5.3.1.8 asks servers for 100 at least).
MAX_ADDRESSES = 1000

if TYPE_CHECKING:
    Lookup = Callable[[str], Sequence[str] | None]


class Expanded(Record):
    """One final address and the chain of alias names that led to it (outermost first)."""

    __slots__ = ("address", "via")

    def __init__(self, address: str, via: tuple[str, ...] = ()) -> None:
        self.address = address
        self.via = via


def expand(names: Iterable[str], lookup: Lookup) -> list[Expanded]:
    """Expand each name through `lookup` (name -> members, or None when not an alias).

    Linear in the size of the alias book: an alias already expanded in this call is not
    walked again (everything it gives is already in the result: `alias t0 t1 t1` nested
    24 deep is 24 walks, not 2**24), duplicates (`relay.recipients.dedupe_key`) are
    dropped as they come, and more than MAX_ADDRESSES results are refused.
    """
    from relay.recipients import dedupe_key

    out: list[Expanded] = []
    seen: set[str] = set()
    done: set[str] = set()

    def emit(address: str, via: tuple[str, ...]) -> None:
        key = dedupe_key(address)
        if key not in seen:
            if len(out) >= MAX_ADDRESSES:
                where = f" (alias {' -> '.join(via)})" if via else ""
                raise DataError(
                    f"alias expansion gives more than {MAX_ADDRESSES} addresses{where}; "
                    "split the message or the alias"
                )
            seen.add(key)
            out.append(Expanded(address, via))

    def walk(name: str, via: tuple[str, ...]) -> None:
        if name.startswith("\\"):
            emit(name[1:], via)
            return
        if via and name == via[-1]:
            emit(name, via)  # `alias john john john@x`: the name itself, not a loop
            return
        if name in via:
            raise AliasLoopError((*via[via.index(name) :], name))
        if name in done:
            return  # expanded before in this call, without a loop: nothing new below
        members = lookup(name)
        if members is None:
            emit(name, via)
            return
        if len(via) >= MAX_DEPTH:
            raise DataError(f"alias nesting deeper than {MAX_DEPTH}: {' -> '.join(via)}")
        for member in members:
            walk(member, (*via, name))
        done.add(name)

    for name in names:
        walk(name, ())
    return out


class AliasFile(Record):
    """The relay's aliases file: local name -> members, plus the optional `default:`."""

    __slots__ = ("default", "entries", "path")

    def __init__(
        self,
        entries: dict[str, tuple[str, ...]],
        default: tuple[str, ...] | None,
        path: str | None = None,
    ) -> None:
        self.entries = entries
        self.default = default
        self.path = path

    def lookup(self, name: str) -> Sequence[str] | None:
        """Members of `name`, case-insensitively as /etc/aliases; None if it has no entry."""
        return self.entries.get(name.lower())


def parse_alias_file(text: str, path: str) -> AliasFile:
    """Parse `name: addr, addr` lines; a line starting with space continues the previous one."""
    entries: dict[str, tuple[str, ...]] = {}
    default: tuple[str, ...] | None = None
    logical: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and logical:
            first, previous = logical[-1]
            logical[-1] = (first, previous + " " + line.strip())
        else:
            logical.append((number, line))
    for number, line in logical:
        name, colon, rest = line.partition(":")
        name = name.strip().lower()
        if not colon or not name or any(c.isspace() for c in name):
            raise ConfigError("expected 'name: address, address'", path=path, line=number)
        members = tuple(m.strip() for m in rest.split(",") if m.strip())
        if not members:
            raise ConfigError(f"alias '{name}' has no addresses", path=path, line=number)
        if name == "default":
            default = members
        else:
            entries[name] = entries.get(name, ()) + members
    return AliasFile(entries=entries, default=default, path=path)


def read_alias_file(path: str) -> AliasFile:
    """Read and parse an aliases file; unreadable is a config error naming the path."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read aliases file: {_reason(err)}", path=path) from err
    return parse_alias_file(text, path)


def _reason(err: Exception) -> str:
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return "not valid UTF-8"
