"""A key held (ordering = key, on_dlq = hold) behind a DLQ entry the broker took without its
record (too large even for the DLQ): the entry's headers name the key, so ``dlq discard``
settles it, and ``dlq redrive`` reads the record back from the source the entry names (the log
keeps it) or, if it is gone, settles the key and says so. Before, neither released the key: the
key's later records waited forever."""

from __future__ import annotations

from typing import Any

import pytest

from walstream.agents.ordering import KeyOrder
from walstream.agents.outcomes import Outcome
from walstream.clock import FakeClock
from walstream.core.dlq import (
    DlqEntry,
    Marker,
    entry_headers,
    parse_dlq_record,
    parse_source,
)
from walstream.core.outbox.markers import MarkerKind
from walstream.dlq import RedriveProgress, discard, redrive
from walstream.errors import EmitRefusedError, TargetRejectedError
from walstream.kafka.log_reader import RecordGoneError
from walstream.records import Envelope, decode_envelope
from walstream.testing import (
    DeliveryHarness,
    MemoryLog,
    RecordingEmitter,
    ScriptedTarget,
    envelope,
    fake_deliverer,
    namespace_definition,
    registry_of,
)

NOW = 1_800_000_000_000
PART = 2
REJECTED = TargetRejectedError("HTTP 400", error_class="http_400")


def rec(n: int, ns: str) -> Envelope:
    return envelope(n, ns=ns, now_ms=NOW)


def delivered(target) -> list[str]:
    return [env.id for env in target.delivered]


class DlqRefusesRecords(RecordingEmitter):
    """The broker refuses every DLQ entry that carries the record (as one too large would)."""

    async def emit(self, topic, value, *, key=None, partition=None, headers=None, **kw):
        if topic.endswith(".dlq") and value:  # markers (empty) go
            raise EmitRefusedError(topic, "MessageSizeTooLargeError")
        await super().emit(topic, value, key=key, partition=partition, headers=headers, **kw)


class OperatorProducer:
    """What ``dlq discard``/``redrive`` write, passed on to the harness as the broker would."""

    def __init__(self, harness: DeliveryHarness) -> None:
        self.harness = harness
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None, list]] = []

    async def send_and_wait(self, topic, value=None, *, key=None, partition=None, headers=None):
        self.sent.append((topic, value, key, partition, list(headers or [])))
        if not topic.endswith(".log"):
            await self.harness.emitter.emit(
                topic, value, key=key, partition=partition, headers=headers
            )

    def to(self, topic: str):
        return [s for s in self.sent if s[0] == topic]


def make_harness(target: ScriptedTarget) -> DeliveryHarness:
    registry = registry_of(
        namespace_definition("held", base_ms=1_000, cap_ms=10_000, ordering="key", on_dlq="hold")
    )
    emitter, log, clock = DlqRefusesRecords(), MemoryLog(), FakeClock(NOW)
    deliverer = fake_deliverer(registry, target, emitter, clock, order=KeyOrder({}), reader=log)
    return DeliveryHarness(deliverer, emitter, log, clock)


async def held_behind_a_payloadless_entry(
    harness: DeliveryHarness, target: ScriptedTarget
) -> DlqEntry:
    target.fail("id-1", REJECTED)
    assert await harness.write(rec(1, ns="held"), ns="held") is Outcome.DEAD
    assert await harness.write(rec(2, ns="held"), ns="held") is Outcome.WAITING
    [dead] = harness.emitter.to("wal.held.dlq")
    entry = parse_dlq_record(dead.key, dead.value, dead.headers, partition=PART, offset=0)
    assert isinstance(entry, DlqEntry)
    assert entry.value is None  # the record is not in the entry
    assert entry.key == "k1"  # but its key is named
    assert parse_source(entry.source) == ("wal.held.log", PART, 0)
    await harness.run_emitted()
    assert delivered(target) == []  # id-2 waits behind the held key
    return entry


def closing_markers(producer: OperatorProducer) -> list[Marker]:
    out = []
    for _, value, key, partition, headers in producer.to("wal.held.dlq"):
        parsed = parse_dlq_record(key, value, headers, partition=partition, offset=1)
        assert isinstance(parsed, Marker)
        out.append(parsed)
    return out


@pytest.fixture
async def held() -> tuple[ScriptedTarget, DeliveryHarness, DlqEntry, OperatorProducer, Any]:
    """A key held behind a payloadless DLQ entry: the target, the harness, the entry, the
    operator's producer and the namespace."""
    target = ScriptedTarget()
    harness = make_harness(target)
    entry = await held_behind_a_payloadless_entry(harness, target)
    producer = OperatorProducer(harness)
    ns = harness.deliverer.registry.get("held")
    return target, harness, entry, producer, ns


async def test_discard_of_a_payloadless_entry_settles_the_key_it_held(held):
    target, harness, entry, producer, ns = held

    assert await discard(producer, ns, [entry]) == 1
    settle = producer.to("wal.held.retry")
    assert [(key, part, dict(h)) for _, _, key, part, h in settle] == [
        (b"k1", PART, {"wal-order": MarkerKind.SETTLE})
    ]
    await harness.run_emitted()
    assert delivered(target) == ["id-2"]  # the key went on
    assert harness.deliverer.order.get("held", "k1") is None
    assert [m.closes for m in closing_markers(producer)] == [(PART, 0)]


async def test_redrive_of_a_payloadless_entry_redrives_the_record_read_from_its_source(held):
    target, harness, entry, producer, ns = held

    async def read_source(topic: str, partition: int, offset: int) -> bytes | None:
        return (await harness.log.read(topic, partition, offset)).value

    progress = await redrive(
        producer, ns, [entry], RedriveProgress("held", 1), read_source=read_source
    )
    assert (progress.redriven, progress.skipped) == (1, [])
    [(_, value, key, _, _)] = producer.to("wal.held.log")
    again = decode_envelope(value)
    assert (again.id, again.key, again.attempt, again.redrive, key) == ("id-1", "k1", 0, 1, b"k1")
    assert [m.closes for m in closing_markers(producer)] == [(PART, 0)]

    assert await harness.write(again, ns="held") is Outcome.DELIVERED  # the held head goes first
    await harness.run_emitted()
    assert delivered(target) == ["id-1", "id-2"]
    assert harness.deliverer.order.get("held", "k1") is None


async def test_redrive_of_a_payloadless_entry_whose_record_is_gone_settles_the_key(held):
    target, harness, entry, producer, ns = held

    async def read_source(topic: str, partition: int, offset: int) -> bytes | None:
        raise RecordGoneError(f"{topic}[{partition}]@{offset}: below the log start")

    progress = await redrive(
        producer, ns, [entry], RedriveProgress("held", 1), read_source=read_source
    )
    assert progress.redriven == 0
    [skipped] = progress.skipped
    assert skipped.startswith("id-1: RECORD LOST")
    assert "wal.held.log[2]@0" in skipped
    assert "key 'k1' settled" in skipped
    assert producer.to("wal.held.log") == []
    assert closing_markers(producer) == []  # left open: the operator sees it and discards it
    await harness.run_emitted()
    assert delivered(target) == ["id-2"]
    assert harness.deliverer.order.get("held", "k1") is None


def test_entry_headers_name_the_key_and_parse_back():
    headers = entry_headers(
        namespace="n",
        reason="r",
        error_class="e",
        source="wal.n.retry[3]@17",
        attempts=2,
        dead_at_ms=5,
        key="k é",
    )
    entry = parse_dlq_record(b"id-1", None, headers, partition=3, offset=9)
    assert isinstance(entry, DlqEntry)
    assert entry.key == "k é"
    assert entry.source_coordinates() == ("wal.n.retry", 3, 17)
    keyless = entry_headers(
        namespace="n", reason="r", error_class="e", source="s", attempts=0, dead_at_ms=5
    )
    entry = parse_dlq_record(b"id-2", b"x", keyless, partition=0, offset=0)
    assert isinstance(entry, DlqEntry)
    assert entry.key is None
    assert entry.source_coordinates() is None
    assert parse_source("a[b]c[1]@2") == ("a[b]c", 1, 2)
    assert parse_source("topic[x]@1") is None
