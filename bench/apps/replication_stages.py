"""The replication benchmark's worker: a replicated namespace's stages in one process (one core).

The fan-outs (as the worker runs them) and a writer for each region named in REPL_WRITERS
(comma-separated), or the writers alone (REPL_FANOUT=0), the classes the worker runs
(walstream.replication), on the namespace
described by the environment:

* REPL_BOOTSTRAP: the broker; REPL_NS: the namespace; REPL_PARTITIONS: its topics' partitions;
* REPL_REGIONS: JSON ``{"region": "host:port"}``, one memcached server per region;
* REPL_OUT: a JSON file, rewritten every 100 ms with the operations each writer applied so far
  (``{"counts": {"b": n}}``) and, at exit (SIGTERM), with every applied operation's replication
  lag in ms as the writer measured it for its histogram (``{"lag_ms": {"b": [...]}}``);
* REPL_PROFILE=1: it also times each stage's steps (a fetch that returned records, the batch's
  handling, the commit; ms each, and the batch sizes), and each record's age when a fetch hands
  it over (now minus its Kafka timestamp, when it was produced), and writes them at exit
  (``{"steps": {"fanout": {"fetch": [...], "handle": [...], "commit": [...], "batch": [...]}}}``).

The lag samples come from the writers' own ``replication_lag`` observation (apply time minus
original write time), taken here in full instead of as histogram buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from walstream.metrics import WalMetrics
from walstream.namespaces.replication import parse_replication
from walstream.replication.fanout import fanouts
from walstream.replication.writer import RegionWriter
from walstream.settings import Settings
from walstream.topology import default_topics


class _Lags:
    """Stands in for the lag histogram: keeps every observation (ms), per region."""

    def __init__(self) -> None:
        self.by_region: dict[str, list[float]] = {}

    def labels(self, namespace: str, region: str) -> _Observer:
        return _Observer(self.by_region.setdefault(region, []))


class _Observer:
    def __init__(self, out: list[float]) -> None:
        self.out = out

    def observe(self, seconds: float) -> None:
        self.out.append(seconds * 1000)


class _Steps:
    """Times a stage's fetches (those returning records), batch handling and commits."""

    def __init__(self) -> None:
        self.by_stage: dict[str, dict[str, list[float]]] = {}

    def watch(self, name: str, stage: Any) -> None:
        steps = self.by_stage.setdefault(
            name, {"fetch": [], "handle": [], "commit": [], "batch": [], "age": []}
        )
        consumer, handle = stage.consumer, stage.handle
        getmany, commit = consumer.getmany, consumer.commit

        async def timed_getmany(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            got = await getmany(*args, **kwargs)
            if got:
                steps["fetch"].append((time.perf_counter() - began) * 1000)
                now_ms = time.time() * 1000
                steps["age"].extend(now_ms - r.timestamp for rs in got.values() for r in rs)
            return got

        async def timed_handle(batch: Any) -> None:
            began = time.perf_counter()
            try:
                await handle(batch)
            finally:
                steps["handle"].append((time.perf_counter() - began) * 1000)
                steps["batch"].append(sum(len(records) for records in batch.values()))

        async def timed_commit(*args: Any, **kwargs: Any) -> None:
            began = time.perf_counter()
            try:
                await commit(*args, **kwargs)
            finally:
                steps["commit"].append((time.perf_counter() - began) * 1000)

        consumer.getmany, consumer.commit = timed_getmany, timed_commit
        stage.handle = timed_handle


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


async def main() -> None:
    env = os.environ
    servers = env["REPL_BOOTSTRAP"]
    ns = env["REPL_NS"]
    partitions = int(env["REPL_PARTITIONS"])
    regions = json.loads(env["REPL_REGIONS"])
    out = Path(env["REPL_OUT"])
    settings = Settings(
        bootstrap_servers=servers,
        auth=False,
        replication_factor=1,
        min_insync_replicas=1,
        default_partitions=partitions,
        broker_session_timeout_s=6,
        broker_heartbeat_interval_s=1,
    )
    replication = parse_replication(
        {
            "regions": {r: {"memcached": [s]} for r, s in regions.items()},
            "max_lag_s": 600,
            "tombstone_ttl_s": 3_600,
        }
    )
    assert replication is not None  # noqa: S101 - regions given
    lags = _Lags()
    metrics = WalMetrics.create(CollectorRegistry())._replace(replication_lag=lags)
    stages: list[Any] = []
    if env.get("REPL_FANOUT", "1") == "1":
        stages.extend(  # the namespace's fan-outs, as the worker runs them
            fanouts(
                settings,
                namespace=ns,
                log_topic=default_topics(ns).log,
                replication=replication,
                partitions=partitions,
            )
        )
    for name in env["REPL_WRITERS"].split(","):
        region = replication.region(name)
        assert region is not None  # noqa: S101 - one of REPL_REGIONS
        stages.append(
            RegionWriter(
                settings,
                namespace=ns,
                region=region,
                replication=replication,
                partitions=partitions,
                metrics=metrics,
            )
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    steps = _Steps() if env.get("REPL_PROFILE") == "1" else None
    for stage in stages:
        await stage.start()
        if steps is not None:
            name = (
                f"writer-{stage.region.name}"
                if isinstance(stage, RegionWriter)
                else "fanout"
                if stage.region is None
                else f"fanout-{stage.region}"
            )
            steps.watch(name, stage)
    try:
        while not stop.is_set():
            counts = {r: len(samples) for r, samples in lags.by_region.items()}
            _write(out, {"counts": counts})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        for stage in reversed(stages):
            await stage.stop()
        counts = {r: len(samples) for r, samples in lags.by_region.items()}
        final: dict[str, Any] = {"counts": counts, "lag_ms": lags.by_region}
        if steps is not None:
            final["steps"] = steps.by_stage
        _write(out, final)


if __name__ == "__main__":
    asyncio.run(main())
