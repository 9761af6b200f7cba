"""The deadline sweeper cancels overdue writes, and only those, and says which."""

from __future__ import annotations

import asyncio

import pytest

from walstream.kafka.deadlines import DeadlineSweeper


async def test_overdue_task_is_cancelled_and_claimed():
    sweeper = DeadlineSweeper(tick_s=0.01)
    sweeper.start()
    outcome = {}

    async def write(within_s, wait_s):
        task = asyncio.current_task()
        assert task is not None
        sweeper.watch(task, within_s)
        try:
            await asyncio.sleep(wait_s)
            outcome[within_s] = "done"
        except asyncio.CancelledError:
            outcome[within_s] = "expired" if sweeper.claim_expiry(task) else "cancelled"
        finally:
            sweeper.unwatch(task)

    try:
        async with asyncio.timeout(5):
            await asyncio.gather(write(0.05, 10), write(5.0, 0.1))
    finally:
        await sweeper.stop()
    assert outcome == {0.05: "expired", 5.0: "done"}


async def test_a_foreign_cancel_is_not_claimed():
    sweeper = DeadlineSweeper(tick_s=0.01)
    sweeper.start()
    started = asyncio.Event()

    async def write():
        task = asyncio.current_task()
        assert task is not None
        sweeper.watch(task, 10)
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            assert not sweeper.claim_expiry(task)
            raise

    task = asyncio.create_task(write())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sweeper.stop()
