"""A Kafka cluster the pool evicts (idle, least recently used) while deliveries use it: its
producer is closed only once no delivery holds it (``TargetPool.lease``), and a send that still
meets a closed producer (aiokafka ``ProducerClosed``) is transient (retried), never dead-lettered.

Real aiokafka producers against the embedded broker; the cluster that forces the eviction has a
producer that starts at once, so the eviction lands while the first cluster's sends are in
flight (among them the first send to a new topic, waiting for its metadata).
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import ProducerClosed

from walstream.clock import FakeClock, SystemClock
from walstream.errors import TargetError, TargetUnavailableError
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope, Lifecycle
from walstream.settings import Settings
from walstream.targets.kafka import classify_kafka_error
from walstream.targets.pool import TargetPool, target_producer


class InstantProducer:
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def _factory(cluster: str):
    return InstantProducer() if cluster.startswith("instant") else target_producer(cluster)


def _env(rid: str, spec: dict) -> Envelope:
    return Envelope(rid, "ns", None, {"id": rid}, "json", spec, Lifecycle(1, 1, 0), "t", 1)


def test_producer_closed_is_transient() -> None:
    err = classify_kafka_error("produce to t", ProducerClosed())
    assert isinstance(err, TargetUnavailableError)
    assert err.retriable
    assert err.error_class == "kafka_ProducerClosed"


async def test_an_eviction_waits_for_the_deliveries_leasing_the_cluster(broker, unique) -> None:
    settings = Settings(bootstrap_servers=broker, target_max_endpoints=1, target_idle_ttl_s=600)
    pool = TargetPool(settings, NamespaceRegistry(), SystemClock(), producer_factory=_factory)
    spec = {"type": "kafka", "topic": f"evict-busy-{unique}", "bootstrap_servers": broker}

    async def deliver(env: Envelope) -> str:
        async with pool.lease(env.target) as (target, _):
            await target.deliver(env)
        return "delivered"

    try:
        assert await deliver(_env("warm", spec)) == "delivered"  # topic metadata known
        envs = [_env(f"r-{i}", spec) for i in range(300)]
        envs.append(_env("new", {**spec, "topic": f"evict-new-{unique}"}))  # metadata wait
        tasks = [asyncio.ensure_future(deliver(e)) for e in envs]
        await asyncio.sleep(0)  # every delivery holds its lease, sends in flight
        (x,) = [e for _, e in pool._clusters.items()]
        assert x.users == len(envs)
        await pool.target({"type": "kafka", "topic": "y", "bootstrap_servers": "instant:1"})
        assert x.evicted
        assert not x.closing
        results = await asyncio.gather(*tasks, return_exceptions=True)
        outcomes: dict[str, int] = {}
        for r in results:
            name = r if isinstance(r, str) else f"{type(r).__name__}: {r}"
            outcomes[name] = outcomes.get(name, 0) + 1
        print("\noutcomes of leased sends under an eviction:", outcomes)  # noqa: T201 - the figure, for the report
        assert outcomes == {"delivered": len(envs)}
        assert x.users == 0
        assert x.closing
        await asyncio.gather(*pool._closing)
        assert x.producer._closed
    finally:
        await pool.close()


async def test_sends_cut_off_by_a_close_are_retried_not_dead_lettered(broker, unique) -> None:
    """Targets taken without a lease (replay's) whose producer the pool closes under their
    sends: the sends in flight are flushed or fail transient, and a send that meets the closed
    producer fails ``ProducerClosed``, transient (retried), never a reason to dead-letter.

    Whether the close lands while sends are still in flight depends on the machine's speed, so
    the send after the close is what makes the cut certain."""
    settings = Settings(bootstrap_servers=broker, target_max_endpoints=1, target_idle_ttl_s=600)
    pool = TargetPool(settings, NamespaceRegistry(), SystemClock(), producer_factory=_factory)
    spec = {"type": "kafka", "topic": f"evict-cut-{unique}", "bootstrap_servers": broker}
    outcomes: dict[str, int] = {}

    def count(r: object) -> None:
        name = "delivered" if r is None else f"{type(r).__name__}"
        if isinstance(r, TargetError):
            name += f" {r.error_class}"
        outcomes[name] = outcomes.get(name, 0) + 1

    try:
        target, _ = await pool.target(spec)
        await target.deliver(_env("warm", spec))
        tasks = [asyncio.ensure_future(target.deliver(_env(f"r-{i}", spec))) for i in range(300)]
        await asyncio.sleep(0)
        await pool.target({"type": "kafka", "topic": "y", "bootstrap_servers": "instant:1"})
        for r in await asyncio.gather(*tasks, return_exceptions=True):
            count(r)
        await asyncio.gather(*pool._closing)  # the evicted producer is closed now
        with pytest.raises(TargetError) as cut:
            await target.deliver(_env("after-close", spec))
        count(cut.value)
        assert cut.value.retriable, cut.value
    finally:
        await pool.close()
    print("\noutcomes of unleased sends under an eviction:", outcomes)  # noqa: T201 - the figure, for the report
    assert set(outcomes) <= {
        "delivered",
        "TargetUnavailableError kafka_ProducerClosed",
        "TargetUnavailableError kafka_TimeoutError",
    }, outcomes
    assert outcomes.get("TargetUnavailableError kafka_ProducerClosed", 0) >= 1, outcomes
    assert sum(outcomes.values()) == 301


class FakeProducer:
    def __init__(self) -> None:
        self.stopped = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True


async def test_a_leased_cluster_is_closed_when_its_last_lease_ends() -> None:
    made: dict[str, list[FakeProducer]] = {}

    def factory(cluster: str) -> FakeProducer:
        made.setdefault(cluster, []).append(FakeProducer())
        return made[cluster][-1]

    clock = FakeClock()
    settings = Settings(bootstrap_servers="home:9092", target_max_endpoints=1, target_idle_ttl_s=60)
    pool = TargetPool(settings, NamespaceRegistry(), clock, producer_factory=factory)
    a = {"type": "wal", "namespace": "n", "bootstrap_servers": "a:1"}
    b = {"type": "kafka", "topic": "t", "bootstrap_servers": "b:1"}
    try:
        async with pool.lease(a) as (ta, _), pool.lease(a) as (ta2, _):
            assert ta is ta2
            await pool.target(b)  # evicts a (least recently used), leased twice
            await asyncio.sleep(0)
            assert not made["a:1"][0].stopped
            async with pool.lease(a) as (ta3, _):  # a again: a new producer, not the draining one
                assert ta3 is not ta
            await asyncio.sleep(0)
            assert not made["a:1"][0].stopped
        await asyncio.gather(*pool._closing)
        assert made["a:1"][0].stopped
        assert not pool._draining
        # idle expiry too: a lease held past the TTL keeps its producer until it ends
        async with pool.lease(b) as _:
            clock.advance(120_000)
            pool._evict(clock.now_ms())  # the sweep (breaker() runs it once a second)
            await asyncio.sleep(0)
            assert "b:1" not in pool._clusters
            assert not made["b:1"][-1].stopped
        await asyncio.gather(*pool._closing)
        assert made["b:1"][-1].stopped
    finally:
        await pool.close()
