"""What the worker benchmarks share: running a Faust worker pinned to its own core, counting what
reached a topic, timing a run between 5 % and 95 % done, and the baseline forward agent."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from _load import core_busy, core_times, cpu_seconds, pin
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from walstream.broker import free_port
from walstream.kafka.admin import ensure_topics
from walstream.kafka.offsets import probe_end_offsets
from walstream.topology import TopicSpec

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "bench" / "apps"
PARTITIONS = 4


def start_worker(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", module, "worker", "-l", "warn"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": f"{APPS}:{ROOT}", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc.log_path = log  # type: ignore[attr-defined]
    pin(proc.pid, 0)  # the worker under test has a core to itself; broker and target the other
    return proc


def tail(proc: subprocess.Popen[bytes], lines: int = 30) -> str:
    log = getattr(proc, "log_path", None)
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log else ""


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def produce(servers: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, v, partition=i % PARTITIONS) for i, v in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def end_total(servers: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        reported = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return sum((await probe_end_offsets(servers, reported, within_s=2)).values())


class Rate(NamedTuple):
    records_per_s: float
    #: worker CPU per record over the same window
    cpu_us: float
    #: how busy each core was meanwhile (is the worker, or what it waits for, the limit?)
    cores: str = ""


def wait_rate(
    count: Callable[[], int], total: int, proc: subprocess.Popen[bytes], within_s: float
) -> Rate:
    """Records/s between 5 % and 95 % done, and the worker's CPU per record meanwhile."""
    low, high = int(total * 0.05), int(total * 0.95)
    t_low = t_high = None
    cpu_low = cpu_high = 0.0
    cores_low = cores_high = core_times()
    deadline = time.monotonic() + within_s
    while t_high is None:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{tail(proc)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done within {within_s}s:\n{tail(proc)}")
        done = count()
        now = time.monotonic()
        if t_low is None and done >= low:
            t_low, cpu_low, cores_low = now, cpu_seconds(proc.pid), core_times()
        if done >= high:
            t_high, cpu_high, cores_high = now, cpu_seconds(proc.pid), core_times()
        time.sleep(0.05)
    return Rate(
        (high - low) / max(t_high - t_low, 1e-6),
        (cpu_high - cpu_low) / (high - low) * 1e6,
        core_busy(cores_low, cores_high),
    )


def forward_round(servers: str, tag: str, records: int, value_size: int, tmp: Path) -> Rate:
    src, dst = f"forward-src-{tag}", f"forward-dst-{tag}"
    asyncio.run(
        ensure_topics(servers, [TopicSpec(name=t, partitions=PARTITIONS) for t in (src, dst)])
    )
    asyncio.run(produce(servers, src, [b"x" * value_size] * records))
    env = {
        "WALSTREAM_BOOTSTRAP_SERVERS": servers,
        "WALSTREAM_STORE": "memory://",
        "WALSTREAM_DATA_DIR": str(tmp / f"fwd-{tag}"),
        "WALSTREAM_WORKER_WEB_PORT": str(free_port()),
        "WALSTREAM_BROKER_SESSION_TIMEOUT_S": "2",
        "WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
        "FORWARD_APP_ID": f"forward-{tag}",
        "FORWARD_SRC": src,
        "FORWARD_DST": dst,
    }
    proc = start_worker("forward", env, tmp / "forward.log")
    try:
        return wait_rate(lambda: asyncio.run(end_total(servers, dst)), records, proc, 300)
    finally:
        stop(proc)
