"""Which log records a replay re-delivers: written in the window, due, never early (pure).

The window is by write time (``created_at_ms``), not by where a record sits in the log: a delayed
write enters the log when it comes due, possibly long after the window, and log timestamps need
not be in order. A record due after the replay started is not the replay's to deliver: it has
not been delivered yet, the worker still owes it (it waits in the delay tiers, or is held by the
deliver agent) and delivers it at its due time. In a key-ordered namespace the later records of
its key wait behind it in the worker, so the replay leaves them to the worker too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "ReplayPlan",
    "Verdict",
    "cursor_refusal",
    "format_cursor",
    "parse_cursor",
    "partition_refusal",
]


class Verdict(Enum):
    """What a replay does with one log record."""

    #: written outside the window
    OUTSIDE = "outside"
    #: in the window, and left out on request
    SKIP = "skip"
    #: in the window, not yet due (or behind such a record of its key): the worker delivers it
    PENDING = "pending"
    DELIVER = "deliver"


@dataclass
class ReplayPlan:
    """The window [from_ms, to_ms) of write times, replayed at ``started_ms``."""

    from_ms: int
    to_ms: int
    started_ms: int
    skip_ids: Collection[str] = ()
    key_ordered: bool = False
    #: (partition, key) of the keys waiting behind a record not yet due, in log order.
    _waiting: set[tuple[int, str]] = field(default_factory=set)

    def verdict(
        self, *, partition: int, record_id: str, key: str | None, created_at_ms: int, due_ms: int
    ) -> Verdict:
        """Decide for one record; call in log order per partition (it remembers waiting keys)."""
        waiting = (partition, key) if self.key_ordered and key is not None else None
        if waiting is not None and waiting in self._waiting:
            pending = True
        else:
            pending = due_ms > self.started_ms
            if pending and waiting is not None:
                self._waiting.add(waiting)
        if not self.from_ms <= created_at_ms < self.to_ms:
            return Verdict.OUTSIDE
        if pending:
            return Verdict.PENDING
        if record_id in self.skip_ids:
            return Verdict.SKIP
        return Verdict.DELIVER


def format_cursor(next_offsets: Mapping[int, int]) -> str:
    """Where a stopped replay goes on: ``partition:offset`` of each partition not finished
    (the offset of the first record not replayed), comma-separated."""
    return ",".join(f"{p}:{o}" for p, o in sorted(next_offsets.items()))


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_cursor(raw: str) -> dict[int, int]:
    """The ``--resume-from`` a stopped replay printed. A partition not named is finished.

    Raises:
        ValueError: not ``partition:offset[,partition:offset...]`` of non-negative integers
            in ASCII digits (``str.isdigit`` takes any Unicode digit, which ``int()`` reads).
    """
    cursor: dict[int, int] = {}
    for part in raw.split(","):
        partition, sep, offset = part.strip().partition(":")
        if not sep or not _digits(partition) or not _digits(offset):
            raise ValueError(f"{part!r} is not partition:offset")
        cursor[int(partition)] = int(offset)
    return cursor


def partition_refusal(cursor: Mapping[int, int], partitions: Collection[int]) -> str | None:
    """Why ``cursor`` names a partition the log does not have (its ``partitions``), or None."""
    missing = sorted(set(cursor) - set(partitions))
    if not missing:
        return None
    named = ", ".join(str(p) for p in missing)
    has = f"partitions 0-{max(partitions)}" if partitions else "no partitions"
    return f"names partition {named}, which the log does not have (it has {has})"


def cursor_refusal(cursor: Mapping[int, int], ends: Mapping[int, int]) -> str | None:
    """Why ``cursor`` names no place of a log whose partitions end at ``ends`` (partition ->
    the offset after its last record), or None when it does. A cursor a replay printed names
    partitions of its log at offsets up to their ends (an offset at the end: nothing left)."""
    refused = partition_refusal(cursor, ends.keys())
    if refused is not None:
        return refused
    past = [p for p, o in sorted(cursor.items()) if o > ends[p]]
    if past:
        beyond = ", ".join(f"{p}:{cursor[p]} (it ends at {ends[p]})" for p in past)
        return f"names an offset past its partition's end: {beyond}"
    return None
