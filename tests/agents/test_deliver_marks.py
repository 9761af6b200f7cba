"""Delivered marks (issue 15 item 11): a record the target acknowledged is not delivered again
when a copy of it is read again (a crash re-reads what was not committed, the delay stage sends
a retry copy again, a stale retry), and attempt numbers are not restarted; a mark is written
only after the target's acknowledgement, so a crash before it gives a duplicate, never a loss;
marks are bounded (time and count) and their index survives a recovery; a mark the producer
refuses to queue leaves the record delivered; on the worker's default RocksDB store an expired
mark is dropped from its own partition."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import faust
import pytest
from aiokafka.errors import KafkaTimeoutError
from faust.streams import _current_event, current_event
from faust.types import TP

from walstream.agents.attempts import (
    MarkIndex,
    MemoryAttempts,
    TableAttempts,
    mark_of,
    mark_value,
)
from walstream.agents.deliver import Deliverer
from walstream.agents.ordering import KeyOrder
from walstream.agents.outcomes import Outcome, Source
from walstream.clock import FakeClock
from walstream.errors import TargetUnavailableError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.records import Envelope, decode_envelope, encode_envelope
from walstream.targets.memory import MemoryTarget
from walstream.testing import (
    ChangelogProducer,
    DeliveryHarness,
    FakeTable,
    MemoryLog,
    RecordingEmitter,
    ScriptedTarget,
    envelope,
    fake_deliverer,
)

NOW = 1_800_000_000_000
DOWN = TargetUnavailableError("down", error_class="http_503")
LOG = Source("wal.orders.log", 2, 41)
RETRY = Source("wal.orders.retry", 2, 7)


def record(**changes):
    return envelope(1, now_ms=NOW)._replace(**changes)


def rec(n: int) -> Envelope:
    return envelope(n, ns="seq", now_ms=NOW)


@pytest.fixture
def registry():
    registry = NamespaceRegistry()
    for version, obj in enumerate(
        [
            {
                "name": "orders",
                "max_attempts": 5,
                "backoff": {"base_ms": 2_000, "multiplier": 2.0, "cap_ms": 60_000, "jitter": 0.0},
                "target": {"type": "kafka", "topic": "out"},
            },
            {
                "name": "seq",
                "ordering": "key",
                "max_attempts": 5,
                "backoff": {"base_ms": 1_000, "multiplier": 2.0, "cap_ms": 10_000, "jitter": 0.0},
                "target": {"type": "kafka", "topic": "out"},
            },
        ]
    ):
        registry.apply(*encode_event(parse_namespace(obj), version))
    return registry


class WatchingTarget(MemoryTarget):
    """Notes, at each attempt, whether the record already had its delivered mark."""

    def __init__(self, attempts: MemoryAttempts) -> None:
        super().__init__()
        self.attempts = attempts
        self.marked_during: list[bool] = []

    async def deliver(self, envelope: Any) -> None:
        self.marked_during.append(self.attempts.was_delivered(envelope.id))
        await super().deliver(envelope)


def make(registry, target, attempts) -> tuple[Deliverer, RecordingEmitter, FakeClock]:
    emitter, clock = RecordingEmitter(), FakeClock(NOW)
    deliverer = fake_deliverer(registry, target, emitter, clock, attempts)
    return deliverer, emitter, clock


async def test_a_delivered_record_read_again_after_a_crash_is_not_delivered_again(registry):
    attempts = MemoryAttempts()
    target = WatchingTarget(attempts)
    deliverer, _, _ = make(registry, target, attempts)
    value = encode_envelope(record())
    assert await deliverer.handle(value, b"k1", LOG) is Outcome.DELIVERED
    assert target.marked_during == [False]  # the mark comes after the target's answer
    assert attempts.was_delivered("id-1")
    # the worker was killed before the commit passed it: the same log record, read again
    assert await deliverer.handle(value, b"k1", LOG) is Outcome.DUPLICATE
    assert [e.id for e in target.delivered] == ["id-1"]


async def test_a_retried_record_is_not_delivered_again_by_any_copy_nor_as_attempt_0(registry):
    """Before: delivered at attempt 2, its count was forgotten, so the log record read again
    after a crash went out again as attempt 0 (the chaos test's 'X-Wal-Attempt: 0' copies),
    and a retry copy the delay stage sent again went out again too."""
    attempts = MemoryAttempts()
    target = WatchingTarget(attempts)
    deliverer, emitter, clock = make(registry, target, attempts)
    target.fail_next(DOWN)
    target.fail_next(DOWN)
    original = encode_envelope(record())
    assert await deliverer.handle(original, b"k1", LOG) is Outcome.RETRY
    first_retry = emitter.emitted[-1].value
    clock.advance(2_000)
    assert await deliverer.handle(first_retry, b"k1", RETRY) is Outcome.RETRY
    second_retry = emitter.emitted[-1].value
    clock.advance(4_000)
    assert await deliverer.handle(second_retry, b"k1", RETRY) is Outcome.DELIVERED
    assert [e.attempt for e in target.delivered] == [2]
    # a crash: everything is read again, the log record and both retry copies
    for value, source in ((original, LOG), (first_retry, RETRY), (second_retry, RETRY)):
        assert await deliverer.handle(value, b"k1", source) is Outcome.DUPLICATE
    assert [e.attempt for e in target.delivered] == [2]
    assert attempts == {}  # no count left: the mark replaced it


async def test_a_failed_attempt_leaves_no_mark_and_a_copy_is_delivered_later(registry):
    attempts = MemoryAttempts()
    target = WatchingTarget(attempts)
    deliverer, _, _ = make(registry, target, attempts)
    target.fail_next(DOWN)
    value = encode_envelope(record())
    assert await deliverer.handle(value, b"k1", LOG) is Outcome.RETRY
    assert not attempts.was_delivered("id-1")
    retry = decode_envelope(value)._replace(attempt=1)
    assert await deliverer.handle(encode_envelope(retry), b"k1", RETRY) is Outcome.DELIVERED


async def test_a_mark_lost_in_a_crash_gives_a_duplicate_not_a_loss(registry):
    attempts = MemoryAttempts()
    target = WatchingTarget(attempts)
    deliverer, _, _ = make(registry, target, attempts)
    value = encode_envelope(record())
    assert await deliverer.handle(value, b"k1", LOG) is Outcome.DELIVERED
    attempts.marks.clear()  # the mark never reached the changelog: the worker died first
    assert await deliverer.handle(value, b"k1", LOG) is Outcome.DELIVERED
    assert [e.id for e in target.delivered] == ["id-1", "id-1"]


async def test_a_redriven_record_is_delivered_again_despite_its_first_mark(registry):
    attempts = MemoryAttempts()
    target = WatchingTarget(attempts)
    deliverer, _, _ = make(registry, target, attempts)
    assert await deliverer.handle(encode_envelope(record()), b"k1", LOG) is Outcome.DELIVERED
    redriven = encode_envelope(record(redrive=1))
    assert await deliverer.handle(redriven, b"k1", LOG) is Outcome.DELIVERED
    assert await deliverer.handle(redriven, b"k1", LOG) is Outcome.DUPLICATE
    assert len(target.delivered) == 2


async def test_a_head_delivered_before_a_crash_hands_its_key_on_when_read_again(registry):
    """Delivered and marked, the worker died before the key was handed on: the head's copy read
    again is not delivered again, and the key goes on to the record parked behind it."""
    target = ScriptedTarget()
    order = KeyOrder({})
    harness = DeliveryHarness.build(registry, target, order, now_ms=NOW)
    target.fail("id-1", DOWN)
    assert await harness.write(rec(1)) is Outcome.RETRY
    assert await harness.write(rec(2)) is Outcome.WAITING
    attempts = harness.deliverer.attempts
    await attempts.delivered("id-1", NOW)  # delivered by its retry copy; then the kill
    assert isinstance(harness.log, MemoryLog)
    value = harness.log.records[("wal.seq.log", 2)][0].value
    source = Source("wal.seq.log", 2, 0)
    assert await harness.deliverer.handle(value, b"k1", source) is Outcome.DUPLICATE
    state = order.get("seq", "k1")
    assert state is not None
    assert state.head == "id-2"  # handed on
    await harness.run_emitted()
    assert [e.id for e in target.delivered] == ["id-2"]  # id-1 not again: it was marked


def test_marks_are_dropped_oldest_first_past_their_time_or_the_bound():
    index = MarkIndex(max_marks=3, ttl_s=60)
    for n in range(3):
        index.add(f"id-{n}", 1_000 + n, n)
    assert index.expired(1_010) == []
    index.add("id-3", 1_011, 3)  # one over the bound: the oldest goes
    assert index.expired(1_011) == [("id-0", 0)]
    assert index.expired(1_061) == [("id-1", 1)]  # 60 s old
    assert len(index) == 2


def test_a_mark_names_its_time_and_partition_and_is_never_a_count():
    value = mark_value(1_800_000_000, 7)
    assert value < 0
    assert mark_of(value) == (1_800_000_000, 7)
    assert [mark_of(v) for v in (0, 3, None)] == [None, None, None]


async def test_table_marks_replace_the_count_and_old_ones_are_tombstoned_on_their_partition():
    producer = ChangelogProducer(failures=0)
    table = FakeTable(producer)  # every write lands on partition 3 of the changelog
    attempts = TableAttempts(table, index=MarkIndex(max_marks=2, ttl_s=600))
    await attempts.record("id-1", 2)
    await attempts.delivered("id-1", NOW)
    assert attempts.was_delivered("id-1")
    assert attempts.get("id-1") == 0  # not a count
    await asyncio.sleep(0)  # the mark's write is not awaited: its ack arrives
    mark = mark_value(NOW // 1000, 3)
    assert producer.acked[-1] == ("walstream-attempts-changelog", b"id-1", str(mark).encode(), 3)
    await attempts.delivered("id-2", NOW + 1_000)
    await attempts.delivered("id-3", NOW + 2_000)  # over the bound of 2: id-1's mark goes
    assert not attempts.was_delivered("id-1")
    assert ("walstream-attempts-changelog", b"id-1", None, 3) in producer.acked
    # a recovered table: the index is rebuilt from the marks it holds
    again = TableAttempts(table, index=MarkIndex(max_marks=1, ttl_s=600))
    again.reindex()
    assert len(again.index) == 2
    await again.delivered("id-4", NOW + 3_000)
    assert [attempts.was_delivered(i) for i in ("id-2", "id-3", "id-4")] == [False, False, True]


# -- a mark the producer refuses to queue ------------------------------------------------------
# (review of issue 16, R2: aiokafka's send raises when it cannot queue a record, e.g. its buffer
# full for request_timeout_ms; the mark's send raising inside the deliverer's catch-all
# dead-lettered the record the target had just applied and, with on_dlq = "hold", held its key
# behind a delivered record. A mark that cannot be written costs at most a duplicate later.)


class _FullProducer(ChangelogProducer):
    """Faust's producer with aiokafka's buffer full once: the first ``send`` cannot queue its
    record (the delivered mark's); later sends are taken."""

    full = True

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int,
                   timestamp: Any, headers: Any) -> Any:  # fmt: skip
        if self.full:
            self.full = False
            raise KafkaTimeoutError("buffer full: batch not queued within request_timeout_ms")
        return await super().send(topic, key, value, partition, timestamp, headers)


@pytest.fixture
def held_registry():
    """``seq`` ordered by key, its DLQ entries holding their key (``on_dlq = "hold"``)."""
    registry = NamespaceRegistry()
    ns = {
        "name": "seq",
        "ordering": "key",
        "on_dlq": "hold",
        "max_attempts": 5,
        "target": {"type": "kafka", "topic": "out"},
    }
    registry.apply(*encode_event(parse_namespace(ns), 1))
    return registry


async def test_a_record_the_target_applied_is_delivered_even_if_its_mark_cannot_be_queued(
    held_registry,
):
    registry = held_registry
    target = MemoryTarget()
    emitter, clock = RecordingEmitter(), FakeClock(NOW)
    attempts = TableAttempts(FakeTable(_FullProducer(failures=0)))
    order = KeyOrder({})
    deliverer = fake_deliverer(registry, target, emitter, clock, attempts, order=order)
    first = envelope(1, ns="seq", now_ms=NOW)
    outcome = await deliverer.handle(encode_envelope(first), b"k1", Source("wal.seq.log", 2, 0))
    assert [e.id for e in target.delivered] == ["id-1"]  # the target applied it
    dead = [e for e in emitter.emitted if e.topic == "wal.seq.dlq"]
    assert outcome is Outcome.DELIVERED, (outcome, [dict(e.headers or ()) for e in dead])
    assert dead == []
    assert order.get("seq", "k1") is None  # its key is free, not held behind it


# -- marks on the worker's default table store (rocksdb://) ------------------------------------
# (review of issue 16, R2: Faust's RocksDB store answers a get under an event from that event's
# partition database only (faust.stores.rocksdb.Store._get), so a mark kept on another partition
# read back under the current event was None: popped from the index, never deleted nor
# tombstoned, and a copy read after MARK_TTL_S was skipped instead of delivered again.)


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
