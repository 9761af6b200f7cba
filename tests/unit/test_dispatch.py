"""KeyedDispatcher: bounded concurrency, order within a key, no order across keys."""

from __future__ import annotations

import asyncio
import random

import pytest

from walstream.agents.dispatch import KeyedDispatcher


async def test_each_keys_jobs_run_in_submission_order_while_keys_overlap():
    rng = random.Random(7)
    dispatcher = KeyedDispatcher(8)
    finished: dict[str, list[int]] = {}
    running = peak = 0

    async def job(key: str, seq: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(rng.random() / 500)  # later records often finish sooner if unordered
        finished.setdefault(key, []).append(seq)
        running -= 1

    for seq in range(40):
        for key in ("a", "b", "c", "d"):
            await dispatcher.submit(key, lambda key=key, seq=seq: job(key, seq))
    await dispatcher.join()
    assert finished == {key: list(range(40)) for key in "abcd"}
    assert peak > 1  # different keys did run at once
    assert peak <= 4  # one at a time per key, four keys


async def test_the_limit_bounds_jobs_in_flight_and_submit_waits():
    dispatcher = KeyedDispatcher(3)
    release = asyncio.Event()
    started = 0

    async def job() -> None:
        nonlocal started
        started += 1
        await release.wait()

    for _ in range(3):
        await dispatcher.submit(None, job)
    fourth = asyncio.create_task(dispatcher.submit(None, job))
    await asyncio.sleep(0.05)
    assert not fourth.done()  # backpressure: the stream waits
    assert dispatcher.in_flight == 3
    release.set()
    await fourth
    await dispatcher.join()
    assert started == 4


async def test_unkeyed_jobs_are_not_ordered_and_a_failing_job_does_not_stop_the_rest():
    dispatcher = KeyedDispatcher(4)
    order: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.05)
        order.append("slow")

    async def fast() -> None:
        order.append("fast")

    async def broken() -> None:
        raise RuntimeError("a bug")

    await dispatcher.submit(None, slow)
    await dispatcher.submit(None, broken)
    await dispatcher.submit(None, fast)
    await dispatcher.join()
    assert order == ["fast", "slow"]


async def test_cancel_stops_jobs_in_flight_and_the_ones_waiting_behind_them():
    dispatcher = KeyedDispatcher(4)
    done: list[int] = []

    async def job(n: int) -> None:
        await asyncio.sleep(10)
        done.append(n)

    for n in range(3):
        await dispatcher.submit("k", lambda n=n: job(n))
    await dispatcher.cancel()
    assert done == []
    assert dispatcher.in_flight == 0


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="limit"):
        KeyedDispatcher(0)
