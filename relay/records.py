"""The base of the relay's records (`Prepared`, `Result`, `Verdict`, `Entry`, ...).

One style for all of them: plain classes with `__slots__`, equality and repr given here.
Not NamedTuple, which needs `typing` at run time, nor dataclasses, which imports
`inspect` and generates code at import: both cost the start-up of every `sendmail`, and
a cron job pays it each time. A record is a value: build a changed copy with `replace`
rather than assigning to it (`FlushReport`, which a flush fills in, is the exception).
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import MappingProxyType
    from typing import Any, Self

    ReadOnlyMapping = MappingProxyType
else:
    # `types.MappingProxyType` (a read-only view of a dict) is the type of any class's
    # __dict__: taken from there, the records need not import `types` for it (its import
    # is half a millisecond of every command's start).
    ReadOnlyMapping = type(type.__dict__)


class Record:
    """Fields are the `__slots__` of the subclass (one level: records do not nest)."""

    __slots__ = ()

    def _fields(self) -> tuple[str, ...]:
        slots: tuple[str, ...] = type(self).__slots__
        return slots

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields())
        return f"{type(self).__name__}({shown})"

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied; an unknown field is a TypeError."""
        copy = object.__new__(type(self))
        for name in self._fields():
            setattr(copy, name, changes.pop(name) if name in changes else getattr(self, name))
        if changes:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(changes)}")
        return copy


class Value(Record):
    """A record that is a value: hashable (a dict key, a set member), as a frozen
    dataclass or a NamedTuple would be. Never assign to one after it is made."""

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]  # Record's is None
        return hash(tuple(getattr(self, name) for name in self._fields()))


class TupleValue(Value):
    """A value that was a NamedTuple: it still unpacks in `_order`, compares equal to
    that tuple, and hashes as it (so either finds the other in a dict)."""

    __slots__ = ()
    #: The NamedTuple's field order (its slots are sorted, as everywhere).
    _order: tuple[str, ...] = ()

    def _as_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._order)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._as_tuple())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, tuple):
            return self._as_tuple() == other
        return super().__eq__(other)

    def __hash__(self) -> int:  # type: ignore[override]  # Record's is None
        return hash(self._as_tuple())
