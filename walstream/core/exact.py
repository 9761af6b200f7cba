"""JSON numbers kept exactly: find the numbers walstream's JSON codec (orjson) would change.

orjson decodes an integer outside -2**63..2**64-1 to a float (``123456789012345678901234567890``
becomes ``1.2345678901234568e+29``), a number with more digits than a 64-bit float holds to the
nearest float (``1.0000000000000000001`` becomes ``1.0``, ``1e-400`` becomes ``0.0``), and
refuses one beyond the float range (``1e400``). A write-ahead log must never change a payload,
so the API refuses such a payload (400 naming ``payload``) instead of logging another number.
Keeping them would need an exact codec on every stage that reads the log (worker, retry, DLQ,
redrive, the targets); a client that needs such numbers sends them as strings, or the payload
as base64 (kept byte for byte).

The check costs little on the common path: ``may_hold_unkept`` looks at the raw bytes for a
number that could be changed (16 or more digits, or an exponent of 3 digits: any number with
fewer survives a 64-bit float) and checks each one it finds; only when one would be changed is
the body decoded a second time, exactly, to find where it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, NamedTuple

__all__ = ["Unkept", "decode_exact", "first_unkept", "may_hold_unkept", "unkept_in_value"]

#: The integers orjson decodes as integers (int64 and uint64).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
#: The look at the raw bytes works on a copy with each byte replaced by its class (bytes methods
#: run in C; a regular expression cost ~28,000 instructions per write): a digit, point or sign
#: is "0", an exponent mark "e", anything else " ".
_CLASSES = bytes(
    ord("0") if c in b"0123456789.+-" else ord("e") if c in b"eE" else ord(" ") for c in range(256)
)
#: What a number the codec may change holds: 16 digits (or digits and a point) in a row, or an
#: exponent of 3 digits (after its sign). A number with at most 15 significant digits and a
#: 2-digit exponent is a normal float and survives the round trip.
_LONG = (b"0" * 16, b"e000")
#: What precedes a JSON number: ``[``, ``:``, ``,`` or whitespace (else it is in a string).
_BEFORE_NUMBER = frozenset(b"[:, \t\r\n")


class Unkept(NamedTuple):
    """A number as sent that the log would not keep, and why."""

    text: str
    reason: str


def _changed(text: str) -> bool:
    """Whether the codec would change ``text``: a number token of the raw body, or digits in a
    string that look like one (``1.2.3...``: not a number, so only decoding can tell)."""
    try:
        found = _float(text) if "." in text or "e" in text or "E" in text else _int(text)
    except (ValueError, ArithmeticError):
        return True
    return isinstance(found, Unkept)


def _int(text: str) -> int | Unkept:
    # a length check first: int() refuses literals over 4,300 digits (ValueError)
    if len(text.lstrip("-")) <= 20:
        value = int(text)
        if _INT_MIN <= value <= _INT_MAX:
            return value
    return Unkept(text, "an integer beyond 64 bits (the log keeps -2**63..2**64-1)")


def _float(text: str) -> float | Unkept:
    value = float(text)
    if math.isinf(value):
        return Unkept(text, "a number beyond the range of a 64-bit float")
    shortest = repr(value)
    if shortest != text and not _same_number(shortest, text):
        return Unkept(text, f"more precise than a 64-bit float (the log would keep {value!r})")
    return value


def _same_number(shortest: str, text: str) -> bool:
    """Whether the finite float written ``shortest`` is the number ``text`` exactly."""
    try:
        return Decimal(shortest) == Decimal(text)
    except ArithmeticError:
        # an exponent beyond what decimal holds (over ~18 digits: ``1e-99999999999999999999``):
        # the number is 0, or too small for any float (the float read is 0.0), or too large
        # for one (its float is infinite: refused before); so it is kept only when it is 0
        return not text.partition("e")[0].partition("E")[0].strip("-+.0")


def _constant(text: str) -> Unkept:
    return Unkept(text, "not a JSON number")


def may_hold_unkept(raw: bytes) -> bool:
    """Whether ``raw`` may hold a number the codec changes (False: it holds none for sure).

    True for such a number, or one in a string (``"x 1e400"``): only decoding tells."""
    classes = raw.translate(_CLASSES)
    for long in _LONG:
        # find, not "in": that tries the needle as an int first (raising a TypeError inside)
        at = classes.find(long)
        while at != -1:  # rare: a long number, or digits in a string (ids, UUIDs)
            # the token around it: classes holds "0", "e" and " " only
            start = classes.rfind(b" ", 0, at) + 1
            end = classes.find(b" ", at)
            if end == -1:
                end = len(classes)
            if (start == 0 or raw[start - 1] in _BEFORE_NUMBER) and _changed(
                raw[start:end].decode()
            ):
                return True
            at = classes.find(long, end)
    return False


def decode_exact(raw: bytes) -> Any:
    """``raw`` decoded with each number that the codec would change replaced by ``Unkept``.

    Raises:
        ValueError: not JSON.
        RecursionError: nested too deep for Python's decoder (~1,000 levels).
    """
    return json.loads(raw, parse_int=_int, parse_float=_float, parse_constant=_constant)


def _walk(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    # iterative: a payload may nest up to the decoder's depth limit
    stack: list[tuple[tuple[str | int, ...], Any]] = [(path, value)]
    while stack:
        here, item = stack.pop()
        if isinstance(item, dict):
            stack.extend(((*here, k), v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend(((*here, i), v) for i, v in reversed(list(enumerate(item))))
        else:
            yield here, item


def first_unkept(value: Any) -> tuple[tuple[str | int, ...], Unkept] | None:
    """The path to the first ``Unkept`` number in a ``decode_exact`` value, or None."""
    for path, item in _walk(value, ()):
        if isinstance(item, Unkept):
            return path, item
    return None


def unkept_in_value(value: Any) -> Unkept | None:
    """The first number in a Python value that the codec cannot write as it is (an integer
    beyond 64 bits, NaN or infinity, which orjson writes as ``null``), or None."""
    for _, item in _walk(value, ()):
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not _INT_MIN <= item <= _INT_MAX:
            return Unkept(str(item), "an integer beyond 64 bits (the log keeps -2**63..2**64-1)")
        if isinstance(item, float) and not math.isfinite(item):
            return Unkept(repr(item), "not a JSON number")
    return None
