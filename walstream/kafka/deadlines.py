"""Deadlines for many concurrent writes from one periodic timer.

A per-write ``asyncio.timeout`` allocates, schedules and cancels a timer handle for every request:
measurably the largest walstream-specific cost of a single WriteToLog. One sweeper that wakes every
``tick_s`` and cancels overdue tasks does the same job for all of them, at a precision of one tick.
"""

from __future__ import annotations

import asyncio

from walstream.aio import cancel_and_wait

__all__ = ["DeadlineSweeper"]


class DeadlineSweeper:
    """Cancels watched tasks that outlive their deadline; tells them apart from other cancels."""

    def __init__(self, tick_s: float = 0.05) -> None:
        self.tick_s = tick_s
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._sweep(), name="write-deadlines")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def watch(self, task: asyncio.Task[object], within_s: float) -> None:
        # The loop is kept: asyncio.get_running_loop() costs a getpid() system call on 3.11,
        # once per write.
        loop = self._loop or asyncio.get_running_loop()
        self._deadlines[task] = loop.time() + within_s

    def unwatch(self, task: asyncio.Task[object]) -> None:
        self._deadlines.pop(task, None)

    def claim_expiry(self, task: asyncio.Task[object]) -> bool:
        """True (once) if ``task`` was cancelled by this sweeper; the cancel is then undone."""
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            overdue = [task for task, deadline in self._deadlines.items() if deadline <= now]
            for task in overdue:
                del self._deadlines[task]
                if not task.done():
                    self._expired.add(task)
                    task.cancel()
