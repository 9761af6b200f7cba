"""A forward sent before a rebalance that gave its tier partition back to this worker: when its
send fails afterwards it is sent again (a duplicate, harmless), but neither that resend nor its
acknowledgement touches the fresh ledger of the new assignment, which starts from the offset
committed at the revoke and must not commit past records the stage has not read again.
(The batch path of the same rule: test_review16_resend_after_rebalance.py.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from walstream.agents.delay import DelayStage
from walstream.agents.hops import Out
from walstream.settings import Settings
from walstream.testing import CommitRecorder, TierRecord

pytestmark = pytest.mark.asyncio

TP = TopicPartition("t.delay.0", 0)


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}


class _Client:
    cluster = _Cluster()


class _Producer:
    """Its first send's ack is left pending (``first``); every later send is acked at once."""

    def __init__(self) -> None:
        self.client = _Client()
        self.first: asyncio.Future[Any] | None = None
        self.sends = 0

    async def send(self, topic: str, value: Any, **kw: Any) -> Any:
        self.sends += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.first is None:
            self.first = future
        else:
            future.set_result(None)
        return future


async def test_a_forward_resent_after_the_partition_came_back_leaves_the_fresh_ledger_alone():
    stage = DelayStage(Settings(app_id="t"), group_id="t-delay")  # not started: fake clients
    stage._consumer = consumer = CommitRecorder()
    stage.sender.producer = stage.sender.due_producer = producer = _Producer()
    stage._on_assigned({TP})
    old = stage._parts[TP]
    old.track(4)
    await stage.sender.send(old, Out(TP, TierRecord(4), "wal.ns.log", 0, None))
    await stage._on_revoked({TP})
    assert consumer.commits == [{TP: 4}]  # read again from 4 by whoever reads it next
    stage._on_assigned({TP})
    fresh = stage._parts[TP]
    assert fresh is not old
    assert producer.first is not None
    producer.first.set_exception(KafkaConnectionError("broker gone"))
    await asyncio.sleep(0.8)  # sent again after 0.5 s, and acked
    assert producer.sends == 2, "the failed forward was not sent again"
    assert fresh.outstanding == set()
    assert fresh.high is None, "a resend raised the fresh ledger's highest offset handed over"
    assert fresh.committable() is None
    await stage._commit(consumer, force=True)
    assert consumer.commits == [{TP: 4}], "committed past 4 before reading it again"
    assert stage._in_flight == 0
