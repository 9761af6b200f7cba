"""The ordering gate reads a key's state once per record: admitted, held before its retry copy
goes, and handed on after delivery, a record costs one read of its key's head (the handler of a
release marker reads it again once, after the marker is out). Order and outcomes as before.

Reusing the head read when a record's turn opened is safe only while the key's lock covers every
change to that head (review of issue 16, R2): the lock is keyed as the table keys the head
((namespace, ordering key as text)), so record key bytes naming the same ordering key share one
lock; the catch-all settles a dead-lettered record under its key's lock, taken again (the
handler's was released when it raised); a record not handled under its ordering key's lock (its
record key differs from its envelope's) reads the head again before handing the key on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from walstream.agents.attempts import MemoryAttempts
from walstream.agents.ordering import KeyOrder
from walstream.agents.ordering_gate import Turn
from walstream.agents.outcomes import Outcome, Source
from walstream.clock import FakeClock
from walstream.core.ordering import KeyHead
from walstream.errors import TargetUnavailableError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.records import encode_envelope
from walstream.testing import (
    DeliveryHarness,
    RecordingEmitter,
    ScriptedTarget,
    envelope,
    fake_deliverer,
    namespace_definition,
)

NOW = 1_800_000_000_000
DOWN = TargetUnavailableError("down", error_class="http_503")
LOG = "wal.seq.log"


class CountingOrder(KeyOrder):
    """The ordering table, counting the reads of a key's head (``load``)."""

    def __init__(self) -> None:
        super().__init__({})
        self.loads = 0

    async def load(self, namespace: str, key: str) -> KeyHead | None:
        self.loads += 1
        return await super().load(namespace, key)

    def reads(self) -> int:
        reads, self.loads = self.loads, 0
        return reads


def harness(order: KeyOrder, target: ScriptedTarget, drain_max: int = 0) -> DeliveryHarness:
    registry = NamespaceRegistry()
    definition = namespace_definition("seq", base_ms=1_000, ordering="key")
    registry.apply(*encode_event(parse_namespace(definition), 1))
    return DeliveryHarness.build(registry, target, order, drain_max=drain_max, now_ms=NOW)


async def test_a_record_failing_once_then_delivered_reads_its_keys_head_once_each_time():
    order, target = CountingOrder(), ScriptedTarget()
    h = harness(order, target)
    target.fail("id-1", DOWN)
    assert await h.write(envelope(1, key="k1", ns="seq", now_ms=NOW)) is Outcome.RETRY
    assert order.reads() == 1  # admitted (key free), then held before its retry copy went
    assert order.get("seq", "k1") is not None  # blocked on it
    order.reads()
    await h.run_emitted()  # the retry comes back and is delivered: the key is free again
    assert h.outcomes[-1] is Outcome.DELIVERED
    assert order.reads() == 1  # admitted (it heads the key), then handed on
    assert order.get("seq", "k1") is None


async def test_a_record_delivered_at_once_reads_its_keys_head_once():
    order, target = CountingOrder(), ScriptedTarget()
    h = harness(order, target)
    assert await h.write(envelope(1, key="k1", ns="seq", now_ms=NOW)) is Outcome.DELIVERED
    assert order.reads() == 1


async def test_a_parked_record_released_inline_reads_its_keys_head_once():
    order, target = CountingOrder(), ScriptedTarget()
    h = harness(order, target, drain_max=10)
    target.fail("id-1", DOWN)
    assert await h.write(envelope(1, key="k1", ns="seq", now_ms=NOW)) is Outcome.RETRY
    for n in (2, 3, 4):
        assert await h.write(envelope(n, key="k1", ns="seq", now_ms=NOW)) is Outcome.WAITING
    assert order.reads() == 4  # one per record: 1 admitted and held, 2-4 parked
    await h.run_emitted()
    assert [e.id for e in target.delivered] == ["id-1", "id-2", "id-3", "id-4"]
    # the retry of 1 (1 read, its hand-on writes the marker and checks the head again: 2),
    # the marker (1), and 2, 3, 4 handed on inline by its handler (1 each)
    assert order.reads() == 2 + 1 + 3
    assert order.get("seq", "k1") is None


# -- the key's lock ---------------------------------------------------------------------------


@pytest.fixture
def registry() -> NamespaceRegistry:
    registry = NamespaceRegistry()
    definition = namespace_definition("seq", base_ms=1_000, ordering="key", on_dlq="hold")
    registry.apply(*encode_event(parse_namespace(definition), 1))
    return registry


async def _acquired(lock_task: asyncio.Task[Any], rounds: int = 20) -> bool:
    for _ in range(rounds):  # everything here is in memory: a free lock is taken at once
        await asyncio.sleep(0)
    return lock_task.done()


async def test_record_keys_naming_the_same_ordering_key_share_its_lock(registry):
    deliverer = fake_deliverer(
        registry, None, RecordingEmitter(), FakeClock(NOW), order=KeyOrder({})
    )
    gate = deliverer.gate
    source = Source(LOG, 0, 0)
    # not UTF-8, and the UTF-8 of U+FFFD: both name the ordering key "k\ufffd" in the table
    async with gate.locked(b"k\xff", source):

        async def other() -> None:
            async with gate.locked("k\ufffd".encode(), source):
                pass

        task = asyncio.create_task(other())
        assert not await _acquired(task)  # waits for the key's lock
    assert await _acquired(task)


class _BuggyAttempts(MemoryAttempts):
    """Attempt counts whose first ``was_delivered`` raises (a bug: the deliverer's catch-all)."""

    bug = True

    def was_delivered(self, record_id: str) -> bool:
        if self.bug:
            self.bug = False
            raise RuntimeError("a bug")
        return super().was_delivered(record_id)


class _DlqHolder(RecordingEmitter):
    """On the DLQ entry's write, another handler takes the key's lock and holds it."""

    def __init__(self) -> None:
        super().__init__()
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.locked: object = None

    async def emit(self, topic: str, value: bytes | None, **kw: Any) -> None:
        await super().emit(topic, value, **kw)
        if topic == "wal.seq.dlq" and not self.held.is_set():

            async def hold() -> None:
                async with self.locked(b"k1", Source(LOG, 0, 0)):  # type: ignore[operator]
                    self.held.set()
                    await self.release.wait()

            self.holder = asyncio.create_task(hold())
            await self.held.wait()


async def test_the_catch_all_settles_a_dead_record_under_its_keys_lock(registry):
    emitter = _DlqHolder()
    order = KeyOrder({})
    deliverer = fake_deliverer(
        registry, None, emitter, FakeClock(NOW), _BuggyAttempts(), order=order
    )
    emitter.locked = deliverer.gate.locked
    value = encode_envelope(envelope(1, ns="seq", now_ms=NOW))
    handled = asyncio.create_task(deliverer.handle(value, b"k1", Source(LOG, 0, 0)))
    await emitter.held.wait()  # dead-lettered; another handler of k1 holds its lock now
    assert not await _acquired(handled)  # the settling waits for it ...
    assert order.get("seq", "k1") is None  # ... and has not touched the key
    emitter.release.set()
    assert await handled is Outcome.DEAD
    await emitter.holder
    head = await order.load("seq", "k1")
    assert head is not None
    assert head.head == "id-1"
    assert head.held  # on_dlq = hold


async def test_a_record_whose_key_bytes_differ_reads_its_keys_head_again_to_hand_on(registry):
    target = ScriptedTarget()
    order = KeyOrder({})
    h = DeliveryHarness.build(registry, target, order, now_ms=NOW)
    ns = registry.get("seq")
    target.fail("id-1", DOWN)
    first = envelope(1, key="k1", ns="seq", now_ms=NOW)
    assert await h.write(first) is Outcome.RETRY  # id-1 heads k1
    assert await h.write(envelope(2, key="k1", ns="seq", now_ms=NOW)) is Outcome.WAITING
    # a copy of id-1 written under other record key bytes opens its turn (other lock) ...
    stale = Turn(ns, "k1", await order.load("seq", "k1"))
    # ... while id-1's own copy is delivered and hands k1 on to id-2
    fresh = Turn(ns, "k1", await order.load("seq", "k1"))
    await h.deliverer.gate.after(fresh, "id-1", Outcome.DELIVERED, b"k1", h.partition)
    markers = len(h.emitter.emitted)
    head = await order.load("seq", "k1")
    assert head is not None
    assert head.head == "id-2"
    # the copy is delivered too: handing on from the head it read would free k1 behind id-2
    await h.deliverer.gate.after(stale, "id-1", Outcome.DELIVERED, b"other", h.partition)
    head = await order.load("seq", "k1")
    assert head is not None
    assert head.head == "id-2"  # id-2 still heads k1
    assert len(h.emitter.emitted) == markers  # and no second release


@pytest.mark.parametrize("record_key", [b"other", None], ids=["other-key-bytes", "no-key"])
async def test_a_record_whose_record_key_differs_from_its_envelopes_takes_its_envelope_keys_lock(
    registry, record_key
):
    """A record produced to a log directly (not through the API) whose Kafka record key differs
    from its envelope's ordering key is handled under its envelope key's lock, as the gate
    orders it: it waits while another record of that key is handled."""
    deliverer = fake_deliverer(
        registry, None, RecordingEmitter(), FakeClock(NOW), order=KeyOrder({})
    )
    value = encode_envelope(envelope(1, key="k1", ns="seq", now_ms=NOW))
    async with deliverer.gate.locked(b"k1", Source(LOG, 0, 0)):  # a record of k1 is handled
        handled = asyncio.create_task(deliverer.handle(value, record_key, Source(LOG, 0, 1)))
        assert not await _acquired(handled)  # it waits for k1's lock
    assert await handled is Outcome.DELIVERED


# A record whose Kafka record key differs from its envelope's
# ordering key (produced to a log directly; or with no record key) is handled under its envelope
# key's lock and ordered by that key, but the release marker it writes when it hands its key on
# was keyed by its record key: read back, the marker opened the turn of the record key (no head:
# stale) or, keyless, was dropped, and the next parked record of the ordering key was never
# delivered (its key blocked for good). The settle marker ``walstream dlq discard`` writes is keyed
# by the ordering key already; the release marker is keyed the same way.
@pytest.mark.parametrize("record_key", [b"other", None], ids=["other-key-bytes", "no-key"])
async def test_a_record_with_another_record_key_hands_its_ordering_key_to_the_next_record(
    record_key: bytes | None,
) -> None:
    registry = NamespaceRegistry()
    definition = namespace_definition("seq", base_ms=1_000, ordering="key")
    registry.apply(*encode_event(parse_namespace(definition), 1))
    target, order = ScriptedTarget(), KeyOrder({})
    h = DeliveryHarness.build(registry, target, order, now_ms=NOW)
    target.fail("id-1", DOWN)
    # id-1 of ordering key k1, produced to the log directly under another record key
    value = encode_envelope(envelope(1, key="k1", ns="seq", now_ms=NOW))
    offset = h.log.append(LOG, h.partition, record_key, value)
    assert await h.deliverer.handle(value, record_key, Source(LOG, h.partition, offset)) is (
        Outcome.RETRY
    )
    # id-2 of k1, written through the API (record key k1), waits behind it
    assert await h.write(envelope(2, key="k1", ns="seq", now_ms=NOW)) is Outcome.WAITING
    await h.run_emitted()  # id-1's retry is delivered and hands k1 on to id-2
    assert [e.id for e in target.delivered] == ["id-1", "id-2"]
    assert await order.load("seq", "k1") is None  # k1 is free again
