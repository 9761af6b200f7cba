"""Ingest cost in instructions: server CPU work per single-record write, counted by callgrind.

The same two servers as bench/ingest.py (walstream's API and a bare aiohttp handler doing
aiokafka ``send_and_wait``) run under ``valgrind --tool=callgrind`` against the embedded broker.
Each serves a warm-up, then N requests from 64 connections; each server's count for N=640 is
subtracted from its count for N=2560. Instruction counts do not depend on what else the machine
is doing, so this ratio is repeatable where throughput ratios on a shared 2-core machine swing by
±0.1 between runs. Costs that accrue per second rather than per request (the namespace feed's
polling, timers) are inflated, because valgrind slows the server about 50 times: read the figure
as an upper bound of walstream's extra work.

Usage: python bench/ingest_ir.py   (needs valgrind; about 2 minutes)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import _read_response
from ingest import TOKEN, post_bytes  # requests carry a writer's token (auth on, as in production)

from walstream.broker import EmbeddedBroker, free_port
from walstream.core.auth import hash_token
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"
BODY = orjson.dumps({"payload": {"user": "u-123", "action": "delete", "item": 987654321}})
CONNECTIONS = 64
SMALL, LARGE = 640, 2560


async def _load(port: int, path: str, total: int) -> None:
    request = post_bytes("127.0.0.1", port, path, BODY)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(total // CONNECTIONS):
                writer.write(request)
                if await _read_response(reader) != 200:
                    raise RuntimeError("write failed")
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))


def _instructions(server: str, requests: int, servers: str, out_dir: Path) -> int:
    valgrind = shutil.which("valgrind") or "valgrind"
    port = free_port()
    env = {**os.environ, "PYTHONHASHSEED": "0", "WALSTREAM_BOOTSTRAP_SERVERS": servers}
    if server == "walstream":
        argv = [sys.executable, "-m", "walstream", "api"]
        env["WALSTREAM_API_PORT"] = str(port)
        env["WALSTREAM_TOKENS"] = f"{hash_token(TOKEN)}:writer:{NS}:bench"
        path = f"/v1/namespaces/{NS}/log"
    else:
        argv = [sys.executable, str(ROOT / "bench" / "ingest.py"), "--serve-baseline"]
        argv += [str(port), servers]
        path = "/write"
    out = out_dir / f"callgrind.{server}.{requests}"
    proc = subprocess.Popen(
        [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{server} did not start under valgrind")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        asyncio.run(_load(port, path, 128))  # warm-up: imports, connections, metadata
        asyncio.run(_load(port, path, requests))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in err.decode().splitlines():
        if "Collected" in line:
            return int(line.split()[-1])
    raise RuntimeError(f"no callgrind total for {server}")


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("bench/ingest_ir.py needs valgrind (apt-get install valgrind)")
    began = time.monotonic()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        servers = broker.bootstrap_servers

        async def setup() -> None:
            publisher = NamespacePublisher(Settings(bootstrap_servers=servers))
            await publisher.start()
            await publisher.apply(
                parse_namespace({"name": NS, "target": {"type": "kafka", "topic": "bench.out"}})
            )
            await publisher.stop()

        asyncio.run(setup())
        runs = [(s, n) for s in ("baseline", "walstream") for n in (SMALL, LARGE)]
        with ThreadPoolExecutor(2) as pool:
            counts = dict(
                zip(
                    runs,
                    pool.map(lambda run: _instructions(*run, servers, Path(tmp)), runs),
                    strict=True,
                )
            )
    per_request = {
        s: (counts[(s, LARGE)] - counts[(s, SMALL)]) / (LARGE - SMALL)
        for s in ("baseline", "walstream")
    }
    print(f"server instructions per single-record write ({CONNECTIONS} connections, callgrind):")
    print(f"  baseline (aiohttp + send_and_wait): {per_request['baseline']:9.0f}")
    print(f"  walstream WriteToLog              : {per_request['walstream']:9.0f}")
    print(f"  ratio baseline/walstream {per_request['baseline'] / per_request['walstream']:.2f}")
    print(f"total {time.monotonic() - began:.0f}s")


if __name__ == "__main__":
    main()
