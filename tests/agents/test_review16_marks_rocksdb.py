"""Review of issue 16 (R2): delivered marks on the worker's default table store (rocksdb://).

``TableAttempts.delivered`` drops the marks past ``MARK_TTL_S`` or ``MARKS_MAX`` by reading each
one back with ``table.data.get(old)`` from the handler of whatever record is being delivered now.
Faust's RocksDB store answers a get under an event from that event's partition database only
(``faust.stores.rocksdb.Store._get``), so a mark kept on another partition reads as None: it is
popped from the index and never deleted nor tombstoned on its changelog. With N partitions about
(N-1)/N of all marks are kept for ever: the table and its changelog grow with every delivery
(README: "at most 200,000 per worker"), and a copy read after 10 minutes (a consumer group rewound
by hand) is skipped as a duplicate instead of "delivered again" as the README promises.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import faust
import pytest
from faust.streams import _current_event, current_event
from faust.types import TP

from walstream.agents.attempts import MarkIndex, TableAttempts

pytestmark = pytest.mark.asyncio

NOW = 1_800_000_000_000


class _Metadata:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic_partition = TP(topic, partition)
        self.offset = offset


class _Producer:
    """Faust's producer as TableAttempts uses it; ``sent`` holds (key, value, partition)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None, int]] = []

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int,
                   timestamp: Any, headers: Any) -> asyncio.Future[Any]:  # fmt: skip
        self.sent.append((key, value, partition))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(_Metadata(topic, partition, len(self.sent)))
        return fut

    async def send_and_wait(self, *args: Any) -> Any:
        return await (await self.send(*args))


class _Message:
    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.topic = "wal.demo.log"


class _Event:
    """The source event a worker's handler is bound to (walstream.worker.bind_event)."""

    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


class _On:
    """Run as the handler of a record of ``partition`` (Faust's current event)."""

    def __init__(self, partition: int) -> None:
        self.event = _Event(partition)

    def __enter__(self) -> None:
        self.token = _current_event.set(weakref.ref(self.event))  # type: ignore[arg-type]

    def __exit__(self, *exc: object) -> None:
        _current_event.reset(self.token)


def _attempts(tmp_path: Any, producer: _Producer, index: MarkIndex) -> TableAttempts:
    app = faust.App("review16", store="rocksdb://", datadir=str(tmp_path))
    app._producer = producer  # type: ignore[assignment]  # recorded, not sent
    table = app.Table("attempts", default=int, partitions=4)
    # a Faust table without a partitioner: the current event's partition
    table.partition_for_key = lambda key: current_event().message.partition  # type: ignore[method-assign,union-attr]
    return TableAttempts(table, index=index)


async def test_a_mark_past_the_bound_is_dropped_from_its_own_partition_on_rocksdb(tmp_path):
    producer = _Producer()
    attempts = _attempts(tmp_path, producer, MarkIndex(max_marks=1, ttl_s=600))
    with _On(0):
        await attempts.delivered("id-a", NOW)
    with _On(1):  # the next delivery is of a record of another partition: over the bound of 1
        await attempts.delivered("id-b", NOW + 1_000)
    await asyncio.sleep(0)
    assert len(attempts.index) == 1  # the index let id-a's mark go ...
    # ... so its mark must be gone from the table and tombstoned on its changelog partition
    assert (b'"id-a"', None, 0) in producer.sent, producer.sent
    with _On(0):
        assert not attempts.was_delivered("id-a")


async def test_a_mark_past_its_time_is_dropped_from_its_own_partition_on_rocksdb(tmp_path):
    producer = _Producer()
    attempts = _attempts(tmp_path, producer, MarkIndex(max_marks=200_000, ttl_s=600))
    with _On(2):
        await attempts.delivered("id-a", NOW)
    with _On(3):  # 11 minutes later, a record of another partition is delivered
        await attempts.delivered("id-b", NOW + 660_000)
    await asyncio.sleep(0)
    assert len(attempts.index) == 1
    assert (b'"id-a"', None, 2) in producer.sent, producer.sent
    with _On(2):  # a copy of id-a read now (a group rewound by hand) must be delivered again
        assert not attempts.was_delivered("id-a")
