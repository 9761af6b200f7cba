"""The replication stages on a real broker and real memcached servers (issue 17): the fan-out
copies a replicated namespace's log to each other region's topic, and each region's writer
applies its topic to its memcached with last-write-wins, in consumer groups of their own."""

from __future__ import annotations

import random
import time

import pytest
from aiokafka import AIOKafkaProducer

from walstream.core.cache_ops import cache_op
from walstream.core.dlq import DlqEntry
from walstream.records import Envelope, encode_envelope
from walstream.testing.replication import cache_envelope
from walstream.topology import region_dlq_topic

from .helpers import read_topic
from .replication_rig import Rig, region_dlq_entries, until

pytestmark = pytest.mark.integration


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
    assert sum(fanout.copies for fanout in rig.fanouts.values()) >= 2 * len(envs)


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
    entries = await region_dlq_entries(rig.broker, rig.ns, "b", expect=1)
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
