"""Concurrent handling that keeps each key's records in order.

Faust's ``concurrency=N`` runs N actors over one stream: records of one key can then overtake
each other, and a WAL's targets (databases, caches) need a key's writes in turn. So each agent
runs one actor that hands records to a ``KeyedDispatcher``: up to ``limit`` records delivering at
once, one at a time per key. Records without a key are not ordered.

A record may be held until a time (``not_before_ms``: a delayed record handed over just before it
is due). Within a key, records run in due order: a record due earlier than one held goes first,
also when it arrived later (the delay stage hands records over ahead of time, and two of a key
due within that lead may reach the log in either order); records not held count as due now, and
equal due times keep arrival order. Waiting for a key's turn or for a time takes no delivery slot,
so held records do not slow the others. ``max_pending`` bounds the records submitted and not yet
finished, and ``submit`` waits while that many are (backpressure on the stream).

The agent acks a record when its handler finished, not when it was submitted: Faust commits
acked offsets up to the first gap, so a crash re-reads whatever was still in flight.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

__all__ = ["KeyedDispatcher"]

logger = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]


@dataclass
class _KeyQueue:
    """A key's records not started yet, earliest due first, and the task working through them."""

    waiting: list[tuple[int, int, Job]] = field(default_factory=list)
    #: set when a record arrives that may be due before the one being waited for
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class KeyedDispatcher:
    """Runs up to ``limit`` jobs at once; one at a time per key, in due order."""

    def __init__(
        self,
        limit: int,
        *,
        max_pending: int | None = None,
        now_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._running = asyncio.Semaphore(limit)
        self._pending = asyncio.Semaphore(max_pending or 16 * limit)
        self._now_ms = now_ms
        self._queues: dict[Hashable, _KeyQueue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not finished."""
        return self._in_flight

    async def submit(
        self, key: Hashable | None, job: Job, *, not_before_ms: int | None = None
    ) -> None:
        """Queue ``job``: it runs once ``not_before_ms`` (wall clock) has passed, the key's jobs
        due before it finished, and a slot is free."""
        await self._pending.acquire()
        self._in_flight += 1
        due = not_before_ms or 0
        if key is None:
            self._spawn(self._run_alone(job, due))
            return
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _KeyQueue()
            queue.task = self._spawn(self._run_key(key, queue))
        heapq.heappush(queue.waiting, (due, next(self._seq), job))
        queue.arrived.set()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _wait_until(self, due: int, arrived: asyncio.Event | None = None) -> bool:
        """Sleep until ``due`` (True), or until ``arrived`` is set first (False)."""
        # The loop's clock is not the wall clock: sleep again if woken a little early.
        while (wait_ms := due - self._now_ms()) > 0:
            if arrived is None:
                await asyncio.sleep(wait_ms / 1000)
                continue
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), wait_ms / 1000)
                return False
            except TimeoutError:
                continue
        return True

    async def _run_alone(self, job: Job, due: int) -> None:
        try:
            await self._wait_until(due)
            await self._run(job)
        finally:
            self._done()

    async def _run_key(self, key: Hashable, queue: _KeyQueue) -> None:
        try:
            while queue.waiting:
                due = queue.waiting[0][0]
                if not await self._wait_until(due, queue.arrived):
                    continue  # something arrived: maybe due earlier; look again
                _, _, job = heapq.heappop(queue.waiting)
                try:
                    await self._run(job)
                finally:
                    self._done()
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]
            for _ in queue.waiting:  # cancelled: these never ran (their records are re-read)
                self._done()
            queue.waiting.clear()

    async def _run(self, job: Job) -> None:
        async with self._running:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # jobs route their own failures; this is a bug, keep going
                logger.exception("dispatched job failed")

    def _done(self) -> None:
        self._in_flight -= 1
        self._pending.release()

    async def join(self) -> None:
        """Wait for every job submitted so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel the jobs in flight (shutdown: their records are not acked, so re-read)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._queues.clear()
        while self._in_flight > 0:  # tasks cancelled before they started never counted down
            self._done()
