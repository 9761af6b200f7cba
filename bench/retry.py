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
from pathlib import Path

from _faust import APPS, Rate, forward_round, produce, start_worker, stop, wait_rate
from _load import pin

from walstream.broker import EmbeddedBroker, free_port
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.records import Envelope, Lifecycle, encode_envelope
from walstream.settings import Settings


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
        await produce(servers, f"wal.{ns}.log", values)
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
    }
    proc = start_worker("walstream.app", env, tmp / "walstream.log")
    try:
        rate = wait_rate(lambda: _accepted(target_port) - start_count, records, proc, 600)
    finally:
        stop(proc)
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
                base = forward_round(broker.bootstrap_servers, tag, args.records, size, Path(tmp))
                pairs.append((base, wal))
                print(
                    f"round {round_no}: forward agent {base.records_per_s:7.0f} records/s "
                    f"({base.cpu_us:.0f} us CPU each; {base.cores}) | walstream "
                    f"deliver->retry->deliver {wal.records_per_s:7.0f} records/s "
                    f"({wal.cpu_us:.0f} us CPU each; {wal.cores}) | "
                    f"ratio {wal.records_per_s / base.records_per_s:.2f}",
                    flush=True,
                )
    finally:
        stop(target)
    ratio = statistics.median(w.records_per_s / b.records_per_s for b, w in pairs)
    print(
        f"records/s through a failed first attempt and a retry, vs a plain Faust forward agent: "
        f"ratio {ratio:.2f} (target >= 0.50), {args.records} records x {args.rounds} rounds, "
        f"total {time.monotonic() - began:.0f}s"
    )


if __name__ == "__main__":
    main()
