"""Post-delivery stages: a new stage is registered with the deliverer, not written into it. It
sees every record of a known namespace once handled (its stage and outcome, after its key's turn
passed on); one that fails changes nothing for the record or the stages after it."""

from __future__ import annotations

from collections import Counter

from walstream.agents.ordering import KeyOrder
from walstream.agents.outcomes import Handled, Outcome, Source, Stage
from walstream.errors import TargetUnavailableError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.records import encode_envelope
from walstream.testing import DeliveryHarness, ScriptedTarget, envelope, namespace_definition

NOW = 1_800_000_000_000
DOWN = TargetUnavailableError("down", error_class="http_503")


class DeliveredPerNamespace:
    """A small stage: counts the records each namespace delivered (what a replication or a
    fan-out stage would hook on), and says which stage each outcome came from."""

    def __init__(self) -> None:
        self.delivered: Counter[str] = Counter()
        self.seen: list[tuple[str, Stage, Outcome]] = []

    async def after(self, handled: Handled) -> None:
        self.seen.append((handled.env.id, handled.stage, handled.outcome))
        if handled.outcome is Outcome.DELIVERED:
            self.delivered[handled.namespace.name] += 1


class Broken:
    async def after(self, handled: Handled) -> None:
        raise RuntimeError("a bug in a stage")


def harness(target: ScriptedTarget, order: KeyOrder) -> DeliveryHarness:
    registry = NamespaceRegistry()
    for version, obj in enumerate(
        [
            namespace_definition("seq", base_ms=1_000, ordering="key"),
            namespace_definition("loose", base_ms=1_000),
        ]
    ):
        registry.apply(*encode_event(parse_namespace(obj), version))
    return DeliveryHarness.build(registry, target, order)


async def test_a_registered_stage_sees_a_record_fail_once_then_deliver():
    target, order = ScriptedTarget(), KeyOrder({})
    h = harness(target, order)
    stage = DeliveredPerNamespace()
    h.deliverer.register(stage)
    target.fail("id-1", DOWN)
    assert await h.write(envelope(1, ns="seq", now_ms=NOW)) is Outcome.RETRY
    assert await h.write(envelope(2, ns="seq", now_ms=NOW)) is Outcome.WAITING
    await h.run_emitted()
    assert [e.id for e in target.delivered] == ["id-1", "id-2"]
    assert stage.seen == [
        ("id-1", Stage.LOG, Outcome.RETRY),
        ("id-2", Stage.LOG, Outcome.WAITING),
        ("id-1", Stage.RETRY, Outcome.DELIVERED),
        ("id-2", Stage.LOG, Outcome.DELIVERED),  # released by its marker, read from the log
    ]
    assert stage.delivered == {"seq": 2}
    assert order.get("seq", "k1") is None  # the key's turn passed before the stage ran


async def test_a_failing_stage_changes_nothing_for_the_record_or_the_next_stage():
    target, order = ScriptedTarget(), KeyOrder({})
    h = harness(target, order)
    counted = DeliveredPerNamespace()
    h.deliverer.register(Broken())
    h.deliverer.register(counted)
    assert await h.write(envelope(1, ns="loose", now_ms=NOW), "loose") is Outcome.DELIVERED
    assert h.emitter.emitted == []  # not dead-lettered, nothing sent
    assert counted.delivered == {"loose": 1}


async def test_records_that_are_not_a_namespaces_record_reach_no_stage():
    target, order = ScriptedTarget(), KeyOrder({})
    h = harness(target, order)
    stage = DeliveredPerNamespace()
    h.deliverer.register(stage)
    poison = Source("wal.loose.log", 2, 7)
    assert await h.deliverer.handle(b"not a record", b"k1", poison) is Outcome.DEAD
    unknown = envelope(3, ns="gone", now_ms=NOW)
    parked = Source("wal.gone.log", 2, 8)
    assert await h.deliverer.handle(encode_envelope(unknown), b"k1", parked) is Outcome.PARKED
    assert stage.seen == []
