"""The mutation agents' glue (walstream.agents.mutations) over in-memory rows, a recording emitter
and a scripted kv target: what is written, sent and applied, in which order; the decisions are
core.mutations' (tests/unit/core/mutations)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from walstream.agents.mutation_rows import TableRows
from walstream.agents.mutations import MutationStage
from walstream.agents.outcomes import Source
from walstream.core.delay import parse_delay_headers
from walstream.core.mutations import (
    Forget,
    Marker,
    Operation,
    Tombstone,
    decode_marker,
    decode_state,
    encode_marker,
    encode_op_chunk,
    encode_tombstone,
    op_chunks,
    state_key,
    tombstone_key,
)
from walstream.core.placement import key_partition
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.metrics import WalMetrics
from walstream.records import Envelope
from walstream.settings import Settings
from walstream.testing import (
    ChangelogProducer,
    FakeClock,
    FakePool,
    FakeTable,
    RecordingEmitter,
    registry_of,
)
from walstream.testing.mutations import MemoryRows
from walstream.topology import mutation_topics

NS = "pds"
TOPICS = mutation_topics(NS)
DLQ = f"wal.{NS}.dlq"
#: the partition of txn t1 (4 partitions, as the default)
P1 = key_partition(b"t1", 4)


class Kv:
    """A kv target recording the tokens applied, each batch, failing as scripted."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.failures: list[Exception] = []

    async def deliver(self, envelope: Envelope) -> None:  # pragma: no cover - batches used
        await self.deliver_many([envelope])

    async def deliver_many(self, envelopes: list[Envelope]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append([str(e.idempotency_token) for e in envelopes])


class Rows(MemoryRows):
    """Rows whose writes go to a log shared with the emitter (``events``)."""

    def __init__(self, events: list[tuple[str, str]]) -> None:
        super().__init__()
        self.events = events

    async def put(self, key: str, value: bytes | None, *, durable: bool = False) -> None:
        self.events.append(("put", key))
        await super().put(key, value, durable=durable)


class Emitter(RecordingEmitter):
    def __init__(self, events: list[tuple[str, str]]) -> None:
        super().__init__()
        self.events = events

    async def emit(self, topic: str, value: bytes | None, **kwargs: Any) -> None:
        self.events.append(("emit", topic))
        await super().emit(topic, value, **kwargs)


def definition(max_attempts: int = 3) -> dict[str, Any]:
    return {
        "name": NS,
        "target": {"type": "kv", "table": "items", "key": "k"},
        "mutations": {"completion_timeout_s": 60},
        "max_attempts": max_attempts,
        "backoff": {"base_ms": 100, "multiplier": 2.0, "cap_ms": 1000, "jitter": 0.0},
    }


class Rig:
    def __init__(self, *, batch_ops: int = 200, max_attempts: int = 3) -> None:
        self.events: list[tuple[str, str]] = []
        self.rows = Rows(self.events)
        self.emitter = Emitter(self.events)
        self.kv = Kv()
        self.clock = FakeClock()
        self.metrics = WalMetrics.create(CollectorRegistry())
        self.registry = registry_of(definition(max_attempts))
        self.stage = MutationStage(
            settings=Settings(app_id="app"),
            registry=self.registry,
            rows=self.rows,
            pool=FakePool(self.kv),  # type: ignore[arg-type]
            emitter=self.emitter,
            clock=self.clock,
            rand=lambda: 0.5,
            metrics=self.metrics,
            batch_ops=batch_ops,
        )
        self.offset = 0

    def source(self, topic: str, key: bytes | None = b"t1") -> Source:
        """Where a record keyed ``key`` is read: its key's partition (the producer's)."""
        self.offset += 1
        return Source(topic, key_partition(key, 4) if key else 0, self.offset)

    async def op(self, txn: str, seq: int, value: bytes = b"v", **fields: Any) -> list[bytes]:
        operation = Operation(op="put", table="items", id=f"k{seq}", value=value, **fields)
        records = [encode_op_chunk(c) for c in op_chunks(NS, txn, seq, operation, 4)]
        for raw in records:
            await self.stage.handle_op(
                raw, txn.encode(), self.source(TOPICS.mutations, txn.encode())
            )
        return records

    async def marker(self, txn: str, count: int, **fields: Any) -> None:
        marker = Marker(NS, txn, count, self.clock.now_ms(), **fields)
        await self.stage.handle_marker(
            encode_marker(marker), txn.encode(), self.source(TOPICS.markers, txn.encode())
        )

    def dlq(self) -> list[dict[str, Any]]:
        return [
            {"key": e.key, "value": e.value, **{k: v.decode() for k, v in e.headers}}
            for e in self.emitter.to(DLQ)
        ]

    def counter(self, name: str, **labels: str) -> float:
        metric = getattr(self.metrics, name)
        return float(metric.labels(**labels)._value.get())


def token(txn: str, seq: int) -> str:
    return f"mut:{NS}:{txn}:{seq:08d}"


def waiting(rig: Rig) -> list[tuple[Marker | Forget, int]]:
    """The wakes and forgets sent, with their due times (straight to the markers topic: now)."""
    out = []
    for e in rig.emitter.emitted:
        if e.topic == DLQ:
            continue
        delay = parse_delay_headers(e.headers)
        due = delay.due_ms if delay is not None else rig.clock.now_ms()
        assert (delay.dest_topic, delay.dest_partition) == (TOPICS.markers, P1) if delay else True
        out.append((decode_marker(e.value), due))
    return out


async def test_operations_out_of_order_commit_in_seq_order_in_batches_then_only_a_tombstone():
    rig = Rig(batch_ops=2)
    for seq in (3, 0, 4, 2, 1):
        await rig.op("t1", seq, value=b"0123456789")  # 3 chunks each (4 bytes a chunk)
    await rig.marker("t1", 5)
    assert rig.kv.batches == [
        [token("t1", 0), token("t1", 1)],
        [token("t1", 2), token("t1", 3)],
        [token("t1", 4)],
    ]
    assert dict(rig.rows) == {
        tombstone_key(NS, "t1"): rig.rows[tombstone_key(NS, "t1")]
    }  # state and 15 chunk rows deleted
    durable = [key for key, _, acked in rig.rows.writes if acked]
    assert durable == [state_key(NS, "t1")] * 4  # progress after each batch, and the delete
    sent = waiting(rig)
    deadline, forget = sent[0], sent[-1]
    assert deadline == (
        Marker(NS, "t1", 0, rig.clock.now_ms(), wake=1),
        rig.clock.now_ms() + 60_000,
    )
    assert forget == (Forget(NS, "t1", rig.clock.now_ms()), rig.clock.now_ms() + 86_400_000)
    # the Forget was sent before the tombstone was written
    forget_at = max(i for i, e in enumerate(rig.events) if e[0] == "emit")
    assert forget_at < rig.events.index(("put", tombstone_key(NS, "t1")))
    assert rig.counter("mutation_commits", namespace=NS) == 1
    assert rig.counter("mutation_operations_applied", namespace=NS) == 5
    assert rig.stage.status(NS, "t1") == {
        "status": "committed",
        "committed_at_ms": rig.clock.now_ms(),
        "operations": 5,
    }


async def test_a_marker_before_its_operations_is_requeued_its_wake_sent_before_the_state():
    rig = Rig()
    await rig.marker("t1", 2)
    wake, due = waiting(rig)[0]
    assert isinstance(wake, Marker)
    assert (wake.wake, wake.op_count) == (1, 2)
    assert due > rig.clock.now_ms()
    assert rig.events == [("emit", rig.emitter.emitted[0].topic), ("put", state_key(NS, "t1"))]
    assert rig.stage.status(NS, "t1")["status"] == "open"  # type: ignore[index]
    await rig.op("t1", 0)
    await rig.op("t1", 1)
    assert rig.kv.batches == []  # only a marker drives the commit
    # the operation completing it woke the marker at once: straight to the markers topic
    now = rig.emitter.emitted[-1]
    assert (now.topic, now.partition, now.headers) == (TOPICS.markers, P1, [])
    woken = decode_marker(now.value)
    assert isinstance(woken, Marker)
    assert woken.wake == 2
    for superseded_first in (wake, woken):
        await rig.stage.handle_marker(
            encode_marker(superseded_first), b"t1", rig.source(TOPICS.markers)
        )
    assert rig.kv.batches == [[token("t1", 0), token("t1", 1)]]
    assert rig.counter("mutation_requeues", namespace=NS) == 2


async def test_a_failing_apply_is_requeued_then_dead_lettered_with_its_progress():
    rig = Rig(batch_ops=1, max_attempts=2)
    for seq in range(3):
        await rig.op("t1", seq)
    rig.kv.failures = [
        TargetUnavailableError("busy"),  # seq 0: retried
    ]
    await rig.marker("t1", 3)
    state = decode_state(rig.rows[state_key(NS, "t1")])
    assert (state.next_seq, state.attempts, state.dead) == (0, 1, None)
    wake = [m for m, _ in waiting(rig) if isinstance(m, Marker) and m.wake == state.wake]
    assert len(wake) == 1
    rig.kv.failures = [TargetRejectedError("constraint", error_class="pg_23505")]
    rig.clock.advance(1_000)
    await rig.stage.handle_marker(encode_marker(wake[0]), b"t1", rig.source(TOPICS.markers))
    assert rig.kv.batches == []
    [entry] = rig.dlq()
    assert entry["key"] == b"txn.t1"
    assert entry["wal-mutation"] == "marker"
    assert entry["wal-error-class"] == "mutation_apply_failed"
    assert "seq 0 of 3" in entry["wal-error"]
    assert decode_marker(entry["value"]) == Marker(NS, "t1", 3, state.marked_at_ms or 0)
    dead = decode_state(rig.rows[state_key(NS, "t1")])
    assert dead.dead is not None
    # the entry names its expiry wake (dlq discard sends that wake at once): the one sent last
    expiry_wake, expiry_due = waiting(rig)[-1]
    assert isinstance(expiry_wake, Marker)
    assert expiry_due == rig.clock.now_ms() + 86_400_000
    assert entry["wal-mutation-expiry"] == str(expiry_wake.wake) == str(dead.wake)
    assert rig.stage.status(NS, "t1")["status"] == "dead_lettered"  # type: ignore[index]
    assert rig.counter("mutation_dead_letters", namespace=NS, reason="mutation_apply_failed") == 1
    # a redrive resumes from the first unapplied operation
    await rig.marker("t1", 3, redrive=1)
    assert rig.kv.batches == [[token("t1", s)] for s in range(3)]


@pytest.mark.parametrize(
    ("value", "key", "topic", "why"),
    [
        (b"not json", b"t1", TOPICS.mutations, "mutation record"),
        (None, b"t1", TOPICS.mutations, "empty value"),
        ("chunk", b"other", TOPICS.mutations, "keyed"),
        ("other", b"t1", TOPICS.mutations, "read on"),
        (b"[]", b"t1", TOPICS.markers, "mutation record"),
    ],
)
async def test_a_record_that_is_not_its_topics_and_keys_goes_to_the_dlq_as_it_is(
    value, key, topic, why
):
    rig = Rig()
    op = Operation(op="put", table="items", id="k", value=b"v")
    ns = {"chunk": NS, "other": "other"}.get(value) if isinstance(value, str) else None
    raw = encode_op_chunk(op_chunks(ns, "t1", 0, op, 4)[0]) if ns else value
    handle = rig.stage.handle_op if topic == TOPICS.mutations else rig.stage.handle_marker
    await handle(raw, key, rig.source(topic, key))
    [entry] = rig.dlq()
    assert entry["value"] == raw
    assert entry["wal-error-class"] == "mutation_poison"
    assert entry["wal-mutation"] == ("op" if topic == TOPICS.mutations else "marker")
    assert why in entry["wal-error"]
    assert entry["key"] == f"poison-{topic}-{key_partition(key, 4)}-1".encode()
    assert dict(rig.rows) == {}


async def test_a_conflicting_operation_and_a_rejected_marker_go_to_the_dlq_alone():
    rig = Rig()
    await rig.op("t1", 0, value=b"a")
    conflicting = await rig.op("t1", 0, value=b"b")
    await rig.op("t1", 1)
    await rig.marker("t1", 2)
    await rig.marker("t1", 2, digest="1" * 32)  # committed with another operation set
    classes = [(e["wal-error-class"], e["wal-mutation"]) for e in rig.dlq()]
    assert classes == [("mutation_conflict", "op"), ("mutation_rejected", "marker")]
    assert rig.dlq()[0]["value"] == conflicting[0]
    assert rig.kv.batches == [[token("t1", 0), token("t1", 1)]]


async def test_a_forget_drops_only_the_tombstone_it_was_sent_for():
    rig = Rig()
    await rig.rows.put(tombstone_key(NS, "t1"), encode_tombstone(Tombstone(5, "0" * 32, 1)))
    for at in (4, 5):
        forget = encode_marker(Forget(NS, "t1", at))
        await rig.stage.handle_marker(forget, b"t1", rig.source(TOPICS.markers))
        assert (tombstone_key(NS, "t1") in rig.rows) is (at == 4)


async def test_an_unexpected_error_never_escapes_a_handler():
    rig = Rig()

    def broken(key: str) -> bytes | None:
        raise RuntimeError("store gone")

    rig.rows.get = broken  # type: ignore[method-assign, assignment]
    await rig.op("t1", 0)
    await rig.marker("t1", 1)
    assert [e["wal-error-class"] for e in rig.dlq()] == ["mutation_poison"] * 2
    assert "store gone" in rig.dlq()[0]["wal-error"]


async def test_a_transaction_of_another_operation_set_is_dead_lettered_as_a_set_mismatch():
    rig = Rig()
    for seq in range(2):
        await rig.op("t1", seq)
    await rig.marker("t1", 2, digest="0" * 32)  # names a set the operations held are not
    assert rig.kv.batches == []
    [entry] = rig.dlq()
    assert (entry["key"], entry["wal-mutation"]) == (b"txn.t1", "marker")
    assert entry["wal-error-class"] == "mutation_set_mismatch"  # not redrivable, discardable
    assert "operation set mismatch" in entry["wal-error"]
    dead = decode_state(rig.rows[state_key(NS, "t1")])
    assert entry["wal-mutation-expiry"] == str(dead.wake)
    assert rig.counter("mutation_dead_letters", namespace=NS, reason="mutation_set_mismatch") == 1


async def test_a_missing_chunk_row_dead_letters_the_transaction_as_unreadable():
    rig = Rig()
    await rig.op("t1", 0)
    await rig.op("t1", 1)
    del rig.rows[f"c:{NS}:t1:1:0"]
    await rig.marker("t1", 2)
    assert rig.kv.batches == [[token("t1", 0)]]  # applied up to the unreadable operation
    [entry] = rig.dlq()
    assert entry["wal-error-class"] == "mutation_apply_failed"
    assert "mutation_unreadable" in entry["wal-error"]


async def test_the_open_gauges_come_from_the_index_rebuilt_after_recovery():
    rig = Rig()
    await rig.op("t1", 0)
    rig.clock.advance(3_000)
    await rig.op("t2", 0)
    rig.stage.open.rebuild(iter([]))  # a new worker: nothing indexed yet
    rig.stage.reindex()
    rig.clock.advance(1_000)
    rig.stage.report()
    assert rig.metrics.mutation_open.labels(NS)._value.get() == 2
    assert rig.metrics.mutation_oldest_open_age.labels(NS)._value.get() == 4.0
    await rig.marker("t1", 1)
    rig.stage.report()
    assert rig.metrics.mutation_open.labels(NS)._value.get() == 1
    assert rig.stage.status(NS, "nope") is None


class _BytesSerializers:
    def dumps_key(self, typ: Any, key: bytes, serializer: Any = None) -> bytes:
        return key

    def dumps_value(self, typ: Any, value: bytes, serializer: Any = None) -> bytes:
        return value


async def test_table_rows_write_the_store_and_the_changelog_of_the_current_partition():
    producer = ChangelogProducer(failures=0)
    table = FakeTable(producer)
    table.app.serializers = _BytesSerializers()
    rows = TableRows(table)
    await rows.put("s:pds:t1", b"state", durable=True)
    await rows.put("c:pds:t1:0:0", b"chunk")
    assert rows.get("s:pds:t1") == b"state"
    assert rows.get_anywhere("c:pds:t1:0:0") == b"chunk"
    assert sorted(rows.items()) == [("c:pds:t1:0:0", b"chunk"), ("s:pds:t1", b"state")]
    await rows.put("c:pds:t1:0:0", None)
    await rows.put("c:pds:t1:9:9", None)  # never written: nothing to delete, nothing sent
    assert rows.get("c:pds:t1:0:0") is None
    assert [(key, value, partition) for _, key, value, partition in producer.acked] == [
        (b"s:pds:t1", b"state", 3),
        (b"c:pds:t1:0:0", b"chunk", 3),
        (b"c:pds:t1:0:0", None, 3),
    ]
    await asyncio.sleep(0)  # the acks' callbacks run
    assert table.data.persisted  # the store notes what the broker acknowledged
