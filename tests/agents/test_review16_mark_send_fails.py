"""Review of issue 16 (R2): a delivered mark whose changelog send raises turns a delivered record
into a dead-lettered one.

``Deliverer._attempt`` writes the mark (``TableAttempts.delivered``) after the target's
acknowledgement, inside ``_deliver``'s catch-all. The mark is "not awaited on the broker", but its
``app.producer.send`` is awaited, and aiokafka's ``send`` raises when it cannot queue the record
(``KafkaTimeoutError`` once its buffer has been full for ``request_timeout_ms``, as in a broker
outage under load). The exception reaches ``_deliver``'s ``except Exception``: the record the
target has just applied is dead-lettered as an ``InternalError``, its mark forgotten, and its
key's turn passed as for a dead record: with ``on_dlq = "hold"`` the key is held behind a record
that was delivered, until an operator redrives (delivering it twice) or discards it. Before the
marks (8323f9a's ancestors) nothing ran after the acknowledgement. Expected: the outcome is
DELIVERED; a mark that cannot be written costs at most a duplicate later (as a mark lost in a
crash does), never a DLQ entry or a held key.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from walstream.agents.attempts import TableAttempts
from walstream.agents.ordering import KeyOrder
from walstream.agents.outcomes import Outcome, Source
from walstream.clock import FakeClock
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.records import encode_envelope
from walstream.targets.memory import MemoryTarget
from walstream.testing import (
    ChangelogProducer,
    FakeTable,
    RecordingEmitter,
    envelope,
    fake_deliverer,
)

pytestmark = pytest.mark.asyncio

NOW = 1_800_000_000_000


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
def registry():
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
    registry,
):
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
