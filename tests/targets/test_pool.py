"""The target pool: what records make a worker keep per endpoint is bounded (idle TTL, maximum
count), producers start per cluster without a pool-wide lock, and a target outside the
namespace's allowed_targets is refused before anything is connected to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from walstream.clock import FakeClock
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope, Lifecycle
from walstream.settings import Settings
from walstream.targets.kafka import KafkaTarget
from walstream.targets.pool import TargetPool
from walstream.testing import RawServer, Rfc7230Upstream


class FakeProducer:
    def __init__(self, cluster: str, gate: asyncio.Event | None = None) -> None:
        self.cluster = cluster
        self.gate = gate
        self.started = False
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.started = True

    async def stop(self) -> None:
        self.stopped.set()


class Factory:
    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.gate = gate
        self.made: list[FakeProducer] = []

    def __call__(self, cluster: str) -> FakeProducer:
        producer = FakeProducer(cluster, self.gate)
        self.made.append(producer)
        return producer


def make_pool(factory=None, clock=None, **settings) -> TargetPool:
    values = {"target_idle_ttl_s": 60.0, "target_max_endpoints": 100, **settings}
    return TargetPool(
        Settings(bootstrap_servers="home:9092", **values),
        NamespaceRegistry(),
        clock or FakeClock(),
        producer_factory=factory or Factory(),
    )


@pytest.fixture
async def pool() -> AsyncIterator[TargetPool]:
    made = make_pool()
    yield made
    await made.close()


def kafka(cluster: str) -> dict[str, str]:
    return {"type": "kafka", "topic": "t", "bootstrap_servers": cluster}


async def test_a_cluster_idle_past_the_ttl_is_closed_and_forgotten():
    clock, factory = FakeClock(), Factory()
    pool = make_pool(factory, clock, target_idle_ttl_s=60.0)
    try:
        first, endpoint = await pool.target(kafka("a:1"))
        assert isinstance(first, KafkaTarget)
        assert endpoint == "kafka:a:1"
        pool.breaker(endpoint)
        clock.advance(30_000)
        assert (await pool.target(kafka("A:1 ")))[0] is first  # same cluster, used again
        clock.advance(60_001)
        await pool.target(kafka("b:1"))  # any use sweeps what is idle
        pool.breaker("kafka:b:1")
        await asyncio.wait_for(factory.made[0].stopped.wait(), 5)
        assert [p.cluster for p in factory.made] == ["a:1", "b:1"]
        assert not factory.made[1].stopped.is_set()
        assert set(pool.breakers()) == {"kafka:b:1"}
        again, _ = await pool.target(kafka("a:1"))
        assert again is not first  # made anew
        assert len(factory.made) == 3
    finally:
        await pool.close()
    assert all(p.stopped.is_set() for p in factory.made)


async def test_beyond_the_maximum_the_least_recently_used_cluster_goes():
    clock, factory = FakeClock(), Factory()
    pool = make_pool(factory, clock, target_max_endpoints=2)
    try:
        for cluster in ("a:1", "b:1"):
            await pool.target(kafka(cluster))
            clock.advance(1)
        await pool.target(kafka("a:1"))  # a is now more recent than b
        clock.advance(1)
        await pool.target(kafka("c:1"))
        made = {p.cluster: p for p in factory.made}
        await asyncio.wait_for(made["b:1"].stopped.wait(), 5)
        assert not made["a:1"].stopped.is_set()
        assert not made["c:1"].stopped.is_set()
        for i in range(5):
            pool.breaker(f"http:http://h{i}:80")
            clock.advance(1)
        assert list(pool.breakers()) == ["http:http://h3:80", "http:http://h4:80"]
    finally:
        await pool.close()


async def test_concurrent_callers_of_one_cluster_share_one_start():
    gate = asyncio.Event()
    factory = Factory(gate)
    pool = make_pool(factory)
    try:
        waiting = [asyncio.create_task(pool.target(kafka("a:1"))) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert len(factory.made) == 1
        gate.set()
        targets = {id(t) for t, _ in await asyncio.gather(*waiting)}
        assert len(targets) == 1
    finally:
        await pool.close()


async def test_a_producer_that_cannot_start_is_a_transient_failure():
    class Refusing(FakeProducer):
        async def start(self) -> None:
            raise ConnectionError("nobody there")

    made: list[Refusing] = []

    def factory(cluster):
        made.append(Refusing(cluster))
        return made[-1]

    pool = make_pool(factory)
    try:
        with pytest.raises(TargetUnavailableError) as down:
            await pool.target(kafka("a:1"))
        assert "a:1" in str(down.value)
        await asyncio.wait_for(made[0].stopped.wait(), 5)
        with pytest.raises(TargetUnavailableError):
            await pool.target(kafka("a:1"))  # tried again, not cached
        assert len(made) == 2
    finally:
        await pool.close()


async def test_a_blackholed_cluster_does_not_delay_an_http_target():
    """A Kafka cluster that accepts TCP and never answers holds up only its own records: an
    http target first needed meanwhile is made and delivers at once."""

    async def blackhole(reader, writer):
        await reader.read()  # accept, never answer

    upstream = Rfc7230Upstream()
    # the real AIOKafkaProducer against the blackhole
    pool = TargetPool(Settings(bootstrap_servers="home:9092"), NamespaceRegistry(), FakeClock())
    async with RawServer(blackhole) as dead_port, RawServer(upstream.handler) as port:
        stuck = asyncio.create_task(pool.target(kafka(f"127.0.0.1:{dead_port}")))
        await asyncio.sleep(0.3)  # the producer is starting against the blackhole
        assert not stuck.done()
        started = time.monotonic()
        spec = {"type": "http", "url": f"http://127.0.0.1:{port}/in"}
        target, _ = await asyncio.wait_for(pool.target(spec), 2)
        envelope = Envelope("r-1", "ns", None, {"n": 1}, "json", spec, Lifecycle(1, 1, 0), "t", 1)
        await asyncio.wait_for(target.deliver(envelope), 2)
        took = time.monotonic() - started
        assert upstream.requests == [(b"POST /in HTTP/1.1", b'{"n":1}')]
        assert took < 1.0, f"the http target waited {took:.2f}s behind the blackholed cluster"
        assert not stuck.done()
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)
        await pool.close()


async def test_a_target_outside_allowed_targets_is_refused_before_any_connection(pool):
    ns = parse_namespace(
        {
            "name": "hooks",
            "target": {"type": "http", "url": "http://127.0.0.1:8/in"},
            "allowed_targets": {"kafka": ["ok:1"], "kafka_topics": ["t"]},
        }
    )
    refused = [
        {"type": "http", "url": "http://127.0.0.1:9/in"},
        kafka("evil:1"),
        {"type": "wal", "namespace": "x", "bootstrap_servers": "evil:1"},
        {"type": "kafka", "topic": "walstream.namespaces"},  # the control topic
        {"type": "kafka", "topic": "unlisted"},
        {"type": "kv", "table": "x; DROP TABLE app_users; --", "key": "k"},
    ]
    for spec in refused:
        with pytest.raises(TargetRejectedError) as info:
            await pool.target(spec, ns)
        assert info.value.error_class == "target_not_allowed"
        assert "allowed_targets" in str(info.value)
    assert pool._producer_factory.made == []
    assert pool._http is None
    await pool.target({"type": "http", "url": "http://127.0.0.1:8/other"}, ns)
    await pool.target(kafka("ok:1"), ns)
    await pool.target({"type": "kafka", "topic": "t"}, ns)  # the home cluster
    assert [p.cluster for p in pool._producer_factory.made] == ["ok:1", "home:9092"]
