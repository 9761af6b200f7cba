"""The mutation agents never ack and drop a record they cannot handle now (engineer W2,
review 2 of issue 18):

* a record of a namespace that is unavailable (its latest control event unreadable) is parked:
  back through the delay tiers to its own topic and partition, due in ``PARK_MS``;

Over the first review's ``Rig`` (in-memory rows, a recording emitter, a recording kv target), with
a drain that, unlike ``Rig.drain``, keeps what is not due yet for a later drain (as the delay
tiers do)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.agents.test_mutations_review import DAY_MS, NS, TOPICS, Rig, definition
from walstream.agents.mutations import PARK_MS
from walstream.core.delay import parse_delay_headers
from walstream.core.placement import key_partition
from walstream.errors import EmitRefusedError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import encode_event
from walstream.records import Envelope

OTHER = "other"


async def drain(rig: Rig, horizon_ms: int) -> None:
    """Deliver every record scheduled back to the markers or mutations topic, due by now +
    horizon, one at a time in due order (the clock moves to each one's due time); what is due
    later stays for the next drain."""
    end = rig.clock.now_ms() + horizon_ms
    done: set[int] = rig.__dict__.setdefault("done", set())
    while True:
        pending = []
        for i, e in enumerate(rig.emitter.emitted):
            delay = parse_delay_headers(e.headers)
            topic = delay.dest_topic if delay is not None else e.topic
            if i in done or topic not in (TOPICS.markers, TOPICS.mutations):
                continue
            due = delay.due_ms if delay is not None else rig.clock.now_ms()
            if due <= end:
                pending.append((due, i, topic))
        if not pending:
            return
        due, i, topic = min(pending)
        done.add(i)
        e = rig.emitter.emitted[i]
        rig.clock.advance(max(0, due - rig.clock.now_ms()))
        assert e.key is not None
        handle = rig.stage.handle_marker if topic == TOPICS.markers else rig.stage.handle_op
        await handle(e.value, e.key, rig.source(topic, e.key))


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
    await drain(rig, 60_000)
    assert rig.kv.applied == [f"mut:{NS}:p1:00000000"]
    assert rig.txn_rows("p1") == []


async def test_a_wake_read_while_its_namespace_is_unavailable_still_drives_its_commit():
    rig = Rig()
    rig.kv = FailingKv(failures=1)  # type: ignore[assignment]
    rig.stage = rig.worker()
    await rig.op("p2", 0)
    await rig.handle_marker(rig.marker_record("p2", 1), "p2")  # apply fails: re-queued
    unreadable(rig)
    await drain(rig, 1_000)  # the retry wake comes, parked (again and again while unavailable)
    assert rig.kv.applied == []
    readable_again(rig)
    await drain(rig, 2 * DAY_MS)
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
