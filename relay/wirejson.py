"""The hand-off's two JSON lines (the request, the service's answer) without `json`.

Why: the unprivileged hand-off (`sendmail` of a user who may not read the configuration)
writes one small JSON object and reads one back. The `json` package imports `re` and
compiles its patterns at import (with `enum`, `functools`, `collections`: about 7 ms of
a 16 ms interpreter start here), more than the rest of the hand-off's imports together.
Its C accelerator `_json`, which `json` itself uses for strings, costs nothing to import.

- `dumps` is `json.dumps(data, separators=(",", ":"))` (ASCII, escapes as `json` writes
  them: `_json.encode_basestring_ascii` is the function `json` calls) for an object of
  strings, ints, bools, None and lists of them; anything else goes through `json`.
- `loads` reads the subset those answers use (objects, arrays, strings, integers, true,
  false, null, JSON whitespace, nesting to MAX_DEPTH) and hands anything else to
  `json.loads`, which then gives its own result or its own error: never a second opinion.

tests/relay/test_wirejson.py holds both to `json` on generated and broken input.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from typing import Any

#: Deeper than this is left to `json` (which raises RecursionError far deeper).
MAX_DEPTH = 32
_WHITESPACE = " \t\n\r"
_DIGITS = "0123456789"


class _NotHere(Exception):
    """Outside the subset read here: `json` decides."""


def dumps(data: dict[str, Any]) -> str:
    """The compact ASCII JSON of a flat object (see the module doc)."""
    try:
        return "{" + ",".join(_key_value(key, value) for key, value in data.items()) + "}"
    except _NotHere:
        import json

        return json.dumps(data, separators=(",", ":"))


def _key_value(key: object, value: object) -> str:
    if not isinstance(key, str):
        raise _NotHere
    return _json.encode_basestring_ascii(key) + ":" + _scalar_or_list(value)


def _scalar_or_list(value: object) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_scalar(item) for item in value) + "]"
    return _scalar(value)


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:  # not a bool (above), not an int subclass with its own repr
        return int.__repr__(value)
    if type(value) is str:
        return _json.encode_basestring_ascii(value)
    raise _NotHere


def loads(data: bytes) -> Any:
    """`json.loads(data)` (see the module doc)."""
    try:
        text = data.decode("ascii")
        value, end = _value(text, _skip(text, 0), 0)
        if _skip(text, end) != len(text):
            raise _NotHere  # trailing data: json's error
        return value
    except (_NotHere, UnicodeDecodeError):
        pass
    import json

    return json.loads(data)


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _WHITESPACE:
        at += 1
    return at


def _value(text: str, at: int, depth: int) -> tuple[Any, int]:
    char = text[at : at + 1]
    if char == '"':
        return _string(text, at)
    if char == "{":
        return _object(text, at, depth + 1)
    if char == "[":
        return _array(text, at, depth + 1)
    for word, meaning in (("true", True), ("false", False), ("null", None)):
        if text.startswith(word, at):
            return meaning, at + len(word)
    if char == "-" or (char and char in _DIGITS):
        return _integer(text, at)
    raise _NotHere


def _string(text: str, at: int) -> tuple[str, int]:
    try:
        # json's own string scanner (strict: no raw control characters).
        return _json.scanstring(text, at + 1, True)
    except Exception:  # a bad string: `json` raises its error (here, without
        raise _NotHere from None  # json.decoder loaded, _json cannot build it)


def _integer(text: str, at: int) -> tuple[int, int]:
    start = at + 1 if text[at] == "-" else at
    end = start
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    if end == start or (text[start] == "0" and end - start > 1):
        raise _NotHere  # no digits, or a leading zero
    if end < len(text) and text[end] in ".eE":
        raise _NotHere  # a fraction or an exponent: a float
    if end - start > 4000:
        raise _NotHere  # int()'s digit limit: json's answer, whatever it is
    return int(text[at:end]), end


def _object(text: str, at: int, depth: int) -> tuple[dict[str, Any], int]:
    if depth > MAX_DEPTH:
        raise _NotHere
    out: dict[str, Any] = {}
    at = _skip(text, at + 1)
    if text[at : at + 1] == "}":
        return out, at + 1
    while True:
        if text[at : at + 1] != '"':
            raise _NotHere
        key, at = _string(text, at)
        at = _skip(text, at)
        if text[at : at + 1] != ":":
            raise _NotHere
        out[key], at = _value(text, _skip(text, at + 1), depth)
        at = _skip(text, at)
        char = text[at : at + 1]
        if char == "}":
            return out, at + 1
        if char != ",":
            raise _NotHere
        at = _skip(text, at + 1)


def _array(text: str, at: int, depth: int) -> tuple[list[Any], int]:
    if depth > MAX_DEPTH:
        raise _NotHere
    out: list[Any] = []
    at = _skip(text, at + 1)
    if text[at : at + 1] == "]":
        return out, at + 1
    while True:
        value, at = _value(text, at, depth)
        out.append(value)
        at = _skip(text, at)
        char = text[at : at + 1]
        if char == "]":
            return out, at + 1
        if char != ",":
            raise _NotHere
        at = _skip(text, at + 1)
