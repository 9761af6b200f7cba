"""A mutation stage over in-memory rows, a recording emitter and a kv target recording what it
applied (the agents' review tests of issue 18): a crash is a BaseException raised by a row write
(the write it interrupts never reached the changelog), then a new stage (a new worker) over the
rows the changelog kept handles the unacked record again; records the stage scheduled (wakes,
Forgets, parked records) are delivered in due order, as the delay tiers would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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

__all__ = ["DAY_MS", "NS", "TOPICS", "Crash", "CrashingRows", "Kv", "Rig", "definition"]

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
        #: indexes of the emitted records drain_all handed over
        self.done: set[int] = set()
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
                assert e.key is not None  # noqa: S101 - every mutation record is keyed
                await self.stage.handle_marker(e.value, e.key, self.source(TOPICS.markers, e.key))

    def txn_rows(self, txn: str) -> list[str]:
        """The state and chunk rows left of ``txn`` (its tombstone aside)."""
        return sorted(k for k in self.rows if k.startswith(("s:", "c:")) and f":{txn}" in k)

    async def drain_all(self, horizon_ms: int) -> None:
        """Deliver every record scheduled back to the markers or mutations topic, due by now +
        horizon, one at a time in due order (the clock moves to each one's due time); what is due
        later stays for the next drain."""
        end = self.clock.now_ms() + horizon_ms
        done: set[int] = self.done
        while True:
            pending = []
            for i, e in enumerate(self.emitter.emitted):
                delay = parse_delay_headers(e.headers)
                topic = delay.dest_topic if delay is not None else e.topic
                if i in done or topic not in (TOPICS.markers, TOPICS.mutations):
                    continue
                due = delay.due_ms if delay is not None else self.clock.now_ms()
                if due <= end:
                    pending.append((due, i, topic))
            if not pending:
                return
            due, i, topic = min(pending)
            done.add(i)
            e = self.emitter.emitted[i]
            self.clock.advance(max(0, due - self.clock.now_ms()))
            assert e.key is not None  # noqa: S101 - every mutation record is keyed
            handle = self.stage.handle_marker if topic == TOPICS.markers else self.stage.handle_op
            await handle(e.value, e.key, self.source(topic, e.key))
