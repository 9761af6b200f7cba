"""A replicated namespace's region DLQ over HTTP (issue 17 item 6: what ``walstream dlq ...
--region r`` does, the API does with ``?region=r``), against the real broker and memcached: region
c's writer dead-letters poison operations; the API lists, shows, redrives and discards them.
A redriven operation goes back to the region's topic (the CLI's path: the namespace's region
view, walstream.dlq.regions) and region c's writer applies it once its cause is fixed (a value
that now fits the server's item size), or dead-letters it again with its reason. A region's
redrive is its own (status, cancel, claim), apart from the namespace's."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from walstream.api.app import build_api
from walstream.core.outbox import region_dlq_entry
from walstream.dlq import read_dlq
from walstream.namespaces.config import NamespaceConfig, parse_namespace
from walstream.records import encode_envelope
from walstream.replication import RegionCache
from walstream.replication.writer import RegionWriter
from walstream.testing.records import namespace_definition
from walstream.testing.replication import cache_envelope
from walstream.topology import region_dlq_topic, region_topic

from .conftest import apply_namespace, eventually
from .helpers import topic_end_offsets

pytestmark = pytest.mark.integration

TOMB_TTL = 3_600
#: over region c's first memcached's item size (-I 512k), within the default 1 MiB
BIG = 600_000


async def open_ids(broker: str, topic: str) -> dict[str, int]:
    """The open entries of a DLQ topic: id -> offset."""
    view = await read_dlq(broker, topic)
    return {record_id: entry.offset for record_id, entry in view.open.items()}


@contextlib.asynccontextmanager
async def replicated(
    settings: Any, ns: str, servers: dict[str, str], cluster: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Namespace ``ns`` replicating to regions a, b, c (memcached ``servers``; region c on
    Kafka ``cluster`` when given), registered, region c's writer running; a producer on region
    c's cluster."""
    regions: dict[str, dict[str, Any]] = {r: {"memcached": [s]} for r, s in servers.items()}
    if cluster is not None:
        regions["c"]["bootstrap_servers"] = cluster
    definition = namespace_definition(
        ns, replication={"regions": regions, "max_lag_s": 600, "tombstone_ttl_s": TOMB_TTL}
    )
    await apply_namespace(settings, definition)
    config = parse_namespace(definition)
    assert config.replication is not None
    region = config.replication.region("c")
    assert region is not None
    writer = RegionWriter(
        settings, namespace=ns, region=region, replication=config.replication, cache_timeout_s=0.5
    )
    cache = RegionCache([servers["c"]], tombstone_ttl_s=TOMB_TTL)
    producer = AIOKafkaProducer(bootstrap_servers=cluster or settings.bootstrap_list, acks="all")
    await writer.start()  # creates the region's topic and DLQ
    await producer.start()
    try:
        yield {"ns": ns, "config": config, "cache": cache, "producer": producer}
    finally:
        await producer.stop()
        await writer.stop()
        await cache.close()


@pytest.fixture
async def region_c(
    wal_settings, memcached_servers, own_memcached, unique
) -> AsyncIterator[dict[str, Any]]:
    """A replicated namespace of regions a, b, c (registered), region c's writer running on a
    memcached of its own whose items are at most 512 KiB."""
    small = own_memcached(item_size_max="512k")
    servers = {"a": memcached_servers[0].address, "b": memcached_servers[1].address}
    servers["c"] = small.address
    async with replicated(wal_settings, f"h{unique}", servers) as rig:
        yield {**rig, "memcached": small}


async def redrive_done(client: Any, ns: str, region: str | None) -> dict[str, Any]:
    """The redrive's status once it is no longer running."""
    query = f"?region={region}" if region else ""

    async def done() -> dict[str, Any] | None:
        response = await client.get(f"/v1/namespaces/{ns}/dlq:redrive{query}")
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body if body["state"] != "running" else None

    return await eventually(done, 60, f"the redrive of {ns} {query} to end")


async def test_a_region_dlq_entry_is_shown_redriven_and_discarded_over_http(
    region_c: dict[str, Any], api_client: Any, wal_settings: Any, broker: str, unique: str
) -> None:
    ns, producer, cache = region_c["ns"], region_c["producer"], region_c["cache"]
    topic, dlq = region_topic(ns, "c"), region_dlq_topic(ns, "c")
    # two poison operations: a value over region c's item size, a key with a space
    big_key, big_value = f"{unique}:big", bytes(range(256)) * (BIG // 256)
    big = cache_envelope("set", big_key, big_value, ns=ns, token="big", ttl=0)
    bad = cache_envelope("set", f"{unique} space", b"x", ns=ns, token="bad", ttl=0)
    for env in (big, bad):
        await producer.send_and_wait(topic, encode_envelope(env), key=str(env.key).encode())
    await eventually(
        lambda: open_ids(broker, dlq), 60, "the poison operations' DLQ entries", every=0.5
    )
    await eventually(async_len(lambda: open_ids(broker, dlq), 2), 60, "both DLQ entries", every=0.5)
    first_bad = (await open_ids(broker, dlq))["id-bad"]
    client = await api_client(build_api(wal_settings))

    listed = await client.get(f"/v1/namespaces/{ns}/dlq?region=c")
    assert listed.status == 200, await listed.text()
    reasons = {e["id"]: e["reason"] for e in (await listed.json())["entries"]}
    assert reasons == {"id-big": "value_too_large", "id-bad": "key_bad_char"}

    # show: the entry and its record, as `walstream dlq show --region c` prints it
    shown = await client.get(f"/v1/namespaces/{ns}/dlq/id-big?region=c")
    assert shown.status == 200, await shown.text()
    body = await shown.json()
    assert (body["namespace"], body["region"], body["id"]) == (ns, "c", "id-big")
    assert (body["error_class"], body["reason"]) == ("PoisonOperation", "value_too_large")
    assert body["source"].startswith(f"{topic}[")
    assert body["record"]["target"] == {
        "type": "memcached",
        "op": "set",
        "key": big_key,
        "origin_region": "a",
        "ttl": 0,
    }
    # the namespace's own DLQ does not hold it
    own = await client.get(f"/v1/namespaces/{ns}/dlq/id-big")
    assert own.status == 404
    assert "id-big" in (await own.json())["message"]
    gone = await client.get(f"/v1/namespaces/{ns}/dlq/id-nothing?region=c")
    assert gone.status == 404
    assert "region c" in (await gone.json())["message"]

    # the cause fixed: region c's memcached takes 1 MiB items now; the redrive puts the
    # operation back on the region's topic and region c's writer applies it
    memcached = region_c["memcached"]
    memcached.stop()
    memcached.item_size_max = None
    memcached.start()
    # region c serves again: an operation through its writer (which reads the restarted
    # server's item size on its new connection; the first batch after a restart still judges
    # sizes by the old connection's, which would dead-letter the redriven value again)
    probe_key = f"{unique}:probe"
    probe = cache_envelope("set", probe_key, b"p", ns=ns, token="probe", ttl=0)
    await producer.send_and_wait(topic, encode_envelope(probe), key=probe_key.encode())

    async def probed() -> bool:
        return await cache.get(probe_key.encode()) == b"p"

    await eventually(probed, 90, "region c's writer applying again", every=0.5)
    started = await client.post(
        f"/v1/namespaces/{ns}/dlq:redrive?region=c", json={"ids": ["id-big"]}
    )
    assert started.status == 202, await started.text()
    assert (await started.json())["region"] == "c"
    status = await redrive_done(client, ns, "c")
    assert (status["namespace"], status["region"], status["state"]) == (ns, "c", "done")
    assert (status["total"], status["redriven"], status["skipped"]) == (1, 1, [])
    # the namespace's own redrive is another one: none ran
    assert (await client.get(f"/v1/namespaces/{ns}/dlq:redrive")).status == 404

    async def applied() -> bool:
        return await cache.get(big_key.encode()) == big_value

    await eventually(applied, 90, "the redriven operation applied in region c", every=0.5)
    assert set(await open_ids(broker, dlq)) == {"id-bad"}

    # a poison operation redriven is dead-lettered again, with its reason
    again = await client.post(f"/v1/namespaces/{ns}/dlq:redrive?region=c", json={"ids": "id-bad"})
    assert again.status == 202, await again.text()
    assert (await redrive_done(client, ns, "c"))["redriven"] == 1

    async def dead_again() -> bool:
        return (await open_ids(broker, dlq)).get("id-bad", first_bad) > first_bad

    await eventually(dead_again, 60, "the redriven poison operation dead-lettered again")
    shown = await client.get(f"/v1/namespaces/{ns}/dlq/id-bad?region=c")
    assert shown.status == 200, await shown.text()
    assert (await shown.json())["reason"] == "key_bad_char"

    # discard closes it and writes nothing to the region's topic (no settle marker)
    ends = await topic_end_offsets(broker, topic)
    discarded = await client.post(
        f"/v1/namespaces/{ns}/dlq:discard?region=c", json={"ids": ["id-bad"]}
    )
    assert discarded.status == 200, await discarded.text()
    assert await discarded.json() == {"namespace": ns, "region": "c", "discarded": 1}
    assert await open_ids(broker, dlq) == {}
    assert await topic_end_offsets(broker, topic) == ends
    listed = await client.get(f"/v1/namespaces/{ns}/dlq?region=c")
    assert (await listed.json())["open"] == 0


def async_len(read: Any, n: int) -> Any:
    async def check() -> bool:
        return len(await read()) == n

    return check


async def _dead_letter(
    producer: AIOKafkaProducer, config: NamespaceConfig, dlq: str, log: str, token: str
) -> None:
    """A good cache operation's entry on ``dlq`` (as after a fault since fixed)."""
    key = f"{config.name}:{token}"
    env = cache_envelope(
        "set", key, b"v", ns=config.name, token=token, ttl=0, owt_ms=int(time.time() * 1000)
    )
    entry = region_dlq_entry(
        encode_envelope(env),
        dlq_topic=dlq,
        partition=0,
        record_id=env.id,
        namespace=config.name,
        reason="fault",
        source=f"{log}[0]@0",
        dead_at_ms=int(time.time() * 1000),
        key=key,
    )
    await producer.send_and_wait(
        entry.topic, entry.value, key=entry.key, partition=entry.partition, headers=entry.headers
    )


async def test_a_region_redrive_is_apart_from_the_namespaces_and_a_second_one_is_a_409(
    region_c: dict[str, Any], api_client: Any, wal_settings: Any, broker: str
) -> None:
    ns, producer, config = region_c["ns"], region_c["producer"], region_c["config"]
    topic, dlq = region_topic(ns, "c"), region_dlq_topic(ns, "c")
    for token in ("r1", "r2"):
        await _dead_letter(producer, config, dlq, topic, token)
    for token in ("n1", "n2"):
        await _dead_letter(producer, config, config.topics.dlq, config.topics.log, token)
    client = await api_client(build_api(wal_settings))
    base = f"/v1/namespaces/{ns}/dlq:redrive"

    # a region redrive held after its first entry (0.01/s: the second is 100 s away)
    started = await client.post(f"{base}?region=c", json={"rate": 0.01})
    assert started.status == 202, await started.text()

    async def region_running_one() -> bool:
        body = await (await client.get(f"{base}?region=c")).json()
        return body["state"] == "running" and body["redriven"] == 1

    await eventually(region_running_one, 60, "the region redrive's first entry")
    # a second redrive of region c's DLQ is refused, naming the region
    second = await client.post(f"{base}?region=c", json={})
    assert second.status == 409, await second.text()
    assert "region c" in (await second.json())["message"]
    # the namespace's own DLQ is another queue: its redrive starts
    own = await client.post(base, json={"rate": 0.01})
    assert own.status == 202, await own.text()

    async def own_running_one() -> bool:
        body = await (await client.get(base)).json()
        return body["state"] == "running" and body["redriven"] == 1

    await eventually(own_running_one, 60, "the namespace redrive's first entry")
    own_status = await (await client.get(base)).json()
    assert "region" not in own_status
    assert (own_status["namespace"], own_status["total"]) == (ns, 2)
    region_status = await (await client.get(f"{base}?region=c")).json()
    assert (region_status["region"], region_status["total"]) == ("c", 2)
    # cancelling one leaves the other running
    cancelled = await client.delete(f"{base}?region=c")
    assert cancelled.status == 200, await cancelled.text()
    assert ((await cancelled.json())["region"], (await cancelled.json())["state"]) == (
        "c",
        "cancelled",
    )
    assert (await (await client.get(base)).json())["state"] == "running"
    cancelled = await client.delete(base)
    assert (await cancelled.json())["state"] == "cancelled"
    # each redrove one entry of its own DLQ
    assert set(await open_ids(broker, dlq)) == {"id-r2"}
    assert set(await open_ids(broker, config.topics.dlq)) == {"id-n2"}


async def test_a_region_dlq_on_the_regions_own_cluster_over_http(
    wal_settings, memcached_servers, own_broker, api_client, broker, unique
) -> None:
    """Region c's DLQ and topic live on its own Kafka cluster: the API reads, redrives and
    discards there (the redriven operation applied by c's writer), nothing on its own."""
    remote = own_broker.bootstrap_servers
    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    async with replicated(wal_settings, f"k{unique}", servers, remote) as rig:
        ns, producer, config, cache = rig["ns"], rig["producer"], rig["config"], rig["cache"]
        topic, dlq = region_topic(ns, "c"), region_dlq_topic(ns, "c")
        bad = cache_envelope("set", f"{unique} space", b"x", ns=ns, token="bad", ttl=0)
        await producer.send_and_wait(topic, encode_envelope(bad), key=str(bad.key).encode())
        await eventually(lambda: open_ids(remote, dlq), 60, "the poison operation's DLQ entry")
        await _dead_letter(producer, config, dlq, topic, "fixed")
        client = await api_client(build_api(wal_settings))

        listed = await client.get(f"/v1/namespaces/{ns}/dlq?region=c")
        assert listed.status == 200, await listed.text()
        assert {e["id"] for e in (await listed.json())["entries"]} == {"id-bad", "id-fixed"}
        shown = await client.get(f"/v1/namespaces/{ns}/dlq/id-bad?region=c")
        assert shown.status == 200, await shown.text()
        assert (await shown.json())["reason"] == "key_bad_char"

        started = await client.post(
            f"/v1/namespaces/{ns}/dlq:redrive?region=c", json={"ids": ["id-fixed"]}
        )
        assert started.status == 202, await started.text()
        assert (await redrive_done(client, ns, "c"))["redriven"] == 1
        key = f"{ns}:fixed"

        async def applied() -> bool:
            return await cache.get(key.encode()) == b"v"

        await eventually(applied, 60, "the redriven operation applied in region c")
        discarded = await client.post(
            f"/v1/namespaces/{ns}/dlq:discard?region=c", json={"ids": ["id-bad"]}
        )
        assert discarded.status == 200, await discarded.text()
        assert (await discarded.json())["discarded"] == 1
        assert await open_ids(remote, dlq) == {}
        # the deployment's cluster holds neither the region's topic nor its DLQ
        async with AIOKafkaProducer(bootstrap_servers=broker) as local:
            topics = (await local.client.fetch_all_metadata()).topics()
        assert topic not in topics
        assert dlq not in topics
