"""A reader that follows a log must not step over a record it was never handed.

The embedded broker (Tansu 0.6.0, memory storage) raises a partition's high watermark before
it stores the batch being produced: while two producers append to one partition at once, a
fetch can return the later batch while the earlier one is still being stored, and a consumer's
position then moves past the earlier batch for good (it is on the log; the reader never sees
it). On Kafka offsets have holes only where records were compacted away or a transaction
marker sits. So a stage keeps the next offset it expects per partition: records after a hole
are not handled yet, the partition is read again from the hole, and a hole that is still there
after ``settle_ms`` is taken as a real one (compaction, a marker) and passed.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Cut", "GapGuard"]

P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Cut:
    """Which of a partition's fetched records to handle now: ``records[skip:skip + keep]`` (a
    contiguous run from the expected offset; the ``skip`` before it were handled already), and
    the offset to read the partition again from (None: nothing to read again)."""

    skip: int
    keep: int
    seek_to: int | None = None


@dataclass
class GapGuard(Generic[P]):
    """The next offset expected per partition, and since when a hole has been waited on."""

    settle_ms: int = 1_000
    _next: dict[P, int] = field(default_factory=dict)
    _hole_since: dict[P, tuple[int, int]] = field(default_factory=dict)
    #: holes passed as real after ``settle_ms`` (compaction, markers), for the logs and tests
    passed: int = 0
    #: holes read again (the broker's race), for the logs and tests
    reread: int = 0

    def cut(self, partition: P, offsets: Sequence[int], now_ms: int) -> Cut:
        """What to handle of ``offsets`` (a fetch's records of ``partition``, in order); a
        partition not followed yet expects its first record."""
        expected = self._next.get(partition, offsets[0] if offsets else 0)
        skip = 0
        while skip < len(offsets) and offsets[skip] < expected:
            skip += 1  # handled already (fetched before a seek back landed)
        keep = 0
        while skip + keep < len(offsets) and offsets[skip + keep] == expected + keep:
            keep += 1
        if skip + keep == len(offsets):
            self._hole_since.pop(partition, None)
            return Cut(skip, keep)
        hole_at = expected + keep  # a record is missing here: handle what comes before it
        waited_at, since = self._hole_since.get(partition, (hole_at, now_ms))
        if waited_at != hole_at:
            since = now_ms
        if now_ms - since >= self.settle_ms:  # still there: a real hole, go on past it
            self._hole_since.pop(partition, None)
            self.passed += 1
            return Cut(skip, len(offsets) - skip)
        self._hole_since[partition] = (hole_at, since)
        self.reread += 1
        return Cut(skip, keep, seek_to=hole_at)

    def follows(self, partition: P) -> bool:
        """Whether ``partition`` has an expected offset (else its reader gives one with
        :meth:`restart`: where it starts reading, e.g. its group's committed offset)."""
        return partition in self._next

    def handled(self, partition: P, last_offset: int) -> None:
        """``last_offset`` of ``partition`` was handled: the next one is expected."""
        self._next[partition] = last_offset + 1

    def restart(self, partition: P, offset: int) -> None:
        """``partition`` is read from ``offset``: where its reader starts, or a failed batch's
        rewind."""
        self._next[partition] = offset
        self._hole_since.pop(partition, None)

    def forget(self, partitions: Iterable[P]) -> None:
        """Partitions revoked or assigned afresh: their next fetch sets what is expected."""
        for partition in partitions:
            self._next.pop(partition, None)
            self._hole_since.pop(partition, None)
