"""Review of issue 18's mutation agents (engineer R): defects proven over in-memory rows, a
recording emitter and a kv target that records what it applied. A crash is a BaseException
raised by a row write (the write it interrupts never reached the changelog), then a new stage
(a new worker) over the rows the changelog kept handles the unacked record again. Every record
the stage scheduled (wakes, Forgets, through the delay tiers or straight) is then delivered in
due order, as the delay tiers would.

Each test is a strict xfail until its owner fixes the defect named in its reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from walstream.agents.mutations import MutationStage
from walstream.agents.outcomes import Source
from walstream.core.delay import parse_delay_headers
from walstream.core.mutations import (
    Marker,
    Operation,
    encode_marker,
    encode_op_chunk,
    op_chunks,
)
from walstream.core.placement import key_partition
from walstream.metrics import WalMetrics
from walstream.records import Envelope
from walstream.settings import Settings
from walstream.testing import FakeClock, FakePool, RecordingEmitter, registry_of
from walstream.testing.mutations import MemoryRows
from walstream.topology import mutation_topics

NS = "pds"
TOPICS = mutation_topics(NS)
DAY_MS = 86_400_000


class Crash(BaseException):
    """The worker is SIGKILLed: nothing after this point happens."""


class Kv:
    """A kv target recording the tokens it applied."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    async def deliver(self, envelope: Envelope) -> None:  # pragma: no cover - batches used
        await self.deliver_many([envelope])

    async def deliver_many(self, envelopes: list[Envelope]) -> None:
        self.applied += [str(e.idempotency_token) for e in envelopes]


class CrashingRows(MemoryRows):
    """Rows whose write matching ``crash_at`` crashes the worker once, before it is written."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_at: Callable[[str, bytes | None], bool] | None = None

    async def put(self, key: str, value: bytes | None, *, durable: bool = False) -> None:
        if self.crash_at is not None and self.crash_at(key, value):
            self.crash_at = None
            raise Crash(key)
        await super().put(key, value, durable=durable)


def definition() -> dict[str, Any]:
    return {
        "name": NS,
        "target": {"type": "kv", "table": "items", "key": "k"},
        "mutations": {"completion_timeout_s": 60},
        "max_attempts": 3,
        "backoff": {"base_ms": 100, "multiplier": 2.0, "cap_ms": 1000, "jitter": 0.0},
    }


class Rig:
    def __init__(self) -> None:
        self.rows = CrashingRows()
        self.emitter = RecordingEmitter()
        self.kv = Kv()
        self.clock = FakeClock()
        self.registry = registry_of(definition())
        self.delivered = 0
        self.offset = 0
        #: the partition records are read on (None: their key's)
        self.partition: int | None = None
        self.stage = self.worker()

    def worker(self) -> MutationStage:
        """A (new) worker over the table's rows as the changelog holds them."""
        stage = MutationStage(
            settings=Settings(app_id="app"),
            registry=self.registry,
            rows=self.rows,
            pool=FakePool(self.kv),  # type: ignore[arg-type]
            emitter=self.emitter,
            clock=self.clock,
            rand=lambda: 0.5,
            metrics=WalMetrics.create(CollectorRegistry()),
        )
        stage.reindex()
        return stage

    def source(self, topic: str, key: bytes) -> Source:
        """Where a record keyed ``key`` is read: its key's partition (the producer's), or
        ``partition`` when a test sets it."""
        self.offset += 1
        partitions = Settings(app_id="app").default_partitions
        partition = self.partition if self.partition is not None else key_partition(key, partitions)
        return Source(topic, partition, self.offset)

    async def op(self, txn: str, seq: int, value: bytes = b"0123456789") -> None:
        operation = Operation(op="put", table="items", id=f"k{seq}", value=value)
        for c in op_chunks(NS, txn, seq, operation, 4):
            await self.stage.handle_op(
                encode_op_chunk(c), txn.encode(), self.source(TOPICS.mutations, txn.encode())
            )

    def marker_record(self, txn: str, count: int) -> bytes:
        return encode_marker(Marker(NS, txn, count, self.clock.now_ms()))

    async def handle_marker(self, raw: bytes, txn: str) -> None:
        await self.stage.handle_marker(raw, txn.encode(), self.source(TOPICS.markers, txn.encode()))

    async def drain(self, horizon_ms: int) -> None:
        """Deliver every record scheduled back to the markers topic, due by now + horizon, in
        due order (the clock moves to each one's due time), including those they schedule."""
        end = self.clock.now_ms() + horizon_ms
        while True:
            pending = []
            for e in self.emitter.emitted[self.delivered :]:
                delay = parse_delay_headers(e.headers)
                topic = delay.dest_topic if delay is not None else e.topic
                if topic == TOPICS.markers:
                    due = delay.due_ms if delay is not None else self.clock.now_ms()
                    pending.append((due, e))
            self.delivered = len(self.emitter.emitted)
            if not pending:
                return
            for due, e in sorted(pending, key=lambda p: p[0]):
                if due > end:
                    continue
                self.clock.advance(max(0, due - self.clock.now_ms()))
                assert e.key is not None
                await self.stage.handle_marker(e.value, e.key, self.source(TOPICS.markers, e.key))

    def txn_rows(self, txn: str) -> list[str]:
        """The state and chunk rows left of ``txn`` (its tombstone aside)."""
        return sorted(k for k in self.rows if k.startswith(("s:", "c:")) and f":{txn}" in k)


async def test_a_worker_killed_between_the_tombstone_and_the_deletes_leaves_no_rows_for_ever():
    rig = Rig()
    for seq in (1, 0):
        await rig.op("t1", seq)  # 3 chunks each
    marker = rig.marker_record("t1", 2)
    # killed once the tombstone is written, at the first chunk row's delete
    rig.rows.crash_at = lambda key, value: key.startswith("c:") and value is None
    with pytest.raises(Crash):
        await rig.handle_marker(marker, "t1")
    assert rig.kv.applied == [f"mut:{NS}:t1:00000000", f"mut:{NS}:t1:00000001"]
    rig.stage = rig.worker()  # a new worker reads the unacked marker again
    await rig.handle_marker(marker, "t1")
    await rig.drain(2 * DAY_MS)  # the deadline wake, then the Forget at the window's end
    assert rig.kv.applied == [f"mut:{NS}:t1:00000000", f"mut:{NS}:t1:00000001"]
    assert rig.txn_rows("t1") == []
    assert len(rig.stage.open) == 0


async def test_a_transaction_that_only_got_operations_leaves_no_rows_for_ever():
    rig = Rig()
    await rig.op("t2", 0, value=b"x" * 40)  # 10 chunk rows; its client dies: no marker
    await rig.drain(30 * DAY_MS)  # the deadline wake dead-letters it; nothing else is due
    dlq = rig.emitter.to(f"wal.{NS}.dlq")
    assert [dict(e.headers).get("wal-mutation") for e in dlq] == [b"marker"]
    assert rig.txn_rows("t2") == []


async def test_a_deleted_namespaces_rows_do_not_stay_for_ever():
    rig = Rig()
    await rig.op("t3", 0)
    await rig.handle_marker(rig.marker_record("t3", 1), "t3")  # committed: its tombstone
    await rig.op("t4", 0)  # open: waiting for its marker
    assert rig.kv.applied == [f"mut:{NS}:t3:00000000"]
    rig.registry.apply(NS.encode(), None)  # `walstream ns delete pds`
    await rig.drain(30 * DAY_MS)  # every wake and Forget delivered all the same
    assert sorted(k for k in rig.rows if f":{NS}:" in k) == []


async def test_a_record_on_another_partition_than_its_keys_is_refused():
    rig = Rig()
    partitions = Settings(app_id="app").default_partitions
    txn = next(f"t{i}" for i in range(100) if key_partition(f"t{i}".encode(), partitions) != 2)
    rig.partition = 2
    await rig.op(txn, 0)  # read on partition 2, not the key's
    await rig.handle_marker(rig.marker_record(txn, 1), txn)
    assert rig.kv.applied == []
    dlq = rig.emitter.to(f"wal.{NS}.dlq")
    assert {dict(e.headers).get("wal-error-class") for e in dlq} == {b"mutation_poison"}
