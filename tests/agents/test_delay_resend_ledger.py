"""A send from before a rebalance that gave its tier partition back to this worker: when it fails
afterwards it is sent again (a duplicate, harmless), but neither that resend nor its
acknowledgement touches the fresh ledger of the new assignment, which starts from the offset
committed at the revoke and must not commit past records the stage has not read again. Both
paths: a single send (a forward) and a hop batch.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from walstream.agents.delay import DelayStage
from walstream.agents.outgoing import Out
from walstream.core.delay import parse_delay_headers
from walstream.core.offsets import PartitionLedger
from walstream.testing import CommitRecorder, HeldFirstProducer, TierRecord

pytestmark = pytest.mark.asyncio

TP = TopicPartition("t.delay.0", 0)


def reading(
    stage: DelayStage, tp: TopicPartition
) -> tuple[CommitRecorder, HeldFirstProducer, PartitionLedger]:
    """``stage`` reading ``tp``: its commits recorded, its producer holding its first ack."""
    stage._consumer = consumer = CommitRecorder()
    stage.sender.producer = stage.sender.due_producer = producer = HeldFirstProducer()
    stage._on_assigned({tp})
    return consumer, producer, stage._parts[tp]


async def test_a_forward_resent_after_the_partition_came_back_leaves_the_fresh_ledger_alone(
    stage: DelayStage,
):
    consumer, producer, old = reading(stage, TP)
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


# The batch path (review of issue 16, R2): a hop resent into the fresh ledger tracked its offset
# there, raising its high mark; once acked, the stage committed past a record that was in the
# timer heap at the revoke and had not been read again (lost if the worker died next).
TIER = TopicPartition("t.delay.10s", 0)


async def test_a_resend_after_the_partition_came_back_does_not_commit_past_records_not_reread(
    stage: DelayStage,
):
    consumer, producer, part = reading(stage, TIER)
    # offset 9: in its last stretch, in the timer heap (pending until forwarded)
    nine = TierRecord(9)
    part.track(9)
    headers = parse_delay_headers(nine.headers)
    assert headers is not None
    stage._timers.push(headers.due_ms, TIER, (nine, headers))
    # offset 10: a hop to a smaller tier, sent, its ack not back yet
    await stage.sender.add_hop(part, Out(TIER, TierRecord(10), "t.delay.1m", 0, None, 1_000))
    await stage.sender.flush()
    # a rebalance takes the partition away and gives it back
    await stage._on_revoked({TIER})
    assert consumer.commits == [{TIER: 9}]  # the revoke commits before 9: it is read again
    stage._on_assigned({TIER})
    # the hop's batch fails now: 10 is sent again (into the fresh ledger) and acknowledged
    assert producer.first is not None
    producer.first.set_exception(KafkaConnectionError("broker gone"))
    await asyncio.sleep(0.8)
    assert producer.sent, "the failed hop was not sent again"
    # the stage has not read 9 again yet (its fetch after the rebalance is still to come)
    await stage._commit(consumer, force=True)
    committed = [c[TIER] for c in consumer.commits if TIER in c]
    assert max(committed) <= 9, f"committed {committed}: past offset 9, never forwarded"
