"""``walstream replication status NS`` (issue 17 item 6) against a worker running a replicated
namespace's stages: per region, the backlog and open DLQ entries off the topics, and with
--metrics the worker's figures (applied, stale, duplicates, retries, lag p50/p99)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from walstream.broker import free_port
from walstream.records import Envelope, encode_envelope
from walstream.testing.replication import cache_envelope
from walstream.topology import region_topic

from .conftest import apply_namespace, eventually, run_cli
from .replication_rig import RegionProcess, readyz, replicated_definition

pytestmark = pytest.mark.integration


async def publish(broker: str, log: str, envs: list[Envelope]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        for env in envs:  # one by one: the stale and duplicate ones come after their newer one
            await producer.send_and_wait(
                log, encode_envelope(env), key=str(env.target["key"]).encode()
            )
    finally:
        await producer.stop()


def table(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    assert lines[0].split()[:9] == [
        "region",
        "backlog",
        "dlq",
        "applied",
        "stale",
        "dup",
        "retries",
        "lag_p50",
        "lag_p99",
    ]
    return {line.split()[0]: line.split()[1:9] for line in lines[1:]}


async def test_status_prints_each_regions_backlog_dlq_and_the_workers_figures(
    workers, wal_env, wal_settings, broker, memcached_servers, unique
) -> None:
    ns = f"s{unique}"
    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    await apply_namespace(wal_settings, replicated_definition(ns, servers))
    worker = workers()
    base = int(time.time() * 1000)
    envs = [
        cache_envelope(
            "set", f"{unique}:{i}", b"v%d" % i, ns=ns, ttl=0, owt_ms=base + i, token=f"t{i}"
        )
        for i in range(20)
    ]
    newer = cache_envelope(
        "set", f"{unique}:0", b"new", ns=ns, ttl=0, owt_ms=base + 100, token="new"
    )
    older = cache_envelope(
        "set", f"{unique}:0", b"old", ns=ns, ttl=0, owt_ms=base + 50, token="old"
    )
    poison = cache_envelope("set", f"{unique} space", b"x", ns=ns, token="poison")
    # region a is the origin of every operation: b and c apply 21, skip the older set as stale
    # and the newer one sent again as a duplicate, and dead-letter the poison operation
    await publish(broker, f"wal.{ns}.log", [*envs, newer, older, newer, poison])
    url = f"http://127.0.0.1:{worker.web_port}/metrics"

    def settled() -> Any:
        done = run_cli(wal_env, "replication", "status", ns, "--metrics", url)
        assert done.returncode == 0, done.stderr
        rows = table(done.stdout)
        counts = {r: rows[r][:6] for r in ("b", "c")}
        want = ["0", "1", "21", "1", "1", "0"]
        return rows if counts == {"b": want, "c": want} else None

    rows = await eventually(
        lambda: asyncio.to_thread(settled), 120, f"the figures to settle\n{worker.log_tail()}"
    )
    for region in ("b", "c"):
        p50, p99 = rows[region][6:8]
        assert p50.startswith("<="), rows
        assert p99.startswith("<="), rows
    # region a's topic got nothing: its writer (in the process scraped) counted nothing, and
    # applied nothing to measure a lag by
    assert rows["a"] == ["0", "0", "0", "0", "0", "0", "-", "-"]

    # without --metrics: the topics' figures only, and it says where the rest is
    bare = await asyncio.to_thread(run_cli, wal_env, "replication", "status", ns)
    assert bare.returncode == 0, bare.stderr
    assert table(bare.stdout)["b"] == ["0", "1", "-", "-", "-", "-", "-", "-"]
    assert "pass --metrics" in bare.stderr


async def test_a_region_deployment_serves_its_readiness_and_metrics(
    wal_env, wal_settings, broker, memcached_servers, unique, tmp_path
) -> None:
    ns = f"r{unique}"
    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    await apply_namespace(wal_settings, replicated_definition(ns, servers))
    port = free_port()
    log_path = tmp_path / "region-b.log"
    region_b = RegionProcess({**wal_env, "WALSTREAM_WORKER_WEB_PORT": str(port)}, "b", log_path)
    try:

        def ready() -> Any:
            assert region_b.proc.poll() is None, log_path.read_text(errors="replace")
            answer = readyz(port)
            return answer if answer is not None and answer[0] == 200 else None

        _, body = await eventually(ready, 90, "region b's deployment ready", every=0.5)
        assert body["replication_waiting"] == []  # its writer of ``ns`` has joined
        base = int(time.time() * 1000)
        envs = [
            cache_envelope(
                "set", f"{unique}:{i}", b"v", ns=ns, ttl=0, owt_ms=base + i, token=f"t{i}"
            )
            for i in range(5)
        ]
        await publish(broker, region_topic(ns, "b"), envs)  # as the fan-out copies them
        url = f"http://127.0.0.1:{port}/metrics"

        def applied() -> Any:
            done = run_cli(wal_env, "replication", "status", ns, "--metrics", url)
            assert done.returncode == 0, done.stderr
            row = table(done.stdout)["b"]
            return row if row[:3] == ["0", "0", "5"] else None

        await eventually(
            lambda: asyncio.to_thread(applied), 90, "region b's 5 operations in its figures"
        )
    finally:
        region_b.kill()
