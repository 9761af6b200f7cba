"""Late operations in a region's writer (issue 17: the namespace's max_lag_s and
tombstone_ttl_s), against the real broker, memcached and a worker process: an operation
written longer than max_lag_s ago is applied and counted, a set written longer than
tombstone_ttl_s ago is dead-lettered (reason older_than_tombstone_ttl) rather than applied, a
redrive of it applies it, and ``walstream replication status`` shows the counts and flags the
regions, read off the worker's /metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from walstream.records import Envelope, encode_envelope
from walstream.testing.records import namespace_definition
from walstream.testing.replication import cache_envelope, plain_get

from .conftest import apply_namespace, eventually, run_cli

pytestmark = pytest.mark.integration

#: wide margins: the "fresh" set would need 10 minutes to reach the writer to pass max_lag_s,
#: the "late" one 45 minutes to pass the tombstone TTL
MAX_LAG_S = 600
TOMB_TTL_S = 3_600

HEADER = ["region", "backlog", "dlq", "applied", "stale", "dup", "retries", "lag_p50"]
HEADER += ["lag_p99", "over_lag", "over_ttl", "flag"]


async def publish(broker: str, log: str, envs: list[Envelope]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        for env in envs:
            await producer.send_and_wait(
                log, encode_envelope(env), key=str(env.target["key"]).encode()
            )
    finally:
        await producer.stop()


def table(stdout: str) -> dict[str, list[str]]:
    """region -> its row's columns after the name, up to the flag."""
    lines = stdout.splitlines()
    assert lines[0].split()[: len(HEADER)] == HEADER
    return {line.split()[0]: line.split()[1 : len(HEADER)] for line in lines[1:]}


async def test_late_operations_are_applied_or_dead_lettered_counted_and_flagged(
    workers, wal_env, wal_settings, broker, memcached_servers, unique
) -> None:
    ns = f"l{unique}"
    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    replication = {
        "regions": {r: {"memcached": [s]} for r, s in servers.items()},
        "max_lag_s": MAX_LAG_S,
        "tombstone_ttl_s": TOMB_TTL_S,
    }
    await apply_namespace(wal_settings, namespace_definition(ns, replication=replication))
    worker = workers()
    now = int(time.time() * 1000)
    keys = {name: f"{unique}:{name}" for name in ("late", "old", "gone", "fresh")}
    envs = [
        # later than max_lag_s, within the tombstone TTL: applied, counted
        cache_envelope(
            "set", keys["late"], b"late", ns=ns, ttl=0, owt_ms=now - 900_000, token="late"
        ),
        # a set later than the tombstone TTL: dead-lettered in b and c
        cache_envelope(
            "set", keys["old"], b"old", ns=ns, ttl=0, owt_ms=now - 7_200_000, token="old"
        ),
        # a delete that late brings nothing back: applied (its tombstone), counted
        cache_envelope("delete", keys["gone"], ns=ns, owt_ms=now - 7_200_000, token="gone"),
        cache_envelope("set", keys["fresh"], b"fresh", ns=ns, ttl=0, owt_ms=now, token="fresh"),
    ]
    await publish(broker, f"wal.{ns}.log", envs)  # written in region a: b and c apply them
    url = f"http://127.0.0.1:{worker.web_port}/metrics"

    def status(want: dict[str, list[str]]) -> Any:
        done = run_cli(wal_env, "replication", "status", ns, "--metrics", url)
        assert done.returncode == 0, done.stderr
        rows = table(done.stdout)
        # backlog, dlq, applied, stale, dup, retries | over_lag, over_ttl, flag
        got = {r: rows[r][:6] + rows[r][8:] for r in want}
        return done if got == want else None

    flagged = ["0", "1", "3", "0", "0", "0", "3", "1", "TTL"]
    done = await eventually(
        lambda: asyncio.to_thread(
            status, {"a": [*["0"] * 6, "0", "0", "ok"], "b": flagged, "c": flagged}
        ),
        180,
        f"the late operations counted in b and c\n{worker.log_tail()}",
    )
    for region in ("b", "c"):
        assert (
            f"region {region}: 3 operation(s) settled later than max_lag_s (600 s)" in done.stderr
        )
        assert "1 dead-lettered (reason older_than_tombstone_ttl" in done.stderr
    held = await asyncio.to_thread(plain_get, servers["b"], [k.encode() for k in keys.values()])
    assert keys["late"].encode() in held
    assert keys["fresh"].encode() in held
    assert keys["old"].encode() not in held  # the late set was not applied
    assert "settled later than max_lag_s (600 s)" in worker.log_path.read_text(errors="replace")

    # the operator redrives region b's entry: its writer applies it, counted as applied late
    redriven = await asyncio.to_thread(
        run_cli, wal_env, "dlq", "redrive", ns, "--region", "b", "--id", "id-old"
    )
    assert redriven.returncode == 0, redriven.stderr
    await eventually(
        lambda: asyncio.to_thread(
            status,
            {
                "b": ["0", "0", "4", "0", "0", "0", "4", "2", "TTL"],
                "c": flagged,  # c's entry stays until someone decides
            },
        ),
        180,
        f"the redriven set applied in b\n{worker.log_tail()}",
    )
    held = await asyncio.to_thread(plain_get, servers["b"], [keys["old"].encode()])
    assert held[keys["old"].encode()].endswith(b"old")
