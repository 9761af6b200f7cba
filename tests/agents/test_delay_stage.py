"""The delay stage's sends: a hop batch or a forward the broker did not take is sent again, and
its offset is never committed past until it is; a record without valid delay headers, or whose
destination is gone, is dead-lettered (never dropped) and committed past once that entry is
acknowledged. Fakes for the clients; the stage's logic is real.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, UnknownTopicOrPartitionError

from walstream.agents.delay import DelayStage
from walstream.agents.outgoing import Out
from walstream.clock import FakeClock
from walstream.core.delay import delay_headers
from walstream.core.dlq import DlqEntry, parse_dlq_record
from walstream.core.tier_partition import TierPartition
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.records import Envelope, Lifecycle, encode_envelope
from walstream.settings import Settings
from walstream.testing import TierBatch, TierClient, TierRecord


@dataclass
class Record:
    offset: int
    key: bytes | None = b"k"
    value: bytes | None = b"v"
    timestamp: int = 0
    headers: list[tuple[str, bytes]] = field(
        default_factory=lambda: delay_headers(60_000, "wal.ns.log", 0)
    )


class FlakyProducer:
    """Refuses the first ``failures`` sends (of either kind) outright, then takes everything."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, int, int]] = []  # (topic, partition, records)
        self.client = TierClient()

    def create_batch(self) -> TierBatch:
        return TierBatch()

    def _take(self, topic: str, partition: int, count: int) -> asyncio.Future[None]:
        if self.failures > 0:
            self.failures -= 1
            raise KafkaConnectionError("broker gone")
        self.sent.append((topic, partition, count))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_batch(self, batch: TierBatch, topic: str, *, partition: int) -> Any:
        return self._take(topic, partition, len(batch.records))

    async def send(self, topic: str, value: Any, **kw: Any) -> Any:
        return self._take(topic, kw["partition"], 1)


@pytest.fixture
def part(stage):
    tp = TopicPartition("t.delay.10s", 0)
    part = stage._parts[tp] = TierPartition(tier_ms=10_000, next_offset=8)
    return tp, part


async def test_a_refused_hop_batch_is_sent_again_and_holds_its_offset_until_then(stage, part):
    tp, partition = part
    stage.sender.producer = stage.sender.due_producer = producer = FlakyProducer(failures=1)
    for offset in (5, 6, 7):
        await stage.sender.add_hop(
            partition, Out(tp, Record(offset), "t.delay.10s", 0, None, 1_000)
        )
    with pytest.raises(KafkaConnectionError):
        await stage.sender.flush()
    assert partition.safe_offset() == 5  # nothing committed past the refused hops
    await asyncio.sleep(0.7)  # resent after 0.5 s, one by one
    assert sorted(producer.sent) == [("t.delay.10s", 0, 1)] * 3
    assert partition.pending == set()
    assert partition.safe_offset() == 8
    assert stage._in_flight == 0


async def test_a_refused_forward_is_sent_again(stage, part):
    tp, partition = part
    stage.sender.producer = stage.sender.due_producer = producer = FlakyProducer(failures=1)
    with pytest.raises(KafkaConnectionError):
        await stage.sender.send(partition, Out(tp, Record(5), "wal.ns.log", 0, None))
    assert partition.safe_offset() == 5
    await asyncio.sleep(0.7)
    assert producer.sent == [("wal.ns.log", 0, 1)]
    assert partition.safe_offset() == 8


# -- nothing is dropped: dead letters -----------------------------------------------------------

NOW = 1_700_000_000_000
TIMER = TopicPartition("t.delay.timer", 1)


@dataclass
class Sent:
    topic: str
    value: bytes | None
    key: bytes | None
    partition: int | None
    headers: list[tuple[str, bytes]] | None
    done: asyncio.Future[None]


class Producer:
    """Knows ``topics`` (name -> partitions) as aiokafka's metadata would: a send to an unknown
    topic fails (after aiokafka's metadata wait), to an unknown partition fails its assert.
    ``refuse`` maps a topic to the error every send to it raises. Acks only when told."""

    def __init__(self, topics: dict[str, int], refuse: dict[str, Exception] | None = None):
        self.topics = topics
        self.refuse = refuse or {}
        self.client = TierClient(topics)
        self.sent: list[Sent] = []
        self.tries: list[str] = []

    async def send(self, topic, value, *, key, partition, timestamp_ms, headers):
        self.tries.append(topic)
        if topic in self.refuse:
            raise self.refuse[topic]
        if topic not in self.topics:
            raise UnknownTopicOrPartitionError()
        assert partition is None or partition < self.topics[topic], "Unrecognized partition"
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append(Sent(topic, value, key, partition, headers, done))
        return done

    def to(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]

    def ack_all(self) -> None:
        for sent in self.sent:
            if not sent.done.done():
                sent.done.set_result(None)


def orders_registry(*names: str) -> NamespaceRegistry:
    registry = NamespaceRegistry()
    for name in names:
        config = parse_namespace({"name": name, "target": {"type": "kafka", "topic": "out"}})
        registry.apply(*encode_event(config, 1))
    return registry


def envelope(namespace: str = "orders") -> bytes:
    return encode_envelope(
        Envelope(
            id=f"{namespace}-1",
            namespace=namespace,
            key="k",
            payload={"n": 1},
            payload_encoding="json",
            target={"type": "kafka", "topic": "out"},
            lifecycle=Lifecycle(NOW, NOW),
            idempotency_token="tok",
            created_at_ms=NOW,
            attempt=2,
        )
    )


def dead_entry(sent: Sent) -> DlqEntry:
    entry = parse_dlq_record(sent.key, sent.value, sent.headers or [], partition=0, offset=0)
    assert isinstance(entry, DlqEntry)
    return entry


@pytest.fixture
def clock():
    return FakeClock(NOW)


@pytest.fixture
def dead_stage(clock):
    """A stage with the ``orders`` namespace known, reading the timer tier's partition 1 (its
    records leave at once), next offset 5, with a 1 s destination grace."""
    stage = DelayStage(
        Settings(app_id="t", delay_dest_grace_ms=1_000),
        group_id="t-delay",
        clock=clock,
        registry=orders_registry("orders"),
    )
    stage._parts[TIMER] = TierPartition(tier_ms=0, next_offset=5)
    return stage


async def take(stage: DelayStage, *records: Record) -> TierPartition:
    """Read ``records`` from the timer tier and fire what is due, as the stage's loop does."""
    part = stage._parts[TIMER]
    part.buffer.extend(records)
    await stage._drain(TIMER, part, stage.clock.now_ms())
    await stage._fire_timers(stage.clock.now_ms())
    return part


async def test_a_record_without_delay_headers_goes_to_its_namespaces_dlq_committed_once_acked(
    dead_stage,
):
    producer = Producer({"t.poison": 4, "wal.orders.dlq": 4, "wal.orders.log": 4})
    dead_stage.sender.producer = dead_stage.sender.due_producer = producer
    part = await take(dead_stage, Record(5, value=envelope(), headers=[]))
    [sent] = producer.sent
    assert sent.topic == "wal.orders.dlq"
    entry = dead_entry(sent)
    assert entry.id == "orders-1"
    assert entry.namespace == "orders"
    assert entry.error_class == "DelayHeadersError"
    assert "delay headers" in entry.reason
    assert entry.source == "t.delay.timer[1]@5"
    assert entry.attempts == 2
    assert sent.value == envelope()  # as it was
    assert part.safe_offset() == 5  # not committed past before the DLQ acknowledges it
    producer.ack_all()
    await asyncio.sleep(0)
    assert part.safe_offset() == 6


async def test_garbled_headers_and_value_go_to_the_poison_topic(dead_stage):
    producer = Producer({"t.poison": 4, "wal.orders.log": 4})
    dead_stage.sender.producer = dead_stage.sender.due_producer = producer
    garbled = [("wal-due", b"soon"), ("wal-dest", b"wal.orders.log")]
    part = await take(dead_stage, Record(5, value=b"\xff not json", headers=garbled))
    [sent] = producer.sent
    assert (sent.topic, sent.partition) == ("t.poison", 1)
    entry = dead_entry(sent)
    assert entry.id == "poison-t.delay.timer-1-5"
    assert entry.error_class == "DelayHeadersError"
    assert sent.value == b"\xff not json"
    assert part.safe_offset() == 5
    producer.ack_all()
    await asyncio.sleep(0)
    assert part.safe_offset() == 6


async def wait_for(predicate, what: str, within_s: float = 5.0):
    deadline = asyncio.get_running_loop().time() + within_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_forward_to_a_missing_partition_is_dead_lettered_after_the_grace(dead_stage, clock):
    producer = Producer({"t.poison": 4, "wal.orders.dlq": 4, "wal.orders.log": 4})
    dead_stage.sender.producer = dead_stage.sender.due_producer = producer
    missing = delay_headers(NOW, "wal.orders.log", 9)  # the log has 4 partitions
    part = await take(dead_stage, Record(5, value=envelope(), headers=missing))
    await asyncio.sleep(0.6)  # tried again after 0.5 s: still within the grace
    assert producer.sent == []
    assert part.safe_offset() == 5
    clock.advance(1_000)  # the grace is over
    await wait_for(lambda: producer.to("wal.orders.dlq"), "the dead letter", within_s=3)
    [sent] = producer.sent
    entry = dead_entry(sent)
    assert entry.error_class == "DestinationGoneError"
    assert "wal.orders.log[9]" in entry.reason
    assert sent.partition is None  # the DLQ has no partition 9 either: any one
    producer.ack_all()
    await asyncio.sleep(0)
    assert part.safe_offset() == 6
    # the destination is known to be gone: the next record to it is dead-lettered at once
    await take(dead_stage, Record(6, value=envelope(), headers=missing))
    assert len(producer.to("wal.orders.dlq")) == 2
    producer.ack_all()
    await asyncio.sleep(0)
    assert part.safe_offset() == 7
    assert dead_stage._in_flight == 0


async def test_a_deleted_namespace_is_dead_lettered_to_the_poison_topic(dead_stage, clock):
    producer = Producer({"t.poison": 4})  # wal.gone.log no longer exists
    dead_stage.sender.producer = dead_stage.sender.due_producer = producer
    part = await take(
        dead_stage,
        Record(5, value=envelope("gone"), headers=delay_headers(NOW, "wal.gone.log", 2)),
    )
    await wait_for(lambda: producer.tries, "the first try")  # in the background: unknown topic
    clock.advance(1_000)
    await wait_for(lambda: producer.to("t.poison"), "the poison entry", within_s=3)
    [sent] = producer.sent
    assert dead_entry(sent).namespace == "gone"
    assert sent.partition == 2
    producer.ack_all()
    await asyncio.sleep(0)
    assert part.safe_offset() == 6


async def test_a_dead_letter_its_dlq_refuses_as_missing_goes_to_the_poison_topic(dead_stage):
    producer = Producer({"t.poison": 4, "wal.orders.log": 4})  # wal.orders.dlq is missing
    dead_stage.sender.producer = dead_stage.sender.due_producer = producer
    part = await take(dead_stage, Record(5, value=envelope(), headers=[]))
    await wait_for(lambda: producer.to("t.poison"), "the poison entry")
    producer.ack_all()
    await asyncio.sleep(0)
    assert part.safe_offset() == 6


async def test_transient_forward_failures_are_retried_without_giving_up(dead_stage, clock):
    producer = Producer(
        {"t.poison": 4, "wal.orders.dlq": 4, "wal.orders.log": 4},
        refuse={"wal.orders.log": KafkaConnectionError("broker gone")},
    )
    dead_stage.sender.producer = dead_stage.sender.due_producer = producer
    with pytest.raises(KafkaConnectionError):  # the loop backs off
        await take(
            dead_stage, Record(5, value=envelope(), headers=delay_headers(NOW, "wal.orders.log", 1))
        )
    clock.advance(3_600_000)  # an hour-long outage: still not the record's fault
    await asyncio.sleep(1.7)  # tried again at 0.5 s and 1.5 s
    assert producer.sent == []
    part = dead_stage._parts[TIMER]
    assert part.safe_offset() == 5
    del producer.refuse["wal.orders.log"]  # the broker is back
    await wait_for(lambda: producer.to("wal.orders.log"), "the forward", within_s=4)
    producer.ack_all()
    await asyncio.sleep(0)
    assert part.safe_offset() == 6


async def test_an_empty_assignment_still_counts_as_joined(stage):
    """More workers than tier partitions: a worker whose delay stage owns none is still ready
    (the worker's /readyz waits for ``joined``, not for tiers of its own)."""
    assert not stage.joined
    stage._on_assigned(set())
    assert stage.joined
    assert stage.assignment == frozenset()


# -- a hop that did not fit its batch ------------------------------------------------------------
# (review of issue 16, R2: when the flush of the full batch it did not fit was refused, it was in
# no batch and never routed: neither sent again nor dropped from the ledger, its tier
# partition's commit held at it until a restart, and in_flight never came down)


class SmallBatchProducer:
    """Batches of two records; refuses the first ``failures`` sends outright, then takes
    everything (``sent``: the values taken, here the records' offsets)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[int] = []
        self.client = TierClient()

    def create_batch(self) -> TierBatch:
        return TierBatch(limit=2)

    def _take(self, count: int) -> asyncio.Future[None]:
        if self.failures > 0:
            self.failures -= 1
            raise KafkaConnectionError("broker gone")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_batch(self, batch: TierBatch, topic: str, *, partition: int) -> Any:
        future = self._take(len(batch.records))
        self.sent.extend(r["value"] for r in batch.records)
        return future

    async def send(self, topic: str, value: Any, **kw: Any) -> Any:
        future = self._take(1)
        self.sent.append(value)
        return future


async def test_a_hop_that_did_not_fit_a_refused_batch_is_sent_too(stage):
    tp = TopicPartition("t.delay.10s", 0)
    stage._on_assigned({tp})  # the stage reads the tier partition
    part = stage._parts[tp]
    stage.sender.producer = stage.sender.due_producer = producer = SmallBatchProducer(failures=1)
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
