"""The replication stages on a real broker and real memcached servers (issue 17): the fan-out
copies a replicated namespace's log to each other region's topic, and each region's writer
applies its topic to its memcached with last-write-wins, in consumer groups of their own."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from walstream.core.cache_ops import cache_op
from walstream.core.dlq import DlqEntry, parse_dlq_record
from walstream.kafka.admin import ensure_topics
from walstream.metrics import WalMetrics
from walstream.namespaces.replication import parse_replication
from walstream.records import Envelope, encode_envelope
from walstream.replication import RegionCache
from walstream.replication.fanout import FanOut
from walstream.replication.writer import RegionWriter
from walstream.settings import Settings
from walstream.testing.replication import cache_envelope
from walstream.topology import default_topics, namespace_topic_specs, region_dlq_topic

from .helpers import read_topic

pytestmark = pytest.mark.integration

TOMB_TTL = 3_600


async def until(predicate: Callable[[], Any], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {within_s}s waiting for {what}")


def _cluster(servers: str | None) -> dict[str, str]:
    return {"bootstrap_servers": servers} if servers is not None else {}


class Rig:
    """A replicated namespace of three regions a, b, c, its log, fan-out and writers."""

    def __init__(
        self,
        broker: str,
        ns: str,
        servers: dict[str, str],
        replicate: str = "value",
        clusters: dict[str, str] | None = None,
    ) -> None:
        self.ns = ns
        self.broker = broker
        self.log = default_topics(ns).log
        self.settings = Settings(
            bootstrap_servers=broker,
            auth=False,
            replication_factor=1,
            min_insync_replicas=1,
            default_partitions=2,
        )
        self.replication = parse_replication(
            {
                "regions": {
                    r: {"memcached": [s], **_cluster((clusters or {}).get(r))}
                    for r, s in servers.items()
                },
                "max_lag_s": 600,
                "tombstone_ttl_s": TOMB_TTL,
                "replicate": replicate,
            }
        )
        assert self.replication is not None
        self.caches = {r: RegionCache([s], tombstone_ttl_s=TOMB_TTL) for r, s in servers.items()}
        self.writers: dict[str, RegionWriter] = {}
        self.registry = CollectorRegistry()
        self.metrics = WalMetrics.create(self.registry)
        self.fanout: FanOut | None = None
        self.producer: AIOKafkaProducer | None = None

    def writer(self, region: str) -> RegionWriter:
        region_cfg = self.replication.region(region)  # type: ignore[union-attr]
        assert region_cfg is not None
        return RegionWriter(
            self.settings,
            namespace=self.ns,
            region=region_cfg,
            replication=self.replication,  # type: ignore[arg-type]
            cache_timeout_s=0.5,
            metrics=self.metrics,
        )

    async def start(self, regions: tuple[str, ...] = ("b", "c")) -> None:
        await ensure_topics(
            self.broker,
            namespace_topic_specs(
                default_topics(self.ns), 2, replication_factor=1, min_insync_replicas=1
            ),
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=self.broker, acks="all")
        await self.producer.start()
        self.fanout = FanOut(
            self.settings,
            namespace=self.ns,
            log_topic=self.log,
            replication=self.replication,  # type: ignore[arg-type]
        )
        await self.fanout.start()
        for region in regions:
            self.writers[region] = self.writer(region)
            await self.writers[region].start()

    async def stop(self) -> None:
        for writer in self.writers.values():
            await writer.stop()
        if self.fanout is not None:
            await self.fanout.stop()
        if self.producer is not None:
            await self.producer.stop()
        for cache in self.caches.values():
            await cache.close()

    async def write(self, envs: list[Envelope], *, local: bool = True) -> None:
        """As the replicating client does: apply in region a, publish to the log."""
        if local:
            await self.caches["a"].apply_many([cache_op(env) for env in envs])
        assert self.producer is not None
        sends = [
            await self.producer.send(
                self.log, encode_envelope(env), key=str(env.target["key"]).encode()
            )
            for env in envs
        ]
        await asyncio.gather(*sends)

    async def read(self, region: str, keys: list[bytes]) -> list[bytes | None]:
        return [await self.caches[region].get(key) for key in keys]


@pytest.fixture
async def rig(broker, memcached_servers, unique) -> AsyncIterator[Rig]:
    rig = Rig(
        broker, f"c{unique}", {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    )
    try:
        yield rig
    finally:
        await rig.stop()


def mixed_ops(prefix: str, n: int, keys: int, seed: int = 7) -> list[Envelope]:
    rng = random.Random(seed)
    base = int(time.time() * 1000)
    envs = []
    for i in range(n):
        key = f"{prefix}:{rng.randrange(keys)}"
        kind = rng.choices(["set", "delete", "touch"], [6, 2, 1])[0]
        value = rng.randbytes(rng.randrange(0, 300)) if kind == "set" else None
        ttl = 3_600 if kind != "delete" else None
        envs.append(
            cache_envelope(
                kind, key, value, ns="x", ttl=ttl, owt_ms=base + i, token=f"{prefix}-{i}"
            )
        )
    return envs


async def test_regions_b_and_c_end_byte_identical_to_a(rig: Rig, unique: str) -> None:
    await rig.start()
    envs = [env._replace(namespace=rig.ns) for env in mixed_ops(unique, 2_000, 300)]
    await rig.write(envs)
    keys = sorted({str(env.target["key"]).encode() for env in envs})
    expected = await rig.read("a", keys)
    assert any(v is not None for v in expected)
    assert any(v is None for v in expected)

    async def converged() -> bool:
        return all([await rig.read(r, keys) == expected for r in ("b", "c")])

    await until(converged, 90, "regions b and c to hold what a holds")
    for region in ("b", "c"):
        outcomes = rig.writers[region].outcomes
        assert outcomes["dlq"] == 0
        assert sum(outcomes.values()) >= len(envs)
        labels = {"namespace": rig.ns, "region": region}
        applied = rig.registry.get_sample_value(
            "walstream_replication_operations_total", {**labels, "outcome": "applied"}
        )
        assert applied == outcomes["applied"] > 0
        lags = rig.registry.get_sample_value("walstream_replication_lag_seconds_count", labels)
        assert lags == outcomes["applied"]
    assert rig.fanout is not None
    assert rig.fanout.copies >= 2 * len(envs)


async def test_a_region_whose_memcached_stops_catches_up_and_the_other_keeps_flowing(
    broker, memcached_servers, own_memcached, unique
) -> None:
    stopped = own_memcached()
    rig = Rig(
        broker,
        f"o{unique}",
        {
            "a": memcached_servers[0].address,
            "b": memcached_servers[1].address,
            "c": stopped.address,
        },
    )
    try:
        await rig.start()
        now = int(time.time() * 1000)
        first = [
            cache_envelope(
                "set", f"{unique}:{i}", b"v1-%d" % i, ns=rig.ns, ttl=0, owt_ms=now, token=f"1-{i}"
            )
            for i in range(50)
        ]
        await rig.write(first)
        keys = [f"{unique}:{i}".encode() for i in range(50)]
        await until(
            lambda: _holds(rig, "c", keys, [b"v1-%d" % i for i in range(50)]), 60, "c to apply"
        )
        stopped.stop()
        later = now + 1_000
        second = [
            cache_envelope(
                "set", f"{unique}:{i}", b"v2-%d" % i, ns=rig.ns, ttl=0, owt_ms=later, token=f"2-{i}"
            )
            for i in range(50)
        ]
        await rig.write(second)
        want = [b"v2-%d" % i for i in range(50)]
        # region b flows while c is down
        await until(lambda: _holds(rig, "b", keys, want), 60, "b to apply while c is down")
        await until(lambda: _retried(rig, "c"), 60, "c's writer to retry")
        c_labels = {"namespace": rig.ns, "region": "c"}
        backlog = "walstream_replication_backlog_records"
        assert (rig.registry.get_sample_value(backlog, c_labels) or 0) > 0
        stopped.start()
        await until(lambda: _holds(rig, "c", keys, want), 90, "c to catch up after its restart")
        assert rig.writers["c"].outcomes["dlq"] == 0
        assert rig.writers["c"].retries > 0

        async def drained() -> bool:
            return rig.registry.get_sample_value(backlog, c_labels) == 0

        await until(drained, 30, "c's backlog to drain")
        retried = rig.registry.get_sample_value(
            "walstream_replication_retries_total", {"namespace": rig.ns, "region": "c"}
        )
        assert retried == rig.writers["c"].retries
        assert rig.writers["b"].retries == 0
    finally:
        await rig.stop()


async def _holds(rig: Rig, region: str, keys: list[bytes], want: list[bytes]) -> bool:
    try:
        return await rig.read(region, keys) == want
    except Exception:  # noqa: BLE001 - the region's memcached may be down
        return False


async def _retried(rig: Rig, region: str) -> bool:
    return rig.writers[region].retries > 0


async def test_a_poison_operation_goes_to_the_region_dlq_and_the_stream_continues(
    rig: Rig, unique: str
) -> None:
    await rig.start(("b",))
    bad = cache_envelope("set", f"{unique} space", b"x", ns=rig.ns, token="bad")
    good = cache_envelope("set", f"{unique}:after", b"fine", ns=rig.ns, token="good")
    await rig.write([bad, good], local=False)
    await until(
        lambda: _holds(rig, "b", [f"{unique}:after".encode()], [b"fine"]),
        60,
        "the op after the poison one",
    )
    records = await read_topic(rig.broker, region_dlq_topic(rig.ns, "b"), expect=1)
    entries = [
        parse_dlq_record(r.key, r.value, r.headers, partition=r.partition, offset=r.offset)
        for r in records
    ]
    assert len(entries) == 1
    entry = entries[0]
    assert isinstance(entry, DlqEntry)
    assert (entry.id, entry.reason, entry.error_class) == (
        "id-bad",
        "key_bad_char",
        "PoisonOperation",
    )
    assert entry.value == encode_envelope(bad)
    assert rig.writers["b"].outcomes["dlq"] == 1


async def test_invalidate_mode_deletes_in_the_other_regions_what_a_set_in_the_origin(
    broker, memcached_servers, unique
) -> None:
    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    rig = Rig(broker, f"i{unique}", servers, replicate="invalidate")
    try:
        key = f"{unique}:inv"
        now = int(time.time() * 1000)
        old = cache_envelope("set", key, b"old", ns=rig.ns, ttl=0, owt_ms=now, token="old")
        await rig.caches["b"].apply(cache_op(old))  # b caches an older value
        await rig.start(("b",))
        new = cache_envelope("set", key, b"new", ns=rig.ns, ttl=0, owt_ms=now + 1, token="new")
        await rig.write([new])
        assert await rig.caches["a"].get(key.encode()) == b"new"

        async def gone() -> bool:
            return await rig.caches["b"].get(key.encode()) is None

        await until(gone, 60, "b to drop its older value")
        assert rig.writers["b"].outcomes["applied"] == 1
    finally:
        await rig.stop()


async def test_a_region_on_its_own_cluster_gets_its_topic_and_dlq_there(
    broker, own_broker, memcached_servers, unique
) -> None:
    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    remote = own_broker.bootstrap_servers
    rig = Rig(broker, f"r{unique}", servers, clusters={"c": remote})
    try:
        await rig.start(("c",))
        key = f"{unique}:remote"
        now = int(time.time() * 1000)
        good = cache_envelope("set", key, b"far", ns=rig.ns, ttl=0, owt_ms=now, token="far")
        bad = cache_envelope("set", f"{unique} x", b"x", ns=rig.ns, token="bad")
        await rig.write([good])
        await rig.write([bad], local=False)
        await until(lambda: _holds(rig, "c", [key.encode()], [b"far"]), 60, "c to apply")
        copies = await read_topic(remote, f"wal.{rig.ns}.region.c", expect=2)
        assert sorted(r.key for r in copies) == sorted([key.encode(), f"{unique} x".encode()])
        dead = await read_topic(remote, region_dlq_topic(rig.ns, "c"), expect=1)
        assert [r.key for r in dead] == [b"id-bad"]
        async with AIOKafkaProducer(bootstrap_servers=broker) as local:
            topics = await local.client.fetch_all_metadata()
        assert f"wal.{rig.ns}.region.c" not in topics.topics()
    finally:
        await rig.stop()
