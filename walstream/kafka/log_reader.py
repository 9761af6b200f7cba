"""Read single records back from a topic by their offset.

Per-key ordering parks a record by reference (topic, partition, offset), never its payload, and
reads it again when its turn comes. One groupless consumer does the reads. Every partition it
has read stays assigned but paused: a paused partition is not fetched, so the consumer does not
stream the whole log in the background. A fetch returns a batch from the offset on; the records
after the one asked for are cached (a bounded LRU), since the next parked records of a busy log
are usually in that batch. Offsets never change, so the cache never goes stale.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from walstream.kafka import clients
from walstream.kafka.clients import stop_consumer

__all__ = ["LogReader", "LoggedRecord", "RecordGoneError"]

logger = logging.getLogger(__name__)


class LoggedRecord(NamedTuple):
    key: bytes | None
    value: bytes | None


class RecordGoneError(Exception):
    """The offset is no longer on the log (retention or compaction removed it)."""


class LogReader:
    """Reads records by (topic, partition, offset); one read at a time, later records cached."""

    def __init__(
        self,
        servers: str | list[str],
        *,
        cache_records: int = 8192,
        cache_bytes: int = 32 * 1024 * 1024,
        client_id: str = clients.ClientIds.LOG_READER,
        window_bytes: int = 64 * 1024,
    ) -> None:
        self._window_bytes = window_bytes
        self._servers = servers
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None  # made on first use, in the running loop
        self._lock = asyncio.Lock()
        self._assigned: set[TopicPartition] = set()
        self._cache: OrderedDict[tuple[str, int, int], LoggedRecord] = OrderedDict()
        self._cache_bytes = 0
        self._max_records = cache_records
        self._max_bytes = cache_bytes
        self.reads = 0
        self.fetches = 0

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._assigned.clear()
        if consumer is not None:
            await stop_consumer(consumer)

    async def read(
        self, topic: str, partition: int, offset: int, *, within_s: float = 10.0
    ) -> LoggedRecord:
        """The record at ``offset``.

        Raises:
            RecordGoneError: the offset is below the log's start or was compacted away.
            TimeoutError: the broker did not give it within ``within_s``.
        """
        async with self._lock:
            self.reads += 1
            hit = self._cache.pop((topic, partition, offset), None)
            if hit is not None:
                self._cache_bytes -= _size(hit)
                return hit
            if self._consumer is None:
                consumer = clients.log_reader(
                    self._servers, client_id=self._client_id, window_bytes=self._window_bytes
                )
                await consumer.start()
                self._consumer = consumer
            return await asyncio.wait_for(
                self._fetch(self._consumer, topic, partition, offset), within_s
            )

    async def _fetch(
        self, consumer: AIOKafkaConsumer, topic: str, partition: int, offset: int
    ) -> LoggedRecord:
        tp = TopicPartition(topic, partition)
        if tp not in self._assigned:
            self._assigned.add(tp)
            consumer.assign(list(self._assigned))
            consumer.pause(*self._assigned)
        consumer.seek(tp, offset)
        consumer.resume(tp)
        try:
            while True:
                self.fetches += 1
                try:
                    batches = await consumer.getmany(tp, timeout_ms=1_000)
                except OffsetOutOfRangeError as exc:
                    raise RecordGoneError(f"{topic}[{partition}]@{offset}: {exc}") from exc
                found: LoggedRecord | None = None
                for record in batches.get(tp, ()):
                    got = LoggedRecord(record.key, record.value)
                    if record.offset == offset:
                        found = got
                    elif record.offset > offset:
                        if found is None:  # past it: compacted away
                            raise RecordGoneError(f"{topic}[{partition}]@{offset}: not on the log")
                        self._remember((topic, partition, record.offset), got)
                if found is not None:
                    return found
        finally:
            consumer.pause(tp)

    def _remember(self, where: tuple[str, int, int], record: LoggedRecord) -> None:
        if where in self._cache:
            return
        self._cache[where] = record
        self._cache_bytes += _size(record)
        while self._cache and (
            len(self._cache) > self._max_records or self._cache_bytes > self._max_bytes
        ):
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= _size(old)


def _size(record: LoggedRecord) -> int:
    return len(record.key or b"") + len(record.value or b"") + 64
