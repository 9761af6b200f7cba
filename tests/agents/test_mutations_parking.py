"""The mutation agents never ack and drop a record they cannot handle now, and drop the rows of
a namespace that left (engineer W2, review 2 of issue 18):

* a record of a namespace that is unavailable (its latest control event unreadable) is parked:
  back through the delay tiers to its own topic and partition, due in ``PARK_MS``;
* a broker failure writing a row (a changelog record not taken) is not poison: the record is
  parked, not dead-lettered as ``mutation_poison``; a failed row write leaves the store as it was;
* a namespace that leaves (deleted, or its mutations block removed) has its rows dropped in one
  pass over the table, not when its wakes come (the worker no longer reads its markers topic).

Over the first review's ``Rig`` (in-memory rows, a recording emitter, a recording kv target), with
a drain that, unlike ``Rig.drain``, keeps what is not due yet for a later drain (as the delay
tiers do)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from walstream.agents.mutation_out import PARK_MS
from walstream.agents.mutation_rows import TableRows, row_txn
from walstream.core.delay import parse_delay_headers
from walstream.core.mutations import decode_state, state_key
from walstream.core.placement import key_partition
from walstream.errors import EmitRefusedError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import encode_event
from walstream.records import Envelope
from walstream.testing import ChangelogProducer, FakeTable, registry_of
from walstream.testing.mutation_rig import DAY_MS, NS, TOPICS, CrashingRows, Rig, definition

OTHER = "other"


def unreadable(rig: Rig) -> None:
    rig.registry.apply(NS.encode(), b"{not a namespace event")


def readable_again(rig: Rig) -> None:
    rig.registry.apply(*encode_event(parse_namespace(definition()), 2))


def dlq_classes(rig: Rig) -> list[Any]:
    return [dict(e.headers).get("wal-error-class") for e in rig.emitter.to(f"wal.{NS}.dlq")]


class FailingKv:
    """A kv target whose first ``failures`` batches fail."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.applied: list[str] = []

    async def deliver_many(self, envelopes: list[Envelope]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down")
        self.applied += [str(e.idempotency_token) for e in envelopes]


# -- an unavailable namespace --------------------------------------------------------------


async def test_an_operation_of_an_unavailable_namespace_is_parked_on_its_own_topic_and_partition():
    rig = Rig()
    unreadable(rig)
    await rig.op("p1", 0)  # 3 chunks
    parked = [e for e in rig.emitter.emitted if parse_delay_headers(e.headers) is not None]
    assert len(parked) == 3
    home = key_partition(b"p1", 4)
    for e in parked:
        delay = parse_delay_headers(e.headers)
        assert delay is not None
        assert (delay.dest_topic, delay.dest_partition) == (TOPICS.mutations, home)
        assert delay.due_ms == rig.clock.now_ms() + PARK_MS
        assert e.key == b"p1"
    assert rig.txn_rows("p1") == []  # nothing kept yet
    assert dlq_classes(rig) == []
    readable_again(rig)
    await rig.handle_marker(rig.marker_record("p1", 1), "p1")
    await rig.drain_all(60_000)
    assert rig.kv.applied == [f"mut:{NS}:p1:00000000"]
    assert rig.txn_rows("p1") == []


async def test_a_wake_read_while_its_namespace_is_unavailable_still_drives_its_commit():
    rig = Rig()
    rig.kv = FailingKv(failures=1)  # type: ignore[assignment]
    rig.stage = rig.worker()
    await rig.op("p2", 0)
    await rig.handle_marker(rig.marker_record("p2", 1), "p2")  # apply fails: re-queued
    unreadable(rig)
    await rig.drain_all(1_000)  # the retry wake comes, parked (again and again while unavailable)
    assert rig.kv.applied == []
    readable_again(rig)
    await rig.drain_all(2 * DAY_MS)
    assert rig.kv.applied == [f"mut:{NS}:p2:00000000"]
    assert rig.txn_rows("p2") == []
    assert dlq_classes(rig) == []


class RefusingEmitter:
    """An emitter refusing every record sent to a delay tier (the park's own send)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.emitted = inner.emitted

    async def emit(self, topic: str, value: bytes | None, **kwargs: Any) -> None:
        if parse_delay_headers(kwargs.get("headers") or []) is not None:
            raise EmitRefusedError(topic, "no such topic")
        await self.inner.emit(topic, value, **kwargs)


async def test_a_record_that_cannot_be_parked_either_is_not_acked():
    rig = Rig()
    rig.emitter = RefusingEmitter(rig.emitter)  # type: ignore[assignment]
    rig.stage = rig.worker()
    unreadable(rig)
    with pytest.raises(EmitRefusedError):  # the agent loop then does not ack it
        await rig.op("p3", 0)
    assert rig.emitter.emitted == []  # no DLQ entry either


# -- a broker failure writing a row --------------------------------------------------------


class FlakyRows(CrashingRows):
    """Rows whose next write matching ``fail_at`` raises as the producer does when the broker
    does not take the changelog record (the store left as it was, as ``TableRows`` does)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_at: Any = None

    async def put(self, key: str, value: bytes | None, *, durable: bool = False) -> None:
        if self.fail_at is not None and self.fail_at(key, durable):
            self.fail_at = None
            raise KafkaTimeoutError()
        await super().put(key, value, durable=durable)


async def test_an_operation_whose_row_write_fails_is_parked_not_dead_lettered():
    rig = Rig()
    rows = FlakyRows()
    rig.rows = rows
    rig.stage = rig.worker()
    rows.fail_at = lambda key, durable: key.startswith("s:")  # its state row
    await rig.op("p4", 0, value=b"abc")  # one chunk
    assert dlq_classes(rig) == []  # was: mutation_poison, the operation lost for good
    parked = [e for e in rig.emitter.emitted if parse_delay_headers(e.headers) is not None]
    dests = {parse_delay_headers(e.headers).dest_topic for e in parked}  # type: ignore[union-attr]
    assert TOPICS.mutations in dests
    await rig.handle_marker(rig.marker_record("p4", 1), "p4")
    await rig.drain_all(2 * DAY_MS)
    assert rig.kv.applied == [f"mut:{NS}:p4:00000000"]
    assert rig.txn_rows("p4") == []
    assert dlq_classes(rig) == []


async def test_a_marker_whose_progress_write_fails_is_parked_and_commits():
    rig = Rig()
    rows = FlakyRows()
    rig.rows = rows
    rig.stage = rig.worker()
    await rig.op("p5", 0)
    await rig.op("p5", 1)
    rows.fail_at = lambda key, durable: key.startswith("s:") and durable  # the progress
    await rig.handle_marker(rig.marker_record("p5", 2), "p5")
    assert rows.fail_at is None  # it did fail
    assert decode_state(rows[state_key(NS, "p5")]).next_seq == 0  # the store as it was
    await rig.drain_all(2 * DAY_MS)
    assert dlq_classes(rig) == []  # was: mutation_poison, the transaction open for ever
    assert rig.txn_rows("p5") == []
    # applied twice from seq 0 (the progress was not written): idempotent, in order
    assert rig.kv.applied == [f"mut:{NS}:p5:{s:08d}" for s in (0, 1, 0, 1)]


class _BytesSerializers:
    def dumps_key(self, typ: Any, key: bytes, serializer: Any = None) -> bytes:
        return key

    def dumps_value(self, typ: Any, value: bytes, serializer: Any = None) -> bytes:
        return value


async def test_table_rows_leave_the_store_as_it_was_when_the_changelog_write_fails():
    producer = ChangelogProducer(failures=0)
    table = FakeTable(producer)
    table.app.serializers = _BytesSerializers()
    rows = TableRows(table)
    await rows.put("s:pds:t1", b"one", durable=True)
    producer.failures = 2
    with pytest.raises(KafkaTimeoutError):
        await rows.put("s:pds:t1", b"two", durable=True)
    assert rows.get("s:pds:t1") == b"one"
    with pytest.raises(KafkaTimeoutError):
        await rows.put("s:pds:t2", b"new", durable=True)
    assert rows.get("s:pds:t2") is None


# -- a namespace that left -----------------------------------------------------------------


class EventlessTable(FakeTable):
    """A Faust table outside any event: ``partition_for_key`` raises as Faust's does."""

    partitions = 4

    def partition_for_key(self, key: Any) -> int:
        raise TypeError("Cannot modify table key from outside of stream iteration")


async def test_table_rows_write_outside_an_event_to_the_rows_transaction_partition():
    producer = ChangelogProducer(failures=0)
    table = EventlessTable(producer)
    table.app.serializers = _BytesSerializers()
    table.data[b"c:pds:t1:0:0"] = b"chunk"
    rows = TableRows(table)
    await rows.put("c:pds:t1:0:0", None)
    assert [(k, v, p) for _, k, v, p in producer.acked] == [
        (b"c:pds:t1:0:0", None, key_partition(b"t1", 4))
    ]
    assert row_txn("c:pds:t1:0:0") == ("pds", "t1")
    with pytest.raises(ValueError, match="not a mutation row key"):
        row_txn("nonsense")


def _rig_with_other() -> Rig:
    rig = Rig()
    other = definition()
    other["name"] = OTHER
    rig.registry = registry_of(definition(), other)
    rig.stage = rig.worker()
    return rig


def _changed(rig: Rig) -> bool:
    registry = rig.registry
    return rig.stage.namespaces_changed(
        (ns.name for ns in registry if ns.mutations is not None), registry.unreadable
    )


async def test_a_deleted_namespaces_rows_are_dropped_in_one_pass_at_the_registry_change():
    rig = _rig_with_other()
    assert not _changed(rig)  # the first view: nothing left
    await rig.op("d1", 0)
    await rig.handle_marker(rig.marker_record("d1", 1), "d1")  # committed: its tombstone
    await rig.op("d2", 0)  # open
    rig.rows["s:other:o1"] = rig.rows[state_key(NS, "d2")]  # another namespace's row
    assert len(rig.stage.open) == 1
    unreadable(rig)
    assert not _changed(rig)  # unavailable: not gone, nothing dropped
    assert await rig.stage.purge_gone() == 0
    rig.registry.apply(NS.encode(), None)  # `walstream ns delete pds`
    assert _changed(rig)
    assert await rig.stage.purge_gone() == 5  # d1's tombstone, d2's state and 3 chunk rows
    assert sorted(rig.rows) == ["s:other:o1"]
    assert len(rig.stage.open) == 0
    assert not _changed(rig)  # no new change: no new pass
    # created again: its new rows are its own
    readable_again(rig)
    assert not _changed(rig)
    assert rig.stage.upkeep.left == set()
    await rig.op("d3", 0)
    assert await rig.stage.purge_gone() == 0
    assert rig.txn_rows("d3") != []


async def test_a_namespace_whose_mutations_block_is_removed_has_its_rows_dropped():
    rig = _rig_with_other()
    _changed(rig)
    await rig.op("b1", 0)
    plain = definition()
    del plain["mutations"]
    rig.registry.apply(*encode_event(parse_namespace(plain), 2))
    assert _changed(rig)
    assert await rig.stage.purge_gone() == 4  # its state and 3 chunk rows
    assert rig.txn_rows("b1") == []


async def test_a_purge_skips_a_namespace_that_came_back_meanwhile():
    rig = _rig_with_other()
    _changed(rig)
    await rig.op("c1", 0)
    rig.registry.apply(NS.encode(), None)
    assert _changed(rig)
    # the namespace comes back while the pass waits for the transaction's turn
    async with rig.stage.turns.hold((NS, "c1")):
        purge = asyncio.ensure_future(rig.stage.purge_gone())
        await asyncio.sleep(0)  # the pass has read the table and waits for c1's turn
        assert not purge.done()
        readable_again(rig)
        _changed(rig)
    assert await purge == 0
    assert rig.txn_rows("c1") != []
