"""What one hostile request costs the API: peak RSS growth and the longest event-loop stall.

Each case runs in a fresh process: the real API (in-memory producer, one namespace with the
default 1 MiB payload limit, auth off) on a loopback port, a 5 ms ticker on its loop, and one
client thread that sends the request over a blocking socket and reads the answer.

Cases (the bodies decode to as many Python objects as their bytes allow: ``[{},{},...]``):
  single16  a single write of 16 MiB (WALSTREAM_MAX_REQUEST_BYTES)
  single1   a single write just under 1 MB (the single-write limit since issue 14)
  batch16   a batch of 16 MiB (WALSTREAM_MAX_REQUEST_BYTES bounds batches)
  batch4    a batch of 4 MiB (what a lower WALSTREAM_MAX_REQUEST_BYTES would allow)
Usage: python bench/request_cost.py [case ...]   (prints one line per case)
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import subprocess
import sys
import time

SIZES = {
    "single16": 16 * 1024 * 1024,
    "single1": 999_000,
    "batch16": 16 * 1024 * 1024,
    "batch4": 4 * 1024 * 1024,
}


def _body(case: str) -> tuple[str, bytes]:
    size = SIZES[case]
    if case.startswith("batch"):
        head, tail = b'{"records":[{"payload":[', b"]}]}"
        path = "/v1/namespaces/bench/log:batch"
    else:
        head, tail = b'{"payload":[', b"]}"
        path = "/v1/namespaces/bench/log"
    n = (size - len(head) - len(tail) + 1) // 3
    return path, head + b"{}," * (n - 1) + b"{}" + tail  # no list of parts: no peak before


def _send(port: int, path: str, body: bytes, out: dict[str, object]) -> None:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        sock.settimeout(60)
        try:
            sock.sendall(head)
            sock.sendall(body)  # not head + body: a copy would count as the server's memory
        except OSError as exc:  # refused early and closed: read the answer anyway
            out["send_error"] = type(exc).__name__
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    out["seconds"] = round(time.perf_counter() - start, 3)
    out["status"] = int(answer.split(b" ", 2)[1]) if answer else None
    out["answer"] = answer.split(b"\r\n\r\n", 1)[-1][:160].decode(errors="replace")


async def _serve(case: str) -> dict[str, object]:
    from aiohttp import web

    from walstream.api.app import create_api
    from walstream.api.deps import ApiDeps
    from walstream.core.limits import InFlightLimiter
    from walstream.kafka.producer import MemoryLogProducer
    from walstream.namespaces.config import parse_namespace
    from walstream.namespaces.registry import NamespaceRegistry, encode_event
    from walstream.settings import Settings

    registry = NamespaceRegistry()
    config = parse_namespace({"name": "bench", "target": {"type": "kafka", "topic": "out"}})
    registry.apply(*encode_event(config, 1))
    fields = Settings.__dataclass_fields__
    settings = Settings(**({"auth": False} if "auth" in fields else {}))
    deps = ApiDeps(
        settings=settings,
        registry=registry,
        producer=MemoryLogProducer(),
        limiter=InFlightLimiter(settings.max_in_flight),
    )
    api = create_api(deps)
    runner = web.ServerRunner(api.server())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    path, body = _body(case)
    worst = 0.0
    stop = False

    async def tick() -> None:
        nonlocal worst
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not stop:
            await asyncio.sleep(0.005)
            now = loop.time()
            worst = max(worst, now - last - 0.005)
            last = now

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0.2)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict[str, object] = {"case": case, "body_bytes": len(body)}
    loop = asyncio.get_running_loop()
    # the client is a thread: its sending and reading take none of the API's loop
    await loop.run_in_executor(None, _send, port, path, body, out)
    del body
    await asyncio.sleep(0.1)
    stop = True
    await ticker
    await runner.cleanup()
    out["peak_rss_growth_mib"] = round(
        (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1
    )
    out["worst_loop_stall_ms"] = round(worst * 1000, 1)
    return out


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "--one":
        print(json.dumps(asyncio.run(_serve(argv[1]))))
        return
    for case in argv or list(SIZES):
        subprocess.run([sys.executable, __file__, "--one", case], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
