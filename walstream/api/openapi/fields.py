"""Value schemas the OpenAPI document's objects share: texts, times, header names and values.

Each one states what a walstream.core parser accepts (the tests hold the two to each other), so it
lives apart from the objects that use it.
"""

from __future__ import annotations

from typing import Any

from walstream.core import targets as _targets
from walstream.core.replay_request import MAX_TIME_MS
from walstream.core.targets import RESERVED_HEADERS, UNSENDABLE_HEADERS

__all__ = [
    "BASE64",
    "DURABLE",
    "HEADER_NAME",
    "HEADER_VALUE",
    "KEY",
    "KV_KEY",
    "SELECTION_TIME",
    "SERVERS",
    "TIME_TEXT",
    "UNSENDABLE_NAME",
    "WINDOW_TIME",
    "text",
]

DURABLE = {"type": "string", "enum": ["TRUE", "FALSE", "UNKNOWN"]}
#: What walstream.core.targets refuses in a string sent on as an HTTP header value (a token
#: becomes the Idempotency-Key header; an http target's headers): a control character but tab.
HEADER_VALUE = f"^[^{_targets.UNSENDABLE_VALUE_CHARS}]*$"
#: Standard base64 (RFC 4648 4, padded), what ``base64.b64decode(validate=True)`` accepts.
BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
#: Times operators type (walstream.core.times): ms since the epoch, ISO 8601, or before now.
TIME_TEXT = {
    "type": "string",
    "anyOf": [
        {"pattern": "^[0-9]+$"},
        {"pattern": "^-[0-9]+(ms|s|m|h|d)$"},
        {"format": "date-time"},
    ],
    "description": (
        "ms since the epoch (1700000000000), ISO 8601 (2026-11-23T10:00:00Z; without an "
        "offset: UTC; a leap second, :60, is read as :59), or relative to now (-90m, -2h, -1d; "
        "units ms, s, m, h, d)"
    ),
}
#: A redrive's since/until (null: not given).
SELECTION_TIME = {"oneOf": [{"type": "integer", "minimum": 0}, TIME_TEXT, {"type": "null"}]}


def _digits_at_most(limit: int) -> str:
    """A regex matching the decimal digit strings (leading zeros too) worth at most ``limit``."""
    text = str(limit)
    options = [f"[0-9]{{1,{len(text) - 1}}}"] if len(text) > 1 else []
    for i, digit in enumerate(text):  # the same length: equal up to i, then a smaller digit
        if digit != "0":
            options.append(f"{text[:i]}[0-{int(digit) - 1}][0-9]{{{len(text) - i - 1}}}")
    options.append(text)
    return "^0*(?:" + "|".join(options) + ")$"


#: A replay window's from/to: what walstream.core.replay_request takes, between the epoch and
#: the end of year 9999 (MAX_TIME_MS). A relative time is bounded to about 11 to 31 years back
#: (by digits per unit), so that it is after the epoch whenever the server reads it.
WINDOW_TIME = {
    "oneOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_TIME_MS},
        {
            "type": "string",
            "anyOf": [
                {"pattern": _digits_at_most(MAX_TIME_MS)},
                {"pattern": "^-(?:[0-9]{1,12}ms|[0-9]{1,9}s|[0-9]{1,7}m|[0-9]{1,5}h|[0-9]{1,4}d)$"},
                # RFC 3339 of years 1970..9999 (an offset may not take it past either end)
                {"format": "date-time", "pattern": "^(?:19[7-9][0-9]|[2-9][0-9]{3})-"},
            ],
        },
    ],
    "description": (
        f"{TIME_TEXT['description']}; between the epoch and 9999-12-31T23:59:59.999Z (ms "
        f"0..{MAX_TIME_MS}); a leap second (:60) is read as :59"
    ),
}
HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


def _any_case(name: str) -> str:
    """A regex matching ``name`` whatever its case (JSON Schema regexes have no flags)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in name)


#: Framing and hop-by-hop headers (the client's own) and walstream's delivery headers.
UNSENDABLE_NAME = (
    "^(?:" + "|".join(_any_case(n) for n in sorted(UNSENDABLE_HEADERS | RESERVED_HEADERS)) + ")$"
)


def text(max_length: int, pattern: str | None = None) -> dict[str, Any]:
    """A non-empty string of at most ``max_length`` characters (matching ``pattern``)."""
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": max_length}
    if pattern is not None:
        schema["pattern"] = pattern
    return schema


KEY = text(_targets._MAX_KEY_CHARS)
#: a kv key (walstream.core.targets.kv_key_problem): a kv target's key, a mutation's id
KV_KEY = {**text(_targets.KV_KEY_MAX_CHARS, _targets.KV_KEY_PATTERN), "description": "no NUL"}
SERVERS = {**text(1024), "description": "another Kafka cluster (host:port,...)"}
