"""Concurrent handling that keeps each key's records in order.

Faust's ``concurrency=N`` runs N actors over one stream: records of one key can then overtake
each other, and a WAL's targets (databases, caches) need a key's writes in turn. So each agent
runs one actor that hands records to a ``KeyedDispatcher``: up to ``limit`` records in flight,
a record starting only after the previous record of its key finished. Records without a key
are not ordered. ``submit`` waits while the limit is reached (backpressure on the stream).

The agent acks a record when its handler finished, not when it was submitted: Faust commits
acked offsets up to the first gap, so a crash re-reads whatever was still in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

__all__ = ["KeyedDispatcher"]

logger = logging.getLogger(__name__)


class KeyedDispatcher:
    """Runs up to ``limit`` jobs at once, in submission order per key."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._slots = asyncio.Semaphore(limit)
        #: key -> future done when the last submitted job of that key finished
        self._tails: dict[Hashable, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def submit(self, key: Hashable | None, job: Callable[[], Awaitable[object]]) -> None:
        """Start ``job`` once a slot is free and every earlier job of ``key`` finished."""
        await self._slots.acquire()
        previous = self._tails.get(key) if key is not None else None
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if key is not None:
            self._tails[key] = finished
        task = asyncio.create_task(self._run(key, previous, finished, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        key: Hashable | None,
        previous: asyncio.Future[None] | None,
        finished: asyncio.Future[None],
        job: Callable[[], Awaitable[object]],
    ) -> None:
        try:
            if previous is not None:
                await asyncio.shield(previous)  # our cancellation must not cancel theirs
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:  # jobs route their own failures; this is a bug, keep the stream going
            logger.exception("dispatched job failed")
        finally:
            if not finished.done():
                finished.set_result(None)
            if key is not None and self._tails.get(key) is finished:
                del self._tails[key]
            self._slots.release()

    async def join(self) -> None:
        """Wait for every job submitted so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel the jobs in flight (shutdown: their records are not acked, so re-read)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
