"""A light keep-alive HTTP/1.1 load generator (lighter than an HTTP client library, so on a small
machine the server, not the generator, is what the figures measure)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


#: The cores this benchmark may use, read before anything is pinned (children inherit pinning).
_CPUS = sorted(os.sched_getaffinity(0))


def pin(pid: int, cpu: int) -> None:
    """Give the process under test one core and everything else the other, when there are two:
    the baseline and walstream then compete on equal terms, not with the load generator."""
    if len(_CPUS) >= 2:
        os.sched_setaffinity(pid, {_CPUS[cpu]})


def core_times() -> dict[int, tuple[float, float]]:
    """(busy, total) jiffies per core so far (Linux /proc/stat)."""
    out = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                values = [float(v) for v in fields[:8]]
                idle = values[3] + values[4]
                out[int(name[3:])] = (sum(values) - idle, sum(values))
    return out


def core_busy(before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]) -> str:
    """How busy each core was between two ``core_times()`` readings, e.g. 'cpu0 64%, cpu1 97%'."""
    parts = []
    for core in sorted(after):
        busy = after[core][0] - before[core][0]
        total = after[core][1] - before[core][1]
        parts.append(f"cpu{core} {100 * busy / total:.0f}%" if total else f"cpu{core} ?")
    return ", ".join(parts)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    #: what ``probe`` moved by during the measured window (e.g. server CPU seconds)
    probed: float = float("nan")

    @property
    def probed_per_request_us(self) -> float:
        return self.probed / self.requests * 1e6 if self.requests else float("nan")

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


def post_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def run_load(
    host: str,
    port: int,
    request: bytes,
    *,
    connections: int,
    seconds: float,
    warmup_s: float,
    probe: Callable[[], float] | None = None,
) -> LoadResult:
    """Each connection sends ``request`` back to back; counts 200s after the warm-up.

    ``probe`` (if given) is read when the measured window opens and when it closes.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup_s
    stop_at = measure_from + seconds
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    probes: list[float] = []

    def sample(now: float) -> None:
        if probe is not None and len(probes) < 2 and now >= (measure_from, stop_at)[len(probes)]:
            probes.append(probe())

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                sent = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                now = loop.time()
                sample(now)
                if now >= stop_at:
                    return
                if now >= measure_from:
                    if status == 200:
                        counts["ok"] += 1
                        latencies.append((time.perf_counter() - sent) * 1000)
                    else:
                        counts["errors"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    probed = probes[1] - probes[0] if len(probes) == 2 else float("nan")
    return LoadResult(counts["ok"], counts["errors"], seconds, latencies, probed)
