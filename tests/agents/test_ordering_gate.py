"""The ordering gate reads a key's state once per record: admitted, held before its retry copy
goes, and handed on after delivery, a record costs one read of its key's head (the handler of a
release marker reads it again once, after the marker is out). Order and outcomes as before."""

from __future__ import annotations

from walstream.agents.ordering import KeyOrder
from walstream.agents.outcomes import Outcome
from walstream.core.ordering import KeyHead
from walstream.errors import TargetUnavailableError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.testing import DeliveryHarness, ScriptedTarget, envelope, namespace_definition

NOW = 1_800_000_000_000
DOWN = TargetUnavailableError("down", error_class="http_503")


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
