"""Retry benchmark: records/s through walstream's deliver -> retry -> deliver, against a plain Faust
agent that forwards the same records topic to topic, on the same broker in the same run.

walstream delivers to an HTTP target that fails every record's first attempt (503) and accepts the
second (bench/apps/flaky_target.py); the namespace retries at once (1 ms backoff), so every record
is attempted, sent to the retry topic, read back by the retry agent and attempted again. The
baseline (bench/apps/forward.py) moves the same number of records of the same size. Each side
starts with its records already on its input topic; the rate is measured between 5 % and 95 %
of the records done, so worker start-up is not counted. The worker under test gets a core to itself
(broker, target and this driver share the other), and its CPU per record is printed too. The
circuit breaker is set off: a target failing every first attempt looks down to it (tests cover the
breaker). Target ratio: >= 0.5.

Usage: python bench/retry.py [--records 10000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from _load import cpu_seconds, pin
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from walstream.broker import EmbeddedBroker, free_port
from walstream.kafka.admin import ensure_topics
from walstream.kafka.offsets import probe_end_offsets
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.records import Envelope, Lifecycle, encode_envelope
from walstream.settings import Settings
from walstream.topology import TopicSpec

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "bench" / "apps"
PARTITIONS = 4


def _worker(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
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


def _tail(proc: subprocess.Popen[bytes], lines: int = 30) -> str:
    log = getattr(proc, "log_path", None)
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log else ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _produce(servers: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, v, partition=i % PARTITIONS) for i, v in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _end_total(servers: str, topic: str) -> int:
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


def _rate(
    count: Callable[[], int], total: int, proc: subprocess.Popen[bytes], within_s: float
) -> Rate:
    """Records/s between 5 % and 95 % done, and the worker's CPU per record meanwhile."""
    low, high = int(total * 0.05), int(total * 0.95)
    t_low = t_high = None
    cpu_low = cpu_high = 0.0
    deadline = time.monotonic() + within_s
    while t_high is None:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{_tail(proc)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done within {within_s}s:\n{_tail(proc)}")
        done = count()
        now = time.monotonic()
        if t_low is None and done >= low:
            t_low, cpu_low = now, cpu_seconds(proc.pid)
        if done >= high:
            t_high, cpu_high = now, cpu_seconds(proc.pid)
        time.sleep(0.05)
    return Rate((high - low) / max(t_high - t_low, 1e-6), (cpu_high - cpu_low) / (high - low) * 1e6)


def baseline_round(servers: str, tag: str, records: int, value_size: int, tmp: Path) -> Rate:
    src, dst = f"forward-src-{tag}", f"forward-dst-{tag}"
    asyncio.run(
        ensure_topics(servers, [TopicSpec(name=t, partitions=PARTITIONS) for t in (src, dst)])
    )
    asyncio.run(_produce(servers, src, [b"x" * value_size] * records))
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
    proc = _worker("forward", env, tmp / "forward.log")
    try:
        return _rate(lambda: asyncio.run(_end_total(servers, dst)), records, proc, 300)
    finally:
        _stop(proc)


def walstream_round(
    servers: str, tag: str, records: int, target_port: int, tmp: Path
) -> tuple[Rate, int]:
    settings = Settings(bootstrap_servers=servers, control_topic=f"walstream.namespaces.{tag}")
    ns = f"bench-{tag}"
    url = f"http://127.0.0.1:{target_port}/sink"

    async def setup() -> int:
        publisher = NamespacePublisher(settings)
        await publisher.start()
        await publisher.apply(
            parse_namespace(
                {
                    "name": ns,
                    "max_attempts": 5,
                    "backoff": {"base_ms": 1, "multiplier": 1.0, "cap_ms": 1, "jitter": 0.0},
                    "target": {"type": "http", "url": url},
                }
            )
        )
        await publisher.stop()
        now = time.time_ns() // 1_000_000
        values = [
            encode_envelope(
                Envelope(
                    f"{tag}-{i:08d}",
                    ns,
                    None,
                    {"user": "u-123", "action": "delete", "item": i},
                    "json",
                    {"type": "http", "url": url},
                    Lifecycle(now, now, 0),
                    f"{tag}-{i:08d}",
                    now,
                )
            )
            for i in range(records)
        ]
        await _produce(servers, f"wal.{ns}.log", values)
        return len(values[0])

    value_size = asyncio.run(setup())
    start_count = _accepted(target_port)
    env = {
        "WALSTREAM_BOOTSTRAP_SERVERS": servers,
        "WALSTREAM_APP_ID": f"walstream-{tag}",
        "WALSTREAM_CONTROL_TOPIC": settings.control_topic,
        "WALSTREAM_STORE": "memory://",
        "WALSTREAM_DATA_DIR": str(tmp / f"wal-{tag}"),
        "WALSTREAM_WORKER_WEB_PORT": str(free_port()),
        "WALSTREAM_BROKER_SESSION_TIMEOUT_S": "2",
        "WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
        "WALSTREAM_RESUBSCRIBE_DELAY_S": "0.5",
        # Every first attempt fails by design, so at the start the target answers nothing but
        # 503s: the circuit breaker would (rightly) take it for down. This measures retries.
        "WALSTREAM_BREAKER_THRESHOLD": "1000000000",
        "WALSTREAM_DELIVER_CONCURRENCY": os.environ.get("BENCH_CONCURRENCY", "8"),
    }
    proc = _worker("walstream.app", env, tmp / "walstream.log")
    try:
        rate = _rate(lambda: _accepted(target_port) - start_count, records, proc, 600)
    finally:
        _stop(proc)
    return rate, value_size


def _accepted(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as response:
        return int(response.read())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    began = time.monotonic()
    target_port = free_port()
    target = subprocess.Popen([sys.executable, str(APPS / "flaky_target.py"), str(target_port)])
    pin(target.pid, 1)
    pin(os.getpid(), 1)
    pairs: list[tuple[Rate, Rate]] = []
    try:
        with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
            pin(broker.pid or 0, 1)
            for _ in range(50):
                try:
                    _accepted(target_port)
                    break
                except OSError:
                    time.sleep(0.1)
            for round_no in range(args.rounds):
                tag = f"r{round_no}-{os.getpid()}"
                wal, size = walstream_round(
                    broker.bootstrap_servers, tag, args.records, target_port, Path(tmp)
                )
                base = baseline_round(broker.bootstrap_servers, tag, args.records, size, Path(tmp))
                pairs.append((base, wal))
                print(
                    f"round {round_no}: forward agent {base.records_per_s:7.0f} records/s "
                    f"({base.cpu_us:.0f} us CPU each) | walstream deliver->retry->deliver "
                    f"{wal.records_per_s:7.0f} records/s ({wal.cpu_us:.0f} us CPU each) | "
                    f"ratio {wal.records_per_s / base.records_per_s:.2f}",
                    flush=True,
                )
    finally:
        _stop(target)
    ratio = statistics.median(w.records_per_s / b.records_per_s for b, w in pairs)
    print(
        f"records/s through a failed first attempt and a retry, vs a plain Faust forward agent: "
        f"ratio {ratio:.2f} (target >= 0.50), {args.records} records x {args.rounds} rounds, "
        f"total {time.monotonic() - began:.0f}s"
    )


if __name__ == "__main__":
    main()
