"""Review of issue 16 (R2): after a rebalance gives a tier partition back to the same worker, a
send from before the rebalance that is sent again moves the new ledger's commit past records the
stage has not read again yet (a record lost if the worker dies or the partition moves next).

The split gave the delay stage ``core.offsets.PartitionLedger``, whose ``track`` also raises the
partition's highest offset handed over, and ``HopSender.send`` tracks every resend. A partition
revoked and assigned again gets a fresh ledger; a send of the old one that fails afterwards is
routed to the fresh ledger (``_failed`` looks the partition up again) and sent again there. Once
it is acknowledged the fresh ledger has nothing outstanding and ``committable`` is that offset +
1, although the stage has not re-read anything yet: a record below it that was in the timer heap
at the revoke (dropped with the revoked partition, the revoke committed before it) is committed
past before it was forwarded. Before the split (ecc0d78) a resend only added its offset to
``pending`` and the commit was ``next_offset`` (None until a record was taken from the buffer):
nothing was committed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from walstream.agents.delay import DelayStage
from walstream.agents.hops import Out
from walstream.core.delay import parse_delay_headers
from walstream.settings import Settings
from walstream.testing import CommitRecorder, TierRecord

pytestmark = pytest.mark.asyncio

TP = TopicPartition("t.delay.10s", 0)


class _Batch:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def append(self, **record: Any) -> object:
        self.records.append(record)
        return object()


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}


class _Client:
    cluster = _Cluster()


class _Producer:
    """Its first batch's ack is left pending (``first``); every later send is acked at once."""

    def __init__(self) -> None:
        self.client = _Client()
        self.first: asyncio.Future[Any] | None = None
        self.sent: list[int] = []

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.first is None:
            self.first = future
        else:
            future.set_result(None)
        return future

    async def send(self, topic: str, value: Any, **kw: Any) -> Any:
        self.sent.append(kw.get("timestamp_ms") or 0)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_a_resend_after_the_partition_came_back_does_not_commit_past_records_not_reread():
    stage = DelayStage(Settings(app_id="t"), group_id="t-delay")  # not started: fake clients
    stage._consumer = consumer = CommitRecorder()
    stage.sender.producer = stage.sender.due_producer = producer = _Producer()
    stage._on_assigned({TP})
    part = stage._parts[TP]
    # offset 9: in its last stretch, in the timer heap (pending until forwarded)
    nine = TierRecord(9)
    part.track(9)
    headers = parse_delay_headers(nine.headers)
    assert headers is not None
    stage._timers.push(headers.due_ms, TP, (nine, headers))
    # offset 10: a hop to a smaller tier, sent, its ack not back yet
    await stage.sender.add_hop(part, Out(TP, TierRecord(10), "t.delay.1m", 0, None, 1_000))
    await stage.sender.flush()
    # a rebalance takes the partition away and gives it back
    await stage._on_revoked({TP})
    assert consumer.commits == [{TP: 9}]  # the revoke commits before 9: it is read again
    stage._on_assigned({TP})
    # the hop's batch fails now: 10 is sent again (into the fresh ledger) and acknowledged
    assert producer.first is not None
    producer.first.set_exception(KafkaConnectionError("broker gone"))
    await asyncio.sleep(0.8)
    assert producer.sent, "the failed hop was not sent again"
    # the stage has not read 9 again yet (its fetch after the rebalance is still to come)
    await stage._commit(consumer, force=True)
    committed = [c[TP] for c in consumer.commits if TP in c]
    assert max(committed) <= 9, f"committed {committed}: past offset 9, never forwarded"
