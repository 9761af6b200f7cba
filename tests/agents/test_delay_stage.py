"""The delay stage's sends: a hop batch or a forward the broker did not take is sent again, and
its offset is never committed past until it is. Fakes for the clients; the stage's logic is real.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from walstream.agents.delay import DelayStage, _Out, _Partition
from walstream.core.delay import delay_headers
from walstream.settings import Settings


@dataclass
class Record:
    offset: int
    key: bytes | None = b"k"
    value: bytes | None = b"v"
    timestamp: int = 0
    headers: list[tuple[str, bytes]] = field(
        default_factory=lambda: delay_headers(60_000, "wal.ns.log", 0)
    )


class Batch:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def append(self, **record: Any) -> object:
        self.records.append(record)
        return object()


class FlakyProducer:
    """Refuses the first ``failures`` sends (of either kind) outright, then takes everything."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, int, int]] = []  # (topic, partition, records)

    def create_batch(self) -> Batch:
        return Batch()

    def _take(self, topic: str, partition: int, count: int) -> asyncio.Future[None]:
        if self.failures > 0:
            self.failures -= 1
            raise KafkaConnectionError("broker gone")
        self.sent.append((topic, partition, count))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> Any:
        return self._take(topic, partition, len(batch.records))

    async def send(self, topic: str, value: Any, **kw: Any) -> Any:
        return self._take(topic, kw["partition"], 1)


@pytest.fixture
async def stage():
    # Not started (no Kafka here): the clients are the fakes each test sets.
    return DelayStage(Settings(app_id="t"), group_id="t-delay")


@pytest.fixture
def part(stage):
    tp = TopicPartition("t.delay.10s", 0)
    part = stage._parts[tp] = _Partition(tier_ms=10_000, next_offset=8)
    return tp, part


async def test_a_refused_hop_batch_is_sent_again_and_holds_its_offset_until_then(stage, part):
    tp, partition = part
    stage._producer = stage._due_producer = producer = FlakyProducer(failures=1)
    for offset in (5, 6, 7):
        await stage._add_hop(tp, partition, Record(offset), "t.delay.10s", 0, 1_000)
    with pytest.raises(KafkaConnectionError):
        await stage._flush_hops()
    assert partition.safe_offset() == 5  # nothing committed past the refused hops
    await asyncio.sleep(0.7)  # resent after 0.5 s, one by one
    assert sorted(producer.sent) == [("t.delay.10s", 0, 1)] * 3
    assert partition.pending == set()
    assert partition.safe_offset() == 8
    assert stage._in_flight == 0


async def test_a_refused_forward_is_sent_again(stage, part):
    tp, partition = part
    stage._producer = stage._due_producer = producer = FlakyProducer(failures=1)
    with pytest.raises(KafkaConnectionError):
        await stage._send(partition, _Out(tp, Record(5), "wal.ns.log", 0, None))
    assert partition.safe_offset() == 5
    await asyncio.sleep(0.7)
    assert producer.sent == [("wal.ns.log", 0, 1)]
    assert partition.safe_offset() == 8
