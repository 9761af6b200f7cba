"""Ingest benchmark: WriteToLog against baselines measured in the same run, on the same broker.

1. Single-record HTTP WriteToLog (requests/s, p50, p99) vs a bare aiohttp handler that only does
   aiokafka ``send_and_wait`` (acks=all). Target: ratio >= 0.9.
2. Batch WriteToLog (records/s) vs raw batched aiokafka produce (acks=all, <=10k in flight) of
   records of the same size. Target: ratio >= 0.5.

Runs in under 2 minutes and prints figures and ratios (absolute numbers mean little on a shared
machine).
Usage: python bench/ingest.py [--seconds 4] [--connections 8,64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import LoadResult, cpu_seconds, pin, run_load
from _load import post_bytes as _post_bytes

from walstream.broker import EmbeddedBroker, free_port
from walstream.core.auth import hash_token, new_token
from walstream.kafka.admin import ensure_topics
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.settings import Settings
from walstream.topology import TopicSpec

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"
PAYLOAD = {"user": "u-123", "action": "delete", "item": 987654321}
BATCH_SIZE = 500
BATCH_RECORDS = 100_000
#: walstream serves with auth on, as in production: every request carries a writer's token (the
#: baseline gets the same header and ignores it, so both parse requests of the same size).
TOKEN = new_token()


def post_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    auth = f"\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
    return _post_bytes(host, port, path, body).replace(b"\r\n", auth, 1)


def serve_baseline(port: int, servers: str) -> None:
    """The bare handler: read the body, send_and_wait it with acks=all, answer 200."""
    from aiohttp import web

    async def make_app() -> web.Application:
        producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=0)

        async def kafka(app: web.Application):
            await producer.start()
            yield
            await producer.stop()

        async def handler(request: web.Request) -> web.Response:
            await producer.send_and_wait("bench.baseline", await request.read())
            return web.json_response({"durable": "TRUE"})

        async def ready(request: web.Request) -> web.Response:
            return web.json_response({"status": "ready"})

        app = web.Application()
        app.cleanup_ctx.append(kafka)
        app.router.add_post("/write", handler)
        app.router.add_get("/readyz", ready)
        return app

    web.run_app(make_app(), host="127.0.0.1", port=port, access_log=None, print=None)


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited at start")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready")


def _start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_ready(port, proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def raw_batched_produce(servers: str, value: bytes, count: int) -> float:
    """records/s of plain aiokafka produce with acks=all and up to 10k in flight."""
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, acks="all", linger_ms=0, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        await (await producer.send("bench.raw", value))  # metadata, connection
        started = time.perf_counter()
        in_flight: list[asyncio.Future[object]] = []
        for _ in range(count):
            in_flight.append(await producer.send("bench.raw", value))
            if len(in_flight) >= 10_000:
                await asyncio.gather(*in_flight)
                in_flight.clear()
        await asyncio.gather(*in_flight)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def batch_write_to_log(port: int, count: int, concurrency: int = 4) -> float:
    """records/s through POST /log:batch with ``concurrency`` requests in flight."""
    body = orjson.dumps({"records": [{"payload": PAYLOAD}] * BATCH_SIZE})
    request = post_bytes("127.0.0.1", port, f"/v1/namespaces/{NS}/log:batch", body)
    per_connection = count // (BATCH_SIZE * concurrency)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(per_connection):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                answer = orjson.loads(await reader.readexactly(length))
                if head[9:12] != b"200" or any(r["durable"] != "TRUE" for r in answer["results"]):
                    raise RuntimeError("batch write failed")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return per_connection * concurrency * BATCH_SIZE / (time.perf_counter() - started)


def _single_round(
    port: int, pid: int, path: str, body: bytes, connections: int, seconds: float
) -> LoadResult:
    request = post_bytes("127.0.0.1", port, path, body)
    return asyncio.run(
        run_load(
            "127.0.0.1",
            port,
            request,
            connections=connections,
            seconds=seconds,
            warmup_s=1.0,
            probe=lambda: cpu_seconds(pid),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", default="8,64", help="comma-separated concurrencies")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve-baseline", nargs=2, metavar=("PORT", "SERVERS"))
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(int(args.serve_baseline[0]), args.serve_baseline[1])
        return
    concurrencies = [int(c) for c in args.connections.split(",")]

    began = time.monotonic()
    with EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        pin(broker.pid or 0, 1)
        pin(os.getpid(), 1)  # the load generator
        settings = Settings(bootstrap_servers=servers)

        async def setup() -> None:
            # The baseline's topic is shaped like the namespace's log (its partition count
            # decides how aiokafka batches concurrent sends), not left to auto-creation.
            await ensure_topics(
                servers,
                [TopicSpec(name="bench.baseline", partitions=settings.default_partitions)],
            )
            publisher = NamespacePublisher(settings)
            await publisher.start()
            await publisher.apply(
                parse_namespace({"name": NS, "target": {"type": "kafka", "topic": "bench.out"}})
            )
            await publisher.stop()

        asyncio.run(setup())
        env = {**os.environ, "WALSTREAM_BOOTSTRAP_SERVERS": servers}
        env["WALSTREAM_TOKENS"] = f"{hash_token(TOKEN)}:writer:{NS}:bench"
        base_port, wal_port = free_port(), free_port()
        env["WALSTREAM_API_PORT"] = str(wal_port)
        baseline = _start([__file__, "--serve-baseline", str(base_port), servers], env, base_port)
        walstream = _start(["-m", "walstream", "api"], env, wal_port)
        pin(baseline.pid, 0)
        pin(walstream.pid, 0)
        single_body = orjson.dumps({"payload": PAYLOAD})
        try:
            # (baseline, walstream) pairs per round, interleaved so drift in machine load hits both
            pairs: dict[int, list[tuple[LoadResult, LoadResult]]] = {c: [] for c in concurrencies}
            for connections in concurrencies:
                for _ in range(args.rounds):
                    base = _single_round(
                        base_port, baseline.pid, "/write", single_body, connections, args.seconds
                    )
                    wal = _single_round(
                        wal_port,
                        walstream.pid,
                        f"/v1/namespaces/{NS}/log",
                        single_body,
                        connections,
                        args.seconds,
                    )
                    pairs[connections].append((base, wal))
            raw_rates, batch_rates = [], []
            record_size = len(orjson.dumps({"v": 1, "payload": PAYLOAD})) + 300  # envelope-sized
            for _ in range(args.rounds):
                raw_rates.append(
                    asyncio.run(raw_batched_produce(servers, b"x" * record_size, BATCH_RECORDS))
                )
                batch_rates.append(asyncio.run(batch_write_to_log(wal_port, BATCH_RECORDS)))
        finally:
            _stop(walstream)
            _stop(baseline)

    print(
        "single-record WriteToLog vs aiohttp + send_and_wait, "
        f"{args.rounds} rounds x {args.seconds:.0f}s"
    )
    for connections, runs in pairs.items():
        med = statistics.median
        b_rate, w_rate = med(b.rate for b, _ in runs), med(w.rate for _, w in runs)
        b50, w50 = med(b.p50 for b, _ in runs), med(w.p50 for _, w in runs)
        b99, w99 = med(b.pct(0.99) for b, _ in runs), med(w.pct(0.99) for _, w in runs)
        errors = sum(b.errors + w.errors for b, w in runs)
        ratio = med(w.rate / b.rate for b, w in runs)
        print(
            f"  {connections:3d} connections: baseline {b_rate:7.0f} req/s p50 {b50:6.2f} ms "
            f"p99 {b99:6.2f} ms | walstream {w_rate:7.0f} req/s p50 {w50:6.2f} ms "
            f"p99 {w99:6.2f} ms | non-200 {errors}"
        )
        b_cpu = med(b.probed_per_request_us for b, _ in runs)
        w_cpu = med(w.probed_per_request_us for _, w in runs)
        print(
            f"      ratio req/s {ratio:.2f} (target >= 0.90; per round "
            f"{', '.join(f'{w.rate / b.rate:.2f}' for b, w in runs)})  "
            f"p50 x{w50 / b50:.2f}  p99 x{w99 / b99:.2f}"
        )
        print(
            f"      server CPU per request: baseline {b_cpu:.0f} us, walstream {w_cpu:.0f} us, "
            f"ratio {b_cpu / w_cpu:.2f} (per round "
            + ", ".join(f"{b.probed_per_request_us / w.probed_per_request_us:.2f}" for b, w in runs)
            + ")"
        )
    raw, batch = statistics.median(raw_rates), statistics.median(batch_rates)
    print(f"batch, {BATCH_SIZE} records/request, {BATCH_RECORDS} records per round:")
    print(f"  raw batched aiokafka produce: {raw:8.0f} records/s")
    print(f"  batch WriteToLog            : {batch:8.0f} records/s")
    print(f"  ratio {batch / raw:.2f} (target >= 0.50)")
    print(f"total {time.monotonic() - began:.0f}s")


if __name__ == "__main__":
    main()
