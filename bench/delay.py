"""Delay-queue benchmark: one worker holding a million pending records, measured while records
come due: worker peak RSS, delivery lateness, and the due-record delivery rate as a ratio to a
plain Faust forward agent, on the same broker in the same run.

Records are written the way the API writes them (``route_write`` + ``KafkaLogProducer.send_many``:
straight to the delay tiers, addressed back to the namespace's log), to a namespace whose target
is a Kafka topic. The target topic's record timestamps are the delivery times; each record carries
its due time (``X-Wal-Deliver-At``), so lateness = delivery time - due time, per record.

* backlog: ``--records`` minus the two sets below, due 1 h to 1 h 10 min out: pending throughout;
* slice: ``--slice`` records due uniformly over ``--window-s`` seconds, starting once everything
  is enqueued: lateness p50/p99/max and "never early" are measured on these (and the burst);
* burst: ``--burst`` records written after the slice was delivered, all due 1.5 s later at one
  instant: the delivery rate between 5 % and 95 % of them delivered, against the forward agent
  moving as many records.

The worker has a core to itself (broker and this driver share the other). Peak RSS is the
kernel's high-water mark for the worker process (VmHWM). Targets: RSS <= 256 MB, lateness
p99 <= 50 ms, never early.

Usage: python bench/delay.py [--records 1000000] [--slice 30000] [--window-s 60] [--burst 20000]
With BENCH_LATE_SECONDS=1 it also lists the seconds of the slice window with a record > 50 ms late.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _faust import PARTITIONS, end_total, forward_round, start_worker, stop, tail, wait_rate
from _load import cpu_seconds, pin
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from walstream.broker import EmbeddedBroker, free_port
from walstream.core.outbox import route_write
from walstream.kafka.admin import ensure_topics
from walstream.kafka.producer import KafkaLogProducer
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.records import Envelope, Lifecycle, decode_envelope, encode_envelope
from walstream.settings import Settings
from walstream.topology import TopicSpec

HOUR_MS = 3_600_000
DUMP: list[tuple[int, int]] = []


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def envelope(record_id: str, ns: str, out: str, key: str, due_ms: int, now: int) -> Envelope:
    return Envelope(
        record_id,
        ns,
        key,
        {"user": "u-123", "action": "delete"},
        "json",
        {"type": "kafka", "topic": out},
        Lifecycle(due_ms, now, due_ms - now),
        record_id,
        now,
    )


async def enqueue(
    producer: KafkaLogProducer, app_id: str, ns: str, out: str, specs: list[tuple[str, int]]
) -> None:
    """Write (id, due) records as the API would, 20k per batch call, 4 calls at a time."""
    log = f"wal.{ns}.log"
    chunk = 20_000
    gate = asyncio.Semaphore(4)

    async def one(part: list[tuple[str, int]]) -> None:
        async with gate:
            now = now_ms()
            outgoing = [
                route_write(envelope(i, ns, out, f"k{n % 10_000}", due, now), log, now, app_id)
                for n, (i, due) in enumerate(part)
            ]
            errors = await producer.send_many(outgoing)
            failed = [e for e in errors if e is not None]
            if failed:
                raise RuntimeError(f"{len(failed)} writes failed: {failed[0]}")

    await asyncio.gather(*(one(specs[s : s + chunk]) for s in range(0, len(specs), chunk)))


async def lateness_of(
    servers: str, topic: str, prefixes: tuple[str, ...], *, envelopes: bool = False
) -> dict[str, int]:
    """Record time - due time (ms) of each record in ``topic`` whose id has one of ``prefixes``:
    delivered records (the target topic), or with ``envelopes``, records back on the log."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    out: dict[str, int] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        idle = 0
        while idle < 10:
            batches = await consumer.getmany(timeout_ms=200, max_records=50_000)
            idle = 0 if batches else idle + 1
            for records in batches.values():
                for record in records:
                    if envelopes:
                        env = decode_envelope(record.value)
                        record_id, due = env.id, env.lifecycle.deliver_at_ms
                    else:
                        headers = dict(record.headers)
                        record_id = headers["X-Wal-Id"].decode()
                        due = int(headers["X-Wal-Deliver-At"])
                    if record_id.startswith(prefixes) and record_id not in out:
                        out[record_id] = record.timestamp - due
                        if os.environ.get("BENCH_LATE_SECONDS"):
                            DUMP.append((due, record.timestamp - due))
    finally:
        await consumer.stop()
    return out


def metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return None


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def wait_count(servers: str, topic: str, count: int, proc: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while asyncio.run(end_total(servers, topic)) < count:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{tail(proc)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{topic}: fewer than {count} records within {within_s}s")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--slice", type=int, default=30_000)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--burst", type=int, default=20_000)
    args = parser.parse_args()
    backlog_n = args.records - args.slice - args.burst
    if backlog_n < 0:
        parser.error("--records must be at least --slice + --burst")
    began = time.monotonic()
    pin(os.getpid(), 1)
    rng = random.Random(1)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        servers = broker.bootstrap_servers
        pin(broker.pid or 0, 1)
        tag = f"d{os.getpid()}"
        app_id = f"walstream-{tag}"
        ns, out = f"bench-{tag}", f"bench.delay.out.{tag}"
        settings = Settings(bootstrap_servers=servers, control_topic=f"walstream.ns.{tag}")

        async def setup() -> None:
            await ensure_topics(servers, [TopicSpec(name=out, partitions=PARTITIONS)])
            publisher = NamespacePublisher(settings)
            await publisher.start()
            await publisher.apply(
                parse_namespace(
                    {
                        "name": ns,
                        "max_delay_ms": 2 * HOUR_MS,
                        "target": {"type": "kafka", "topic": out},
                    }
                )
            )
            await publisher.stop()

        asyncio.run(setup())
        web_port = free_port()
        env = {
            "WALSTREAM_BOOTSTRAP_SERVERS": servers,
            "WALSTREAM_APP_ID": app_id,
            "WALSTREAM_CONTROL_TOPIC": settings.control_topic,
            "WALSTREAM_STORE": "memory://",
            "WALSTREAM_DATA_DIR": str(tmp / "wal"),
            "WALSTREAM_WORKER_WEB_PORT": str(web_port),
            "WALSTREAM_BROKER_SESSION_TIMEOUT_S": "2",
            "WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
            "WALSTREAM_RESUBSCRIBE_DELAY_S": "0.5",
        }
        proc = start_worker("walstream.app", env, tmp / "walstream.log")
        try:

            async def write(specs: list[tuple[str, int]]) -> None:
                producer = KafkaLogProducer(servers, timeout_s=120)
                await producer.start()
                try:
                    await enqueue(producer, app_id, ns, out, specs)
                finally:
                    await producer.stop()

            asyncio.run(write([("probe", now_ms())]))  # the worker is up once this is delivered
            wait_count(servers, out, 1, proc, 120)
            print(f"worker up after {time.monotonic() - began:.0f}s", flush=True)

            t0 = time.monotonic()
            base = now_ms() + HOUR_MS
            backlog = [(f"k-{i}", base + rng.randrange(600_000)) for i in range(backlog_n)]
            asyncio.run(write(backlog))
            enqueue_s = time.monotonic() - t0
            print(
                f"enqueued {backlog_n} backlog records in {enqueue_s:.0f}s "
                f"({backlog_n / max(enqueue_s, 1e-6):.0f}/s)",
                flush=True,
            )
            start = now_ms() + 10_000
            window_ms = int(args.window_s * 1000)
            slice_ = [(f"s-{i}", start + rng.randrange(window_ms)) for i in range(args.slice)]
            asyncio.run(write(slice_))
            time.sleep(6)  # the stage refreshes its estimate every 5 s; the slice starts at +10 s
            pending = metric(web_port, "walstream_delay_pending_records")
            print(f"slice enqueued; delay stage reports {pending} pending", flush=True)
            t_slice = time.monotonic()
            cpu0 = (cpu_seconds(proc.pid), cpu_seconds(broker.pid or 0))
            wait_count(servers, out, 1 + args.slice, proc, args.window_s + 60)
            spent = time.monotonic() - t_slice
            busy = [
                (cpu_seconds(pid) - c) / spent * 100
                for pid, c in zip((proc.pid, broker.pid or 0), cpu0, strict=True)
            ]
            print(
                f"slice delivered; CPU meanwhile: worker {busy[0]:.0f}%, broker {busy[1]:.0f}% "
                "of a core; the burst next",
                flush=True,
            )

            # The burst after the slice, so that measuring one does not load the other; due
            # 1.5 s out, so it waits in the timer tier and the heap and comes due all at once.
            burst = [(f"b-{i}", now_ms() + 1_500) for i in range(args.burst)]
            asyncio.run(write(burst))
            before = 1 + args.slice
            wal = wait_rate(
                lambda: asyncio.run(end_total(servers, out)) - before,
                args.burst,
                proc,
                args.window_s + 300,
            )
            rss = peak_rss_mb(proc.pid)
            lateness = list(asyncio.run(lateness_of(servers, out, ("s-", "b-"))).values())
            delivered = asyncio.run(lateness_of(servers, out, ("s-",)))
            on_log = asyncio.run(lateness_of(servers, f"wal.{ns}.log", ("s-",), envelopes=True))
            slice_lateness = list(delivered.values())
            stage = [on_log[i] for i in delivered if i in on_log]
            agent = [delivered[i] - on_log[i] for i in delivered if i in on_log]
        finally:
            stop(proc)
        size = len(encode_envelope(envelope("b-0", ns, out, "k0", 0, 0)))
        forward = forward_round(servers, tag, args.burst, size, tmp)

    if DUMP:
        by_second: dict[int, int] = {}
        for due, late in DUMP:
            by_second[due // 1000] = max(by_second.get(due // 1000, 0), late)
        first = min(by_second)
        print(
            "late seconds:",
            [(sec - first, late) for sec, late in sorted(by_second.items()) if late > 50],
        )
    early = sum(1 for x in lateness if x < 0)
    due_rate = args.slice / args.window_s
    print(
        f"pending held: {args.records} records (delay stage estimate {pending}); "
        f"worker peak RSS {rss:.0f} MB (target <= 256)\n"
        f"lateness over {len(slice_lateness)} slice records due at ~{due_rate:.0f}/s: "
        f"p50 {pct(slice_lateness, 0.5):.0f} ms, p99 {pct(slice_lateness, 0.99):.0f} ms, "
        f"max {max(slice_lateness)} ms (target p99 <= 50); of which the delay stage (due -> back "
        f"on the log) p50 {pct(stage, 0.5):.0f} p99 {pct(stage, 0.99):.0f} ms, and the deliver "
        f"agent (log -> target) p50 {pct(agent, 0.5):.0f} p99 {pct(agent, 0.99):.0f} ms\n"
        f"delivered early, of all {len(lateness)} slice and burst records: {early} (target 0)\n"
        f"burst of {args.burst} due at once: walstream {wal.records_per_s:.0f} records/s "
        f"({wal.cpu_us:.0f} us CPU each) vs forward agent {forward.records_per_s:.0f} records/s "
        f"({forward.cpu_us:.0f} us CPU each): ratio {wal.records_per_s / forward.records_per_s:.2f}"
        f"\ntotal {time.monotonic() - began:.0f}s"
    )


if __name__ == "__main__":
    main()
