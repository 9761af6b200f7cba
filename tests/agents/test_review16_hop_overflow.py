"""Review of issue 16 (R2): a hop that does not fit its tier partition's batch, when the flush of
that full batch is refused, is never sent (agents/hops.HopSender.add_hop; the same code was in
agents/delay.py before the split, ecc0d78).

``add_hop`` tracks the record's offset and counts it in flight, finds the batch full, and calls
``flush(key)`` before starting a new batch. A refused ``send_batch`` makes ``flush`` route the
batch's members to ``_failed`` (sent again after a backoff) and raise; the record that did not fit
is in no batch and was not routed: it is neither sent again nor dropped from the ledger. Its tier
partition's commit stays at it (nothing lost), but the record waits until a restart or a
rebalance makes someone read it again (late by as long as the worker runs), every later record
of that tier partition is forwarded again after that restart, and ``in_flight`` never comes down
(each such record takes one of the stage's ``_MAX_IN_FLIGHT`` places for good).
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
from walstream.testing import TierRecord

pytestmark = pytest.mark.asyncio


class _SmallBatch:
    """A record batch that holds two records (aiokafka's append answers None when full)."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def append(self, **record: Any) -> object | None:
        if len(self.records) == 2:
            return None
        self.records.append(record)
        return object()


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}


class _Client:
    cluster = _Cluster()


class _Producer:
    """Refuses the first ``failures`` sends outright, then takes everything."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[int] = []  # offsets of the records taken
        self.client = _Client()

    def create_batch(self) -> _SmallBatch:
        return _SmallBatch()

    def _take(self, count: int) -> asyncio.Future[None]:
        if self.failures > 0:
            self.failures -= 1
            raise KafkaConnectionError("broker gone")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_batch(self, batch: _SmallBatch, topic: str, *, partition: int) -> Any:
        future = self._take(len(batch.records))
        self.sent.extend(r["value"] for r in batch.records)
        return future

    async def send(self, topic: str, value: Any, **kw: Any) -> Any:
        future = self._take(1)
        self.sent.append(value)
        return future


async def test_a_hop_that_did_not_fit_a_refused_batch_is_sent_too():
    stage = DelayStage(Settings(app_id="t"), group_id="t-delay")  # not started: fake clients
    tp = TopicPartition("t.delay.10s", 0)
    stage._on_assigned({tp})  # the stage reads the tier partition
    part = stage._parts[tp]
    stage.sender.producer = stage.sender.due_producer = producer = _Producer(failures=1)
    for offset in (5, 6):
        out = Out(tp, TierRecord(offset), "t.delay.1m", 0, None, 1_000)
        await stage.sender.add_hop(part, out._replace(record=_with_value(out.record, offset)))
    seven = Out(tp, _with_value(TierRecord(7), 7), "t.delay.1m", 0, None, 1_000)
    with pytest.raises(KafkaConnectionError):  # the full batch's flush is refused
        await stage.sender.add_hop(part, seven)
    await asyncio.sleep(0.8)  # the refused batch's members are sent again after 0.5 s
    await stage.sender.flush()
    assert sorted(producer.sent) == [5, 6, 7], "the hop that did not fit was never sent"
    assert part.pending == set()
    assert part.safe_offset() == 8
    assert stage._in_flight == 0


def _with_value(record: TierRecord, offset: int) -> TierRecord:
    record.value = offset  # type: ignore[assignment]  # what the fake producer notes
    return record
