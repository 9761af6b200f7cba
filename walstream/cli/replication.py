"""``walstream replication``: a replicated namespace's regions (issue 17)."""

from __future__ import annotations

from typing import Any

import click
from aiokafka import TopicPartition

from walstream.cli.common import cluster_settings, namespace_config, run_async
from walstream.errors import WalError
from walstream.kafka import clients
from walstream.kafka.clients import ClientIds, start_client, stop_consumer
from walstream.kafka.offsets import probe_end_offsets
from walstream.settings import Settings
from walstream.topology import region_dlq_topic, region_topic

__all__ = ["replication"]


@click.group()
def replication() -> None:
    """A replicated namespace's regions (cross-region memcached replication)."""


@replication.command()
@click.argument("namespace")
def status(namespace: str) -> None:
    """Per region: the operations its writer has not applied yet (its topic's end offsets minus
    its consumer group's commits) and the records of its DLQ. Lag and applied/stale/retry counts
    are each worker's metrics (walstream_replication_*)."""
    settings = cluster_settings()
    rows = run_async(lambda: region_status(settings, namespace))
    click.echo(f"{'region':<20} {'backlog':>10} {'dlq':>8}  cluster")
    for row in rows:
        click.echo(f"{row['region']:<20} {row['backlog']:>10} {row['dlq']:>8}  {row['cluster']}")


async def region_status(settings: Settings, namespace: str) -> list[dict[str, Any]]:
    """Each region's backlog and DLQ records (``status``'s rows)."""
    config = await namespace_config(settings, namespace)
    if config.replication is None:
        raise WalError(f"namespace {namespace!r} has no replication regions")
    rows = []
    for region in config.replication.regions:
        servers = region.bootstrap_servers or settings.bootstrap_list
        topic = region_topic(namespace, region.name)
        ends = await _ends(servers, [topic, region_dlq_topic(namespace, region.name)])
        group = ClientIds.region_group(namespace, region.name)
        committed = await _committed(servers, group, [tp for tp in ends if tp.topic == topic])
        backlog = sum(end - committed.get(tp, 0) for tp, end in ends.items() if tp.topic == topic)
        dlq = sum(end for tp, end in ends.items() if tp.topic != topic)
        rows.append(
            {
                "region": region.name,
                "backlog": max(0, backlog),
                "dlq": dlq,
                "cluster": region.bootstrap_servers or "(the deployment's)",
            }
        )
    return rows


async def _ends(servers: str | list[str], topics: list[str]) -> dict[TopicPartition, int]:
    consumer = clients.reader(servers, clients.END_OFFSETS)
    await start_client(consumer)
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        reported = await consumer.end_offsets(tps) if tps else {}
    finally:
        await stop_consumer(consumer)
    return await probe_end_offsets(servers, reported)


async def _committed(
    servers: str | list[str], group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """What ``group`` committed on ``tps`` (read by a consumer that never joins the group)."""
    consumer = clients.reader_consumer(
        servers,
        client_id=f"{group}-status",
        group_id=group,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await start_client(consumer)
    try:
        committed = {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await stop_consumer(consumer)
    return {tp: offset for tp, offset in committed.items() if offset is not None}
