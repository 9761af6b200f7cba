"""``walstream dlq ... --region r`` on a replicated namespace's region DLQ (issue 17 item 6),
against the real broker and memcached: a region writer dead-letters a poison operation, the
CLI lists and shows it, a redrive puts an operation back on the region's topic for the writer
to apply (or dead-letter again, per its nature), a discard closes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from walstream.api.app import build_api
from walstream.core.outbox import region_dlq_entry
from walstream.dlq import read_dlq
from walstream.metrics import WalMetrics
from walstream.namespaces.config import parse_namespace
from walstream.records import encode_envelope
from walstream.replication import RegionCache
from walstream.replication.stages import ReplicationStages, StageKey
from walstream.replication.writer import RegionWriter
from walstream.testing.records import namespace_definition
from walstream.testing.replication import cache_envelope
from walstream.topology import region_dlq_topic, region_topic

from .conftest import apply_namespace, eventually, run_cli
from .helpers import topic_end_offsets

pytestmark = pytest.mark.integration

TOMB_TTL = 3_600


def cli(env: dict[str, str], *args: str) -> Any:
    return asyncio.to_thread(run_cli, env, *args)


async def open_ids(broker: str, topic: str) -> dict[str, int]:
    """The open entries of a DLQ topic: id -> offset."""
    view = await read_dlq(broker, topic)
    return {record_id: entry.offset for record_id, entry in view.open.items()}


@pytest.fixture
async def region_b(wal_settings, memcached_servers, unique) -> AsyncIterator[dict[str, Any]]:
    """A replicated namespace of regions a, b, c (registered), region b's writer running and
    its memcached."""
    ns = f"d{unique}"
    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    definition = namespace_definition(
        ns,
        replication={
            "regions": {r: {"memcached": [s]} for r, s in servers.items()},
            "max_lag_s": 600,
            "tombstone_ttl_s": TOMB_TTL,
        },
    )
    await apply_namespace(wal_settings, definition)
    config = parse_namespace(definition)
    assert config.replication is not None
    registry = CollectorRegistry()
    # the writer as a worker makes it (with its region DLQ's gauge)
    stages = ReplicationStages(wal_settings, metrics=WalMetrics.create(registry))
    writer = stages._make(StageKey(ns, "b", "writer"), config.topics.log, config.replication)
    assert isinstance(writer, RegionWriter)
    cache = RegionCache([servers["b"]], tombstone_ttl_s=TOMB_TTL)
    producer = AIOKafkaProducer(bootstrap_servers=wal_settings.bootstrap_list, acks="all")
    await writer.start()  # creates the region's topic and DLQ
    await producer.start()
    try:
        yield {
            "ns": ns,
            "writer": writer,
            "cache": cache,
            "producer": producer,
            "dlq_size": lambda: registry.get_sample_value(
                "walstream_replication_dlq_records", {"namespace": ns, "region": "b"}
            ),
        }
    finally:
        await producer.stop()
        await writer.stop()
        await cache.close()


async def test_dlq_list_show_redrive_and_discard_a_region_dlq(
    region_b: dict[str, Any], wal_env: dict[str, str], broker: str, unique: str
) -> None:
    ns, cache, producer = region_b["ns"], region_b["cache"], region_b["producer"]
    dlq_size = region_b["dlq_size"]

    def size_is(n: int) -> Any:
        return lambda: dlq_size() == n

    topic, dlq = region_topic(ns, "b"), region_dlq_topic(ns, "b")
    # a poison operation (a key with a space) the writer dead-letters ...
    bad = cache_envelope("set", f"{unique} space", b"x", ns=ns, token="bad", ttl=0)
    await producer.send_and_wait(topic, encode_envelope(bad), key=f"{unique} space".encode())
    await eventually(lambda: open_ids(broker, dlq), 60, "the poison operation's DLQ entry")
    first_bad = (await open_ids(broker, dlq))["id-bad"]
    # ... and a good operation dead-lettered earlier (as after a fault since fixed): a
    # redrive should have the writer apply it
    key = f"{unique}:fixed"
    fixed = cache_envelope(
        "set", key, b"value", ns=ns, token="fixed", ttl=0, owt_ms=int(time.time() * 1000)
    )
    entry = region_dlq_entry(
        encode_envelope(fixed),
        dlq_topic=dlq,
        partition=0,
        record_id=fixed.id,
        namespace=ns,
        reason="value_too_large",
        source=f"{topic}[0]@0",
        dead_at_ms=int(time.time() * 1000),
        key=key,
    )
    await producer.send_and_wait(
        entry.topic, entry.value, key=entry.key, partition=entry.partition, headers=entry.headers
    )

    # walstream_replication_dlq_records counts the open entries
    await eventually(size_is(2), 30, f"the region DLQ gauge at 2 (at {dlq_size()})")

    listed = await cli(wal_env, "dlq", "list", ns, "--region", "b")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in listed.stdout.splitlines()}
    assert set(rows) == {"id-bad", "id-fixed"}
    assert rows["id-bad"][2] == "PoisonOperation"
    assert rows["id-bad"][-1] == "key_bad_char"
    assert rows["id-fixed"][-1] == "value_too_large"
    # the namespace's own DLQ is another queue: empty
    plain = await cli(wal_env, "dlq", "list", ns)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == ""

    shown = await cli(wal_env, "dlq", "show", ns, "id-fixed", "--region", "b")
    assert shown.returncode == 0, shown.stderr
    body = orjson.loads(shown.stdout)
    assert body["id"] == "id-fixed"
    assert body["record"]["target"]["key"] == key
    missing = await cli(wal_env, "dlq", "show", ns, "id-fixed", "--region", "nowhere")
    assert missing.returncode != 0
    assert "no region 'nowhere'" in missing.stderr

    # redrive: back on the region's topic, applied by its writer
    redriven = await cli(wal_env, "dlq", "redrive", ns, "--region", "b", "--id", "id-fixed")
    assert redriven.returncode == 0, redriven.stderr
    assert "redrove 1 of 1" in redriven.stdout

    async def applied() -> bool:
        return await cache.get(key.encode()) == b"value"

    await eventually(applied, 60, "the redriven operation applied in region b")
    assert set(await open_ids(broker, dlq)) == {"id-bad"}
    await eventually(size_is(1), 30, f"the region DLQ gauge at 1 (at {dlq_size()})")

    # a poison operation redriven is dead-lettered again (a new entry)
    again = await cli(wal_env, "dlq", "redrive", ns, "--region", "b", "--id", "id-bad")
    assert again.returncode == 0, again.stderr
    assert "redrove 1 of 1" in again.stdout

    async def dead_again() -> bool:
        return (await open_ids(broker, dlq)).get("id-bad", first_bad) > first_bad

    await eventually(dead_again, 60, "the redriven poison operation dead-lettered again")

    # discard closes it, and writes nothing to the region's topic (no settle marker: nothing
    # holds a key behind a region DLQ entry, and the writer would read one as poison)
    ends = await topic_end_offsets(broker, topic)
    discarded = await cli(wal_env, "dlq", "discard", ns, "--region", "b", "--id", "id-bad")
    assert discarded.returncode == 0, discarded.stderr
    assert "discarded 1" in discarded.stdout
    assert await open_ids(broker, dlq) == {}
    assert await topic_end_offsets(broker, topic) == ends
    listed = await cli(wal_env, "dlq", "list", ns, "--region", "b")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == ""
    await eventually(size_is(0), 30, f"the region DLQ gauge at 0 (at {dlq_size()})")
    # replication status counts open entries, not the DLQ topic's records (entries, markers,
    # redrive claims: more than 5 by now)
    status = await cli(wal_env, "replication", "status", ns)
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in status.stdout.splitlines()[1:]}
    assert rows["b"] == ["0", "0"]
    # the gauge goes with its writer (a region removed reports nothing)
    await region_b["writer"].stop()
    assert dlq_size() is None


async def test_the_http_dlq_listing_reads_a_region_dlq(
    region_b: dict[str, Any], api_client: Any, wal_settings: Any, broker: str, unique: str
) -> None:
    ns, producer = region_b["ns"], region_b["producer"]
    topic, dlq = region_topic(ns, "b"), region_dlq_topic(ns, "b")
    bad = cache_envelope("set", f"{unique} space", b"x", ns=ns, token="bad", ttl=0)
    await producer.send_and_wait(topic, encode_envelope(bad), key=f"{unique} space".encode())
    await eventually(lambda: open_ids(broker, dlq), 60, "the poison operation's DLQ entry")
    client = await api_client(build_api(wal_settings))

    listed = await client.get(f"/v1/namespaces/{ns}/dlq?region=b")
    assert listed.status == 200, await listed.text()
    body = await listed.json()
    assert (body["namespace"], body["region"], body["open"]) == (ns, "b", 1)
    assert [(e["id"], e["error_class"]) for e in body["entries"]] == [("id-bad", "PoisonOperation")]
    own = await (await client.get(f"/v1/namespaces/{ns}/dlq")).json()  # the namespace's own
    assert (own["open"], own["entries"]) == (0, [])
    nowhere = await client.get(f"/v1/namespaces/{ns}/dlq?region=zz")
    assert nowhere.status == 404
    assert "no region 'zz'" in (await nowhere.json())["message"]
