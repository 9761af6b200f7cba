"""Attempt counts per record id, kept across crashes (seed 000: attempt counts for entropy repair).

A record's count is written once its retry record is safe on the retry topic, and removed when
the record is delivered or dead-lettered. When a worker dies before acking a log record whose
retry is already out, the re-read copy finds a higher count here and is dropped as a duplicate:
the retry chain goes on, its count not restarted.

``TableAttempts`` keeps the counts in the Faust table ``attempts`` and writes its changelog
straight to the producer from the handler, awaited, instead of through Faust's changelog buffer
(``table[key] = value``): same records on the same changelog partition, so Faust recovers the
table as before, but at about a third of the CPU (measured: the two buffered writes of a record
retried once cost ~150 us, as much as the rest of its retry). The handler waits for the
broker's ack of each write, retrying one that failed (``walstream.agents.emit.send_acked``), so
a count is on the changelog before its source record is acked: a failed write is seen and
written again by the handler itself, not found at Faust's next flush with the record acked.

**Delivered marks.** Once the target acknowledged a record, its count is replaced by a mark,
``-(seconds * 65536 + partition)`` (a count is never negative): a copy of the record read again
(a crash re-reads what was not committed, the delay stage sends again what it had not committed,
a stale retry copy) finds it and is not delivered again. The mark is written after the target's
acknowledgement and not awaited (Faust flushes the producer before it commits a source offset):
a crash between the two loses the mark, and the record is delivered once more, never lost; so
does a mark the producer refuses to queue (the deliverer logs it, the record stays delivered).
Marks are kept ``MARK_TTL_S`` (10 min) and at most ``MARKS_MAX`` (200,000) per worker, the
oldest dropped first (a tombstone on their changelog partition, which the mark's value names);
an index of them, rebuilt from the table after its recovery (``reindex``), drives that.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import faust.streams

from walstream.agents.emit import send_acked
from walstream.agents.outcomes import Source, count_key
from walstream.agents.tables import changelog_record, note_persisted, send_unacked
from walstream.records import Envelope

__all__ = [
    "MARKS_MAX",
    "MARK_TTL_S",
    "Attempts",
    "MarkIndex",
    "MemoryAttempts",
    "TableAttempts",
    "mark_delivered",
]

logger = logging.getLogger(__name__)

#: How long a delivered mark is kept, and how many a worker keeps at most (the oldest go first).
MARK_TTL_S = 600
MARKS_MAX = 200_000
_PARTITIONS = 65_536


def mark_value(at_s: int, partition: int) -> int:
    """The table value of a delivered mark (negative: a count is >= 0)."""
    return -(at_s * _PARTITIONS + partition % _PARTITIONS)


def mark_of(value: Any) -> tuple[int, int] | None:
    """(seconds, partition) of a delivered mark; None for a count (or nothing)."""
    if value is None:
        return None
    number = int(value)
    if number >= 0:
        return None
    at_s, partition = divmod(-number, _PARTITIONS)
    return at_s, partition


def _off_event(call: Callable[[str], Any], key: str) -> Any:
    """``call(key)`` on a table's store as outside any event: a RocksDB store then looks the key
    up in every partition database it holds (under an event, only in the event's), a memory
    store is one mapping either way."""
    token = faust.streams._current_event.set(None)
    try:
        return call(key)
    finally:
        faust.streams._current_event.reset(token)


class Attempts(Protocol):
    def get(self, record_id: str, default: int = 0) -> int: ...

    async def record(self, record_id: str, attempt: int) -> None:
        """The record's next attempt is ``attempt``."""

    async def forget(self, record_id: str) -> None:
        """The record is settled (dead-lettered)."""

    def was_delivered(self, record_id: str) -> bool:
        """The record has a delivered mark."""

    async def delivered(self, record_id: str, now_ms: int) -> None:
        """The target acknowledged the record: its count becomes a delivered mark."""


async def mark_delivered(attempts: Attempts, env: Envelope, now_ms: int, source: Source) -> None:
    """The delivered mark of ``env``, which the target acknowledged (read at ``source``). A
    mark that cannot be written (the producer refused to queue it: buffer full, no metadata)
    costs at most a duplicate later, as a mark lost in a crash does: the record stays
    delivered, never dead-lettered, and its key goes on."""
    try:
        await attempts.delivered(count_key(env), now_ms)
    except Exception as exc:  # noqa: BLE001 - the record stays delivered
        logger.warning(
            "deliver %s: %s delivered, its mark not written (%s: %s): a copy read again "
            "would be delivered again",
            source.coordinates(),
            env.id,
            type(exc).__name__,
            exc,
        )


class MarkIndex:
    """The delivered marks a worker keeps, oldest first: which to drop (``MARK_TTL_S``,
    ``MARKS_MAX``)."""

    def __init__(self, *, max_marks: int = MARKS_MAX, ttl_s: int = MARK_TTL_S) -> None:
        self.max_marks = max_marks
        self.ttl_s = ttl_s
        self._marks: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._marks)

    def add(self, record_id: str, at_s: int, partition: int) -> None:
        self._marks.pop(record_id, None)
        self._marks[record_id] = (at_s, partition)

    def expired(self, now_s: int) -> list[tuple[str, int]]:
        """Remove and return (id, partition) of the marks past their time or the bound."""
        out = []
        marks = self._marks
        while marks:
            record_id, (at_s, partition) = next(iter(marks.items()))
            if len(marks) <= self.max_marks and at_s > now_s - self.ttl_s:
                break
            marks.popitem(last=False)
            out.append((record_id, partition))
        return out

    def rebuild(self, marks: list[tuple[str, int, int]]) -> None:
        """From (id, seconds, partition) of every mark in the table."""
        self._marks = OrderedDict((i, (t, p)) for i, t, p in sorted(marks, key=lambda m: m[1]))


class MemoryAttempts(dict[str, int]):
    """Counts in a dict, delivered marks in ``marks`` (handler tests; nothing survives the
    process)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks: dict[str, int] = {}
        self.index = MarkIndex()

    def was_delivered(self, record_id: str) -> bool:
        return record_id in self.marks

    async def record(self, record_id: str, attempt: int) -> None:
        self[record_id] = attempt

    async def forget(self, record_id: str) -> None:
        self.pop(record_id, None)

    async def delivered(self, record_id: str, now_ms: int) -> None:
        self.pop(record_id, None)
        self.marks[record_id] = now_ms
        self.index.add(record_id, now_ms // 1000, 0)
        for old, _ in self.index.expired(now_ms // 1000):
            self.marks.pop(old, None)


class TableAttempts:
    """Counts in a Faust table, its changelog written directly (see the module docstring).

    Call from a handler bound to its source event (``walstream.worker.bind_event``): the table
    partition, and a RocksDB store's partition database, are the event's."""

    def __init__(self, table: Any, *, index: MarkIndex | None = None) -> None:
        self.table = table
        self.index = index if index is not None else MarkIndex()

    def get(self, record_id: str, default: int = 0) -> int:
        value = self.table.data.get(record_id)
        return default if value is None or int(value) < 0 else int(value)

    def was_delivered(self, record_id: str) -> bool:
        return mark_of(self.table.data.get(record_id)) is not None

    async def delivered(self, record_id: str, now_ms: int) -> None:
        """Not awaited on the broker (see the module docstring); the oldest marks are dropped."""
        table = self.table
        partition = table.partition_for_key(record_id)  # the current event's
        at_s = now_ms // 1000
        value = mark_value(at_s, partition)
        table.data[record_id] = value
        self.index.add(record_id, at_s, partition)  # indexed first: dropped even if unsent
        await self._send(record_id, value, partition)
        # Kept on its own partition, maybe not the current event's: read and deleted there (a
        # RocksDB store answers a get under an event from that event's partition only). All
        # deleted before any tombstone is sent: one refused leaves none of them in the table.
        gone = []
        for old, old_partition in self.index.expired(at_s):
            if mark_of(_off_event(table.data.get, old)) is not None:
                _off_event(table.data.__delitem__, old)
                gone.append((old, old_partition))
        for old, old_partition in gone:
            await self._send(old, None, old_partition)

    def reindex(self) -> None:
        """Rebuild the marks' index from the table (after its recovery)."""
        marks = []
        for record_id, value in list(self.table.data.items()):
            mark = mark_of(value)
            if mark is not None:
                marks.append((str(record_id), mark[0], mark[1]))
        self.index.rebuild(marks)

    async def _send(self, record_id: str, value: int | None, partition: int) -> None:
        """Write to the changelog without waiting for the broker's ack."""
        await send_unacked(self.table, record_id, value, partition)

    async def record(self, record_id: str, attempt: int) -> None:
        self.table.data[record_id] = attempt
        await self._changelog(record_id, attempt)

    async def forget(self, record_id: str) -> None:
        data = self.table.data
        if record_id not in data:
            return
        del data[record_id]
        await self._changelog(record_id, None)

    async def _changelog(self, record_id: str, attempt: int | None) -> None:
        table = self.table
        key, value = changelog_record(table, record_id, attempt)
        partition = table.partition_for_key(record_id)  # the current event's
        metadata = await send_acked(
            table.app.producer, table.changelog_topic_name, key, value, partition, None, None
        )
        note_persisted(table, metadata)
