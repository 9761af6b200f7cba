"""Commit ledger: a partition's committed offset never passes a record without a durable outcome.

A consumer hands records to its handlers in offset order and they finish in any order. Each
partition keeps the offsets handed over and not yet acked (*outstanding*); the offset it may
commit is the lowest outstanding one, or one past the highest offset handed over when none is.
A record that is never acked (its handler raised, or it was in flight when the worker stopped)
therefore holds the commit where it is, and is read again after a restart or a rebalance.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["OffsetLedger", "PartitionLedger"]

P = TypeVar("P", bound=Hashable)

#: Acked offsets the heap may keep beyond twice the outstanding ones before it is rebuilt.
_SLACK = 64


class PartitionLedger:
    """One partition's outstanding offsets, and the offset it may commit: never past one of them.

    ``next_offset``: where reading starts (the commit before anything is handed over).
    """

    __slots__ = ("heap", "high", "outstanding")

    def __init__(self, next_offset: int | None = None) -> None:
        self.outstanding: set[int] = set()
        #: ``outstanding`` as a min-heap; acked offsets leave it lazily, when they reach the top
        self.heap: list[int] = []
        #: the highest offset handed over, None before the first
        self.high: int | None = None if next_offset is None else next_offset - 1

    def track(self, offset: int) -> None:
        """Note that the record at ``offset`` was handed over (outstanding until acked; tracking
        it again while it is changes nothing)."""
        if offset not in self.outstanding:
            self.outstanding.add(offset)
            heapq.heappush(self.heap, offset)
        if self.high is None or offset > self.high:
            self.high = offset

    def ack(self, offset: int) -> bool:
        """Note that the record at ``offset`` has a durable outcome; False if it was not
        outstanding (never handed over, or acked already)."""
        if offset not in self.outstanding:
            return False
        self.outstanding.discard(offset)
        heap = self.heap
        while heap and heap[0] not in self.outstanding:
            heapq.heappop(heap)
        if len(heap) > 2 * len(self.outstanding) + _SLACK:
            # a record never acked keeps the acked ones above it in the heap: rebuild it, so
            # the ledger's memory follows the records outstanding, not all those seen since
            self.heap = sorted(self.outstanding)
        return True

    def committable(self) -> int | None:
        """The offset to commit (the next record to read after a restart): the lowest outstanding
        one, else one past the highest handed over; None when nothing was."""
        if self.heap:
            return self.heap[0]
        return None if self.high is None else self.high + 1


class OffsetLedger(Generic[P]):
    """Outstanding offsets per assigned partition, and the offset each may commit.

    Only assigned partitions are tracked: records and acks of any other partition are ignored
    (a late ack of a revoked partition must not move anything).
    """

    def __init__(self) -> None:
        self._partitions: dict[P, PartitionLedger] = {}

    def assign(self, partitions: Iterable[P]) -> None:
        """Start tracking ``partitions`` afresh (whatever was known of them is forgotten)."""
        for partition in partitions:
            self._partitions[partition] = PartitionLedger()

    def revoke(self, partitions: Iterable[P]) -> None:
        """Stop tracking ``partitions``."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def assigned(self, partition: P) -> bool:
        """Whether ``partition`` is tracked."""
        return partition in self._partitions

    def partitions(self) -> list[P]:
        """Every tracked partition."""
        return list(self._partitions)

    def track(self, partition: P, offset: int) -> bool:
        """Note that the record at ``offset`` was handed to a handler; False if not assigned."""
        state = self._partitions.get(partition)
        if state is None:
            return False
        state.track(offset)
        return True

    def ack(self, partition: P, offset: int) -> bool:
        """Note that the record at ``offset`` has a durable outcome; False if it was not
        outstanding (unknown partition, never handed over, or acked already)."""
        state = self._partitions.get(partition)
        return state is not None and state.ack(offset)

    def committable(self, partition: P) -> int | None:
        """The offset ``partition`` may commit (the next record to read after a restart), or
        None when nothing was handed over since it was assigned."""
        state = self._partitions.get(partition)
        return None if state is None else state.committable()

    def outstanding(self, partition: P) -> int:
        """How many records of ``partition`` were handed over and not acked."""
        state = self._partitions.get(partition)
        return 0 if state is None else len(state.outstanding)
