"""Ordering benchmark: what ``ordering = "key"`` costs against ``none``, in the same run, and
whether one key stuck on a failing head slows the other keys.

Each round runs one worker per scenario over records already on a namespace log (keyed, on their
key's partition, like the API writes them), delivering to an HTTP target
(bench/apps/ordering_target.py) on loopback. The rate is records/s accepted by the target between
5 % and 95 % done, so worker start-up is not counted; the worker has a core to itself (broker,
target and this driver share the other). Scenarios:

* ``none`` and ``key``, no failures: the cost of asking the ordering table for every record;
* ``none`` and ``key``, 10 % of the records fail their first attempt (retried after 1 ms): in key
  mode each of those blocks its key, parks the key's later records and releases them one by one;
* ``key`` with one key stuck: that key's first record fails every attempt (its backoff doubles
  from 1 ms to 1 s), so its other records stay parked; the rate of all other keys is compared
  with ``key`` without a stuck key (target: within 20 %, ratio >= 0.8).

The circuit breaker is set off (a target refusing on purpose looks down to it; tests cover it).

Usage: python bench/ordering.py [--records 20000] [--keys 1000] [--rounds 2]
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

from _faust import APPS, Rate, start_worker, stop, wait_rate
from _load import pin
from aiokafka import AIOKafkaProducer

from walstream.broker import EmbeddedBroker, free_port
from walstream.kafka.admin import ensure_topics
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.records import Envelope, Lifecycle, encode_envelope
from walstream.settings import Settings
from walstream.topology import TopicSpec

PARTITIONS = 4
STUCK_KEY = 0


def scenario(
    servers: str,
    tag: str,
    *,
    ordering: str,
    records: int,
    keys: int,
    flaky_every: int,
    stuck: bool,
    target_port: int,
    tmp: Path,
) -> Rate:
    """Run one worker over ``records`` records; return the rate the target accepted them."""
    settings = Settings(bootstrap_servers=servers, control_topic=f"walstream.namespaces.{tag}")
    ns = f"order-{tag}"
    url = f"http://127.0.0.1:{target_port}/sink"
    stuck_records = sum(1 for i in range(records) if stuck and i % keys == STUCK_KEY)

    async def setup() -> None:
        config = parse_namespace(
            {
                "name": ns,
                "ordering": ordering,
                "partitions": PARTITIONS,
                "max_attempts": 1_000,
                # a first retry after 1 ms; a head failing for long backs off up to 1 s
                "backoff": {"base_ms": 1, "multiplier": 2.0, "cap_ms": 1_000, "jitter": 0.0},
                "target": {"type": "http", "url": url},
            }
        )
        await ensure_topics(
            servers, [TopicSpec(name=t, partitions=PARTITIONS) for t in config.topics.all()]
        )
        publisher = NamespacePublisher(settings)
        await publisher.start()
        await publisher.apply(config)
        await publisher.stop()
        now = time.time_ns() // 1_000_000
        producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = []
            for i in range(records):  # round-robin over keys: each key's records in order
                key = i % keys
                payload = {"key": key, "seq": i // keys, "pad": "x" * 64}
                if stuck and key == STUCK_KEY:
                    payload["stuck"] = 1
                elif flaky_every and i % flaky_every == 1:
                    payload["flaky"] = 1
                env = Envelope(
                    f"{tag}-{i:08d}",
                    ns,
                    f"k{key}",
                    payload,
                    "json",
                    {"type": "http", "url": url},
                    Lifecycle(now, now, 0),
                    f"{tag}-{i:08d}",
                    now,
                )
                futures.append(
                    await producer.send(
                        config.topics.log, encode_envelope(env), key=f"k{key}".encode()
                    )
                )
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(setup())
    env = {
        "WALSTREAM_BOOTSTRAP_SERVERS": servers,
        "WALSTREAM_APP_ID": f"walstream-{tag}",
        "WALSTREAM_CONTROL_TOPIC": settings.control_topic,
        "WALSTREAM_DEFAULT_PARTITIONS": str(PARTITIONS),
        "WALSTREAM_STORE": "memory://",
        "WALSTREAM_DATA_DIR": str(tmp / f"wal-{tag}"),
        "WALSTREAM_WORKER_WEB_PORT": str(free_port()),
        "WALSTREAM_BROKER_SESSION_TIMEOUT_S": "2",
        "WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
        "WALSTREAM_RESUBSCRIBE_DELAY_S": "0.5",
        "WALSTREAM_BREAKER_THRESHOLD": "1000000000",
    }
    proc = start_worker("walstream.app", env, tmp / f"{tag}.log")
    try:
        return wait_rate(lambda: _accepted(target_port, ns), records - stuck_records, proc, 600)
    finally:
        stop(proc)


def _accepted(port: int, ns: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count/{ns}", timeout=5) as response:
        return int(response.read())


SCENARIOS = {
    "none": {"ordering": "none", "flaky_every": 0, "stuck": False},
    "key": {"ordering": "key", "flaky_every": 0, "stuck": False},
    "none-flaky": {"ordering": "none", "flaky_every": 10, "stuck": False},
    "key-flaky": {"ordering": "key", "flaky_every": 10, "stuck": False},
    "key-stuck": {"ordering": "key", "flaky_every": 0, "stuck": True},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    began = time.monotonic()
    target_port = free_port()
    target = subprocess.Popen([sys.executable, str(APPS / "ordering_target.py"), str(target_port)])
    pin(target.pid, 1)
    pin(os.getpid(), 1)
    rates: dict[str, list[float]] = {name: [] for name in SCENARIOS}
    try:
        with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
            pin(broker.pid or 0, 1)
            for _ in range(50):
                try:
                    _accepted(target_port, "-")
                    break
                except OSError:
                    time.sleep(0.1)
            for round_no in range(args.rounds):
                for name, options in SCENARIOS.items():
                    tag = f"r{round_no}-{name}-{os.getpid()}"
                    rate = scenario(
                        broker.bootstrap_servers,
                        tag,
                        records=args.records,
                        keys=args.keys,
                        target_port=target_port,
                        tmp=Path(tmp),
                        **options,  # type: ignore[arg-type]
                    )
                    rates[name].append(rate.records_per_s)
                    print(
                        f"round {round_no} {name:>10}: {rate.records_per_s:7.0f} records/s "
                        f"({rate.cpu_us:.0f} us CPU each; {rate.cores})",
                        flush=True,
                    )
    finally:
        stop(target)

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))

    print(
        f"key mode vs none, no failures:            ratio {ratio('key', 'none'):.2f}\n"
        f"key mode vs none, 10% first attempts fail: ratio {ratio('key-flaky', 'none-flaky'):.2f}\n"
        f"other keys with one key stuck vs none stuck (key mode): "
        f"ratio {ratio('key-stuck', 'key'):.2f} (target >= 0.80)\n"
        f"{args.records} records over {args.keys} keys x {args.rounds} rounds, "
        f"total {time.monotonic() - began:.0f}s"
    )


if __name__ == "__main__":
    main()
