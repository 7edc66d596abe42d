"""The plain forms of an address and of a display name, recognised without `email` or `re`.

The common case: an ASCII addr-spec of dot-atoms (RFC 5322 3.4.1), and a display name of
plain words. The email package (whose import is a fifth of a small message's run) reads
and writes these unchanged; anything else still goes through it. A module of its own, with
no imports, so that `relay.message` (on the unprivileged hand-off's path too) has it
without `relay.envelope` and the recipient and alias modules behind it.

Scanned with str methods, not `re`: the regular expressions these replace,

    atom = [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+
    PLAIN_ADDRESS = {atom}(?:\\.{atom})*@[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)*
    PLAIN_NAME = [A-Za-z0-9_'+-]+(?: [A-Za-z0-9_'+-]+)*

cost the send path the import of `re` (and `enum`, `functools`, ...) and their compiles,
several milliseconds of every `sendmail`. tests/relay/test_scanners.py holds the
scanners to those expressions (the same answer on generated and hostile input).
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Callable

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_ATOM_CHARS = _ALNUM + "!#$%&'*+/=?^_`{|}~-"
_DOMAIN_CHARS = _ALNUM + "-"
_NAME_CHARS = _ALNUM + "_'+-"


def _all_of(chars: str, pieces: list[str]) -> bool:
    """Every piece non-empty and made of `chars` only (`strip` removes them all)."""
    return all(piece and not piece.strip(chars) for piece in pieces)


class _Scanner:
    """A `fullmatch` test with the interface of a compiled pattern (truthy when it matches)."""

    __slots__ = ("_test",)

    def __init__(self, test: Callable[[str], bool]) -> None:
        self._test = test

    def fullmatch(self, text: str) -> bool:
        return self._test(text)


def is_dot_atom(text: str) -> bool:
    """RFC 5322 3.2.3 dot-atom-text: atoms of atext joined by single dots."""
    return _all_of(_ATOM_CHARS, text.split("."))


def is_atom_words(text: str) -> bool:
    """Atoms of atext separated by single spaces: a display name written unquoted."""
    return _all_of(_ATOM_CHARS, text.split(" "))


def _plain_address(text: str) -> bool:
    local, at, domain = text.partition("@")  # neither side may hold an @: the first splits
    return bool(at) and is_dot_atom(local) and _all_of(_DOMAIN_CHARS, domain.split("."))


def _plain_name(text: str) -> bool:
    return _all_of(_NAME_CHARS, text.split(" "))


PLAIN_ADDRESS = _Scanner(_plain_address)
PLAIN_NAME = _Scanner(_plain_name)
