"""DLQ entries are folded by identity on the real broker (issue 14 item 4).

Redriven keyless records that die again land on other partitions than the markers that closed
their first entries. On 9e4a94b a reader folding the partitions in arrival order let the old
marker close the new entry (three reads of 20 open entries showed 14, 13 and 10): here every
read (paged listing, whole view, HTTP listing, the gauge's fold) shows the same 25 open entries,
each one redrivable by id, and the open-entries gauge is exact before and after.
"""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from walstream.agents.dlq_monitor import DlqMonitor
from walstream.api.app import build_api
from walstream.core.dlq import Selection
from walstream.dlq import DlqReader, flatten, read_dlq, redrive
from walstream.metrics import WalMetrics
from walstream.settings import Settings
from walstream.testing import send_dead_letter as dead_letter

from .conftest import apply_namespace, eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

AGAIN = 20  # redriven, then dead again on another partition
PLAIN = 5  # never redriven


def gauge(registry: CollectorRegistry, ns: str) -> float | None:
    return registry.get_sample_value("walstream_dlq_records", {"namespace": ns})


async def test_redriven_records_dead_again_elsewhere_stay_open_in_every_read(
    api_client, wal_env, unique
):
    wal_settings = Settings.from_env(
        {**wal_env, "WALSTREAM_AUTH": "false"}
    )  # auth: not tested here
    ns = f"ident-{unique}"
    await apply_namespace(wal_settings, {"name": ns, "target": {"type": "kafka", "topic": "o"}})
    topic = f"wal.{ns}.dlq"
    servers = wal_settings.bootstrap_list
    again = [f"a{n:02d}" for n in range(AGAIN)]
    plain = [f"p{n:02d}" for n in range(PLAIN)]
    # First deaths: half on the lowest partition, half on the highest, so whichever order a
    # reader takes the partitions in, some markers come after the new entries they must not close.
    first_partition = {rid: 0 if n % 2 else 3 for n, rid in enumerate(again)}
    then_partition = {
        rid: 3 if p == 0 else n % 3 for n, (rid, p) in enumerate(first_partition.items())
    }
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        for n, rid in enumerate(again):
            await dead_letter(producer, ns, rid, first_partition[rid], 1_000 + n)
        for n, rid in enumerate(plain):
            await dead_letter(producer, ns, rid, n % 4, 500 + n)
        # redrive the first deaths (real redrive: log record, then the marker)
        reader = DlqReader(servers)
        refs = (await reader.index(topic)).select(Selection(ids=frozenset(again)))
        assert len(refs) == AGAIN
        config = (await _registry(wal_settings)).get(ns)
        from walstream.dlq import RedriveProgress

        progress = RedriveProgress(namespace=ns, total=len(refs))
        await redrive(producer, config, flatten(reader.pages(topic, refs)), progress)
        assert progress.redriven == AGAIN
        # ... and they die again, on other partitions than their markers
        for n, rid in enumerate(again):
            await dead_letter(producer, ns, rid, then_partition[rid], 2_000 + n)
    finally:
        await producer.stop()

    expected = sorted([*again, *plain])
    client = await api_client(build_api(wal_settings))
    metrics_registry = CollectorRegistry()
    monitor = DlqMonitor(wal_settings, WalMetrics.create(metrics_registry))
    await monitor.start()
    try:
        monitor.watch([(ns, topic)])
        for _ in range(3):
            page = await DlqReader(servers).page(topic, Selection(), limit=100)
            assert sorted(e.id for e in page.entries) == expected
            assert page.open == len(expected)
            again_at = {e.id: e.partition for e in page.entries if e.id in first_partition}
            assert again_at == then_partition  # the new entries, not the redriven ones
            view = await read_dlq(servers, topic)
            assert sorted(e.id for e in view.all_open()) == expected
            listing = await (await client.get(f"/v1/namespaces/{ns}/dlq?limit=100")).json()
            assert sorted(e["id"] for e in listing["entries"]) == expected
            assert listing["open"] == len(expected)
        index = await DlqReader(servers).index(topic)
        for rid in again:  # each redrivable by id: the id selects exactly its new entry
            (ref,) = index.select(Selection(ids=frozenset({rid})))
            assert ref.partition == then_partition[rid]
        await eventually(
            lambda: gauge(metrics_registry, ns) == len(expected), 60, "the gauge to count all"
        )

        # redrive them again by id over HTTP: only the plain entries stay open
        started = await client.post(f"/v1/namespaces/{ns}/dlq:redrive", json={"ids": again})
        assert started.status == 202, await started.text()
        assert (await started.json())["total"] == AGAIN

        async def done() -> bool:
            body = await (await client.get(f"/v1/namespaces/{ns}/dlq:redrive")).json()
            return body["state"] == "done"

        await eventually(done, 60, "the redrive to finish")
        left = await DlqReader(servers).page(topic, Selection(), limit=100)
        assert sorted(e.id for e in left.entries) == plain
        await eventually(lambda: gauge(metrics_registry, ns) == PLAIN, 60, "the gauge to drop")
    finally:
        await monitor.stop()


async def _registry(settings):
    from walstream.namespaces.broadcast import NamespaceFeed

    feed = NamespaceFeed(settings)
    await feed.start()
    try:
        assert await feed.wait_ready(30.0)
        return feed.registry
    finally:
        await feed.stop()
