"""``walstream replication``: a replicated namespace's regions (issue 17)."""

from __future__ import annotations

import asyncio
import math
import urllib.request
from typing import Any

import click
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from walstream.cli.common import cluster_settings, namespace_config, run_async
from walstream.core.replication_status import RegionFigures, fold_samples
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
@click.option(
    "--metrics",
    "metrics_urls",
    multiple=True,
    help="a worker's /metrics URL (repeatable: every process running the namespace's "
    "writers), for the applied, stale, retry and lag figures",
)
def status(namespace: str, metrics_urls: tuple[str, ...]) -> None:
    """Per region: the operations its writer has not applied yet (its topic's end offsets minus
    its consumer group's commits) and the open entries of its DLQ, read off the region's
    cluster; with --metrics, what the workers' metrics say (walstream_replication_*, summed
    over the processes, since each started): operations applied, skipped as stale (older than
    what the region holds) or as duplicates, tried again, and the replication lag's p50/p99
    (the upper bound of the histogram bucket holding it), the operations settled later than
    the namespace's max_lag_s (over_lag) and the sets later than its tombstone_ttl_s (over_ttl:
    dead-lettered with reason older_than_tombstone_ttl, or redriven and applied), and a flag:
    ``TTL`` (some over_ttl), ``LAG`` (some over_lag), ``ok``; a flagged region is explained on
    stderr. ``-``: not known (no --metrics, no process scraped reports the region, or no
    operation applied to measure a lag by)."""
    settings = cluster_settings()
    rows = run_async(lambda: region_status(settings, namespace))
    figures: dict[str, RegionFigures] = {}
    if metrics_urls:
        samples, failed = run_async(lambda: _scrape(metrics_urls))
        for url, error in failed:
            click.echo(f"metrics of {url} not read: {error}", err=True)
        figures = fold_samples(samples, namespace)
    click.echo(
        f"{'region':<20} {'backlog':>10} {'dlq':>8} {'applied':>10} {'stale':>8} {'dup':>8} "
        f"{'retries':>8} {'lag_p50':>9} {'lag_p99':>9} {'over_lag':>9} {'over_ttl':>9} "
        f"{'flag':>4}  cluster"
    )
    for row in rows:
        shown = figures.get(row["region"]) if metrics_urls else None
        late = ["-"] * 3
        if shown is None:
            counts = ["-"] * 4
            lags = ["-"] * 2
        else:
            over_ttl = shown.over_tombstone_ttl
            late = [str(int(shown.over_max_lag)), str(int(sum(over_ttl.values()))), shown.flag]
            if shown.flag != "ok":
                click.echo(_late_note(row, shown), err=True)
            counts = [
                str(shown.outcome("applied")),
                str(shown.outcome("stale")),
                str(shown.outcome("duplicate")),
                str(int(shown.retries)),
            ]
            lags = [_lag(shown.lag_quantile(0.5)), _lag(shown.lag_quantile(0.99))]
        click.echo(
            f"{row['region']:<20} {row['backlog']:>10} {row['dlq']:>8} {counts[0]:>10} "
            f"{counts[1]:>8} {counts[2]:>8} {counts[3]:>8} {lags[0]:>9} {lags[1]:>9} "
            f"{late[0]:>9} {late[1]:>9} {late[2]:>4}  {row['cluster']}"
        )
    if not metrics_urls:
        click.echo(
            "applied, stale, dup, retries and lag are the workers' metrics, not the topics': "
            "pass --metrics http://<worker>:<port>/metrics for each process running the writers",
            err=True,
        )


def _late_note(row: dict[str, Any], shown: RegionFigures) -> str:
    """Why region ``row`` is flagged, and what to do."""
    region = row["region"]
    note = (
        f"region {region}: {int(shown.over_max_lag)} operation(s) settled later than "
        f"max_lag_s ({row['max_lag_s']} s) after their write (its writer behind, or a DLQ "
        "entry redriven late)"
    )
    dead = int(shown.over_tombstone_ttl.get("dlq", 0))
    applied = int(shown.over_tombstone_ttl.get("applied", 0))
    if dead or applied:
        note += (
            f"; sets later than tombstone_ttl_s ({row['tombstone_ttl_s']} s), which could "
            f"bring a deleted value back: {dead} dead-lettered (reason older_than_tombstone_ttl:"
            f" `walstream dlq redrive --region {region}` applies them anyway, or discard them),"
            f" {applied} applied (redriven)"
        )
    return note


def _lag(bound: float | None) -> str:
    """A lag quantile's bucket bound as shown: ``<=25ms``, ``>120s`` (past the last bound),
    ``-`` (no operation applied)."""
    if bound is None:
        return "-"
    if math.isinf(bound):
        return ">" + f"{_LAST_LAG_BOUND:g}s"
    return f"<={bound * 1000:g}ms" if bound < 1 else f"<={bound:g}s"


#: the largest finite bound of walstream_replication_lag_seconds (walstream.metrics)
_LAST_LAG_BOUND = 120.0


async def _scrape(
    urls: tuple[str, ...],
) -> tuple[list[tuple[str, dict[str, str], float]], list[tuple[str, str]]]:
    """The samples of every ``url`` that answers, and (url, error) of those that did not."""
    samples: list[tuple[str, dict[str, str], float]] = []
    failed: list[tuple[str, str]] = []
    for url in urls:
        try:
            text = await asyncio.to_thread(_get, url)
        except (OSError, ValueError) as exc:
            failed.append((url, str(exc)))
            continue
        for family in text_string_to_metric_families(text):
            samples += [(s.name, dict(s.labels), float(s.value)) for s in family.samples]
    return samples, failed


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - an operator's URL
        body: bytes = response.read()
    return body.decode()


async def region_status(settings: Settings, namespace: str) -> list[dict[str, Any]]:
    """Each region's backlog and open DLQ entries (``status``'s rows)."""
    from walstream.dlq import DlqReader

    config = await namespace_config(settings, namespace)
    if config.replication is None:
        raise WalError(f"namespace {namespace!r} has no replication regions")
    rows = []
    for region in config.replication.regions:
        servers = region.bootstrap_servers or settings.bootstrap_list
        topic = region_topic(namespace, region.name)
        ends = await _ends(servers, [topic])
        group = ClientIds.region_group(namespace, region.name)
        committed = await _committed(servers, group, list(ends))
        backlog = sum(end - committed.get(tp, 0) for tp, end in ends.items())
        index = await DlqReader(servers).index(region_dlq_topic(namespace, region.name))
        rows.append(
            {
                "region": region.name,
                "backlog": max(0, backlog),
                "dlq": len(index),
                "cluster": region.bootstrap_servers or "(the deployment's)",
                "max_lag_s": config.replication.max_lag_s,
                "tombstone_ttl_s": config.replication.tombstone_ttl_s,
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
