"""The body of ``POST /v1/namespaces/{ns}/replay``, validated (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from walstream.core.numbers import as_integer
from walstream.core.replay import parse_cursor
from walstream.core.times import parse_time_ms
from walstream.errors import BadRequestError

__all__ = ["MAX_TIME_MS", "REPLAY_FIELDS", "ReplayRequest", "parse_replay_request"]

REPLAY_FIELDS = frozenset({"from", "to", "skip_ids", "resume_from"})
_MAX_SKIP_IDS = 10_000
#: 9999-12-31T23:59:59.999Z: the latest time a window may name (Kafka timestamps are 64-bit, and
#: the replay's progress echoes its window as JSON numbers).
MAX_TIME_MS = 253_402_300_799_999


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """A window [from_ms, to_ms) to replay, the ids to leave out, and where to resume."""

    from_ms: int
    to_ms: int
    skip_ids: frozenset[str] = frozenset()
    resume_from: dict[int, int] | None = None


def _time(body: Mapping[str, Any], name: str, now_ms: int) -> int:
    value = body.get(name)
    if value is None:
        raise BadRequestError(name, "is required (ms since the epoch, ISO 8601, or -<n>h)")
    if isinstance(value, float):  # 5.0 is the integer 5 (JSON Schema's integer)
        value = as_integer(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequestError(name, "must be ms since the epoch or a string time")
    if isinstance(value, int):
        ms = value
    else:
        try:
            ms = parse_time_ms(value, now_ms)
        except ValueError as exc:
            raise BadRequestError(name, str(exc)) from None
    if not 0 <= ms <= MAX_TIME_MS:  # -1000000000h or year 1032: before the epoch
        raise BadRequestError(name, "must be between the epoch and the year 9999")
    return ms


def parse_replay_request(body: Any, now_ms: int) -> ReplayRequest:
    """
    Raises:
        BadRequestError: naming the field (an unknown one included).
    """
    if not isinstance(body, dict):
        raise BadRequestError("body", "must be a JSON object")
    for name in body:
        if name not in REPLAY_FIELDS:
            raise BadRequestError(str(name), f"unknown field (expected {sorted(REPLAY_FIELDS)})")
    from_ms = _time(body, "from", now_ms)
    to_ms = _time(body, "to", now_ms)
    if to_ms <= from_ms:
        raise BadRequestError("to", "must be after from")
    skip_raw = body.get("skip_ids", [])
    if not isinstance(skip_raw, list) or not all(isinstance(i, str) for i in skip_raw):
        raise BadRequestError("skip_ids", "must be a list of record ids (strings)")
    if len(skip_raw) > _MAX_SKIP_IDS:
        raise BadRequestError("skip_ids", f"at most {_MAX_SKIP_IDS} ids")
    resume_raw = body.get("resume_from")
    resume_from = None
    if resume_raw is not None:
        if not isinstance(resume_raw, str):
            raise BadRequestError("resume_from", "must be the partition:offset,... cursor")
        try:
            resume_from = parse_cursor(resume_raw)
        except ValueError as exc:
            raise BadRequestError("resume_from", str(exc)) from None
    return ReplayRequest(from_ms, to_ms, frozenset(skip_raw), resume_from)
