"""A delay tier partition as the delay stage reads it (pure): the records fetched and not yet
routed, the head's time to leave the tier, and (its ledger) the offsets taken and not yet safely
sent on, which its commit never passes; what the stage commits and how long its loop waits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, TypeVar

from walstream.core.delay import parse_delay_headers
from walstream.core.offsets import PartitionLedger

__all__ = ["TierPartition", "commit_offsets", "oldest_due_ms", "sleep_ms"]

K = TypeVar("K", bound=Hashable)


class TierPartition(PartitionLedger):
    """A tier partition read by the stage: its fetched records not yet routed, and (the ledger)
    the offsets taken and not yet safely sent on, which its commit never passes."""

    def __init__(self, *, tier_ms: int, next_offset: int | None = None) -> None:
        super().__init__(next_offset)
        self.tier_ms = tier_ms
        self.buffer: deque[Any] = deque()
        #: when the head of ``buffer`` leaves the tier (None: nothing waits)
        self.wake_ms: int | None = None
        self.committed: int | None = None

    @property
    def pending(self) -> set[int]:
        """Offsets taken but not yet safely forwarded (producing, or in the timer heap)."""
        return self.outstanding

    def safe_offset(self) -> int | None:
        return self.committable()


def commit_offsets(parts: Mapping[K, TierPartition], *, force: bool = False) -> dict[K, int]:
    """The offset each of ``parts`` may commit now: its safe offset, if it has one and (unless
    ``force``) it moved since the partition's last commit."""
    offsets = {}
    for key, part in parts.items():
        safe = part.safe_offset()
        if safe is not None and (force or safe != part.committed):
            offsets[key] = safe
    return offsets


def sleep_ms(
    now_ms: int,
    parts: Iterable[TierPartition],
    next_due_ms: int | None,
    *,
    lead_ms: int,
    max_ms: int,
) -> int:
    """How long the stage's loop may wait for records: until a tier's head leaves or the timer
    heap's first record is ``lead_ms`` from due (``next_due_ms``), at most ``max_ms``."""
    wakes = [p.wake_ms for p in parts if p.wake_ms is not None]
    if next_due_ms is not None:
        wakes.append(next_due_ms - lead_ms)
    if not wakes:
        return max_ms
    return max(0, min(max_ms, min(wakes) - now_ms))


def oldest_due_ms(next_due_ms: int | None, parts: Iterable[TierPartition]) -> int | None:
    """The earliest due time among the records held: the timer heap's first (``next_due_ms``)
    and each tier's head (a head without valid delay headers counts for none)."""
    dues = [next_due_ms] if next_due_ms is not None else []
    for part in parts:
        if part.buffer:
            head = parse_delay_headers(part.buffer[0].headers or ())
            if head is not None:
                dues.append(head.due_ms)
    return min(dues, default=None)
