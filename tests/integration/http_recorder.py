"""A real HTTP server on loopback (own thread) recording what walstream POSTs; fails on demand."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from walstream.broker import free_port


@dataclass
class Received:
    at: float  # time.time() when the request arrived
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class HttpRecorder:
    """``recorder.url`` answers POSTs; ``fail_next(n, status)`` or ``fail_always(status)``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/sink"
        self.received: list[Received] = []
        self._fail_next = 0
        self._fail_status = 503
        self._fail_always: int | None = None
        self._fail_fraction = 0.0
        self._fail_matching: bytes | None = None
        self._answer_matching: tuple[bytes, int] | None = None
        self._delay_matching: tuple[bytes, float] | None = None
        self._random = random.Random(0)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> HttpRecorder:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("recorder did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            if self._stopping is not None:
                self._loop.call_soon_threadsafe(self._stopping.set)
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if self._loop is not None:
            self._loop.close()

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._fail_next, self._fail_status = count, status

    def fail_always(self, status: int | None) -> None:
        with self._lock:
            self._fail_always = status

    def fail_randomly(self, fraction: float, status: int = 503, *, seed: int = 0) -> None:
        """Fail each request with probability ``fraction`` (0: stop)."""
        with self._lock:
            self._fail_fraction, self._fail_status = fraction, status
            self._random = random.Random(seed)

    def fail_matching(self, needle: bytes | None, status: int = 503) -> None:
        """Fail every request whose body contains ``needle`` (None: stop)."""
        with self._lock:
            self._fail_matching, self._fail_status = needle, status

    def answer_matching(self, needle: bytes | None, status: int = 422) -> None:
        """Answer ``status`` to every request whose body contains ``needle`` (None: stop), ahead of
        ``fail_next``, ``fail_matching`` and ``fail_randomly`` and with its own status (a
        permanent refusal of marked records while the others fail at random)."""
        with self._lock:
            self._answer_matching = None if needle is None else (needle, status)

    def delay_matching(self, needle: bytes | None, seconds: float = 0.0) -> None:
        """Answer every request whose body contains ``needle`` only after ``seconds`` (None:
        stop); the request is recorded when it arrives."""
        with self._lock:
            self._delay_matching = None if needle is None else (needle, seconds)

    def _should_fail(self, body: bytes) -> bool:
        if self._fail_matching is not None and self._fail_matching in body:
            return True
        return bool(self._fail_fraction) and self._random.random() < self._fail_fraction

    def successes(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            if self._fail_always is not None:
                status = self._fail_always
            elif self._answer_matching is not None and self._answer_matching[0] in body:
                status = self._answer_matching[1]
            elif self._fail_next > 0:
                self._fail_next -= 1
                status = self._fail_status
            elif self._should_fail(body):
                status = self._fail_status
            else:
                status = 200
            self.received.append(
                Received(time.time(), request.path, dict(request.headers), body, status)
            )
            slow = self._delay_matching
        if slow is not None and slow[0] in body and self._stopping is not None:
            # stop() ends the wait: the server's cleanup would otherwise wait for it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), slow[1])
        return web.Response(status=status, text="ok" if status == 200 else "no")

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def attempts_of(records: list[Received], record_id: str) -> list[int]:
    return [int(r.headers["X-Wal-Attempt"]) for r in records if r.headers["X-Wal-Id"] == record_id]


def header(record: Received, name: str) -> Any:
    return record.headers.get(name)
