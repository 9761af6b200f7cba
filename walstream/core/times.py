"""Times operators type: ISO 8601, milliseconds since the epoch, or relative to now ("-2h")."""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["parse_time_ms"]

_RELATIVE = re.compile(r"^-(\d+)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
#: An RFC 3339 leap second (``23:59:60``): ms since the epoch (POSIX time) has no such second,
#: and datetime refuses it, so it is read as the second before it, ``:59`` (fraction kept).
_LEAP_SECOND = re.compile(r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:)60(?=[.,Zz+-]|$)")


def parse_time_ms(text: str, now_ms: int) -> int:
    """Milliseconds since the epoch for ``text``.

    Accepts ``1700000000000`` (ms), ``2026-11-23T10:00:00`` (UTC unless an offset is given),
    ``2026-11-23T10:00:00+01:00`` and ``-90m`` / ``-2h`` / ``-1d`` (before ``now_ms``). RFC 3339's
    lower-case ``t`` and ``z`` are taken, and a leap second (``:60``) is read as ``:59``.

    Raises:
        ValueError: naming what was expected.
    """
    value = text.strip()
    if value.isascii() and value.isdigit():  # not "²": str.isdigit takes it, int() not
        return int(value)
    relative = _RELATIVE.fullmatch(value)
    if relative:
        return now_ms - int(relative.group(1)) * _UNIT_MS[relative.group(2)]
    # RFC 3339 (5.6) takes "t" and "z" in lower case; datetime.fromisoformat not "z"
    if value[-1:] == "z":
        value = value[:-1] + "Z"
    value = _LEAP_SECOND.sub(r"\g<1>59", value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r}: expected ms since the epoch, ISO 8601, or -<n>(ms|s|m|h|d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
