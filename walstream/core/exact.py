"""JSON numbers kept exactly: find the numbers walstream's JSON codec (orjson) would change.

orjson decodes an integer outside -2**63..2**64-1 to a float (``123456789012345678901234567890``
becomes ``1.2345678901234568e+29``), a number with more digits than a 64-bit float holds to the
nearest float (``1.0000000000000000001`` becomes ``1.0``, ``1e-400`` becomes ``0.0``), and
refuses one beyond the float range (``1e400``). A write-ahead log must never change a payload,
so the API refuses such a payload (400 naming ``payload``) instead of logging another number.
Keeping them would need an exact codec on every stage that reads the log (worker, retry, DLQ,
redrive, the targets); a client that needs such numbers sends them as strings, or the payload
as base64 (kept byte for byte).

The check costs nothing on the common path: ``may_hold_unkept`` looks at the raw bytes for a
number that could be changed (16 or more digits, or an exponent of 3 digits: any number with
fewer survives a 64-bit float), and only then is the body decoded a second time, exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, NamedTuple

__all__ = ["Unkept", "decode_exact", "first_unkept", "may_hold_unkept", "unkept_in_value"]

#: The integers orjson decodes as integers (int64 and uint64).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
#: A number token (after a delimiter: JSON numbers follow ``[``, ``:``, ``,`` or whitespace)
#: with 16 or more digits, or an exponent of 3 or more digits. A number with at most 15
#: significant digits and a 2-digit exponent is a normal float and survives the round trip.
_SUSPECT = re.compile(rb"(?:^|[\[:,\s])-?(?:[0-9][0-9.]{15}|[0-9][0-9.]*[eE][-+]?[0-9]{3})")


class Unkept(NamedTuple):
    """A number as sent that the log would not keep, and why."""

    text: str
    reason: str


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
    if Decimal(repr(value)) != Decimal(text):
        return Unkept(text, f"more precise than a 64-bit float (the log would keep {value!r})")
    return value


def _constant(text: str) -> Unkept:
    return Unkept(text, "not a JSON number")


def may_hold_unkept(raw: bytes) -> bool:
    """Whether ``raw`` may hold a number the codec changes (False: it holds none for sure)."""
    return _SUSPECT.search(raw) is not None


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
