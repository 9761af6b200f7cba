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


async def test_the_limit_bounds_running_jobs_and_max_pending_bounds_submissions():
    dispatcher = KeyedDispatcher(2, max_pending=3)
    release = asyncio.Event()
    running = peak = 0

    async def job() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    for _ in range(3):
        await dispatcher.submit(None, job)
    fourth = asyncio.create_task(dispatcher.submit(None, job))
    await asyncio.sleep(0.05)
    assert not fourth.done()  # backpressure: the stream waits
    assert (dispatcher.in_flight, running) == (3, 2)  # the third waits for a slot
    release.set()
    await fourth
    await dispatcher.join()
    assert peak == 2


async def test_held_jobs_wait_for_their_time_without_taking_a_slot():
    clock = {"now": 1_000}
    dispatcher = KeyedDispatcher(1, now_ms=lambda: clock["now"])
    order: list[str] = []

    async def job(name: str) -> None:
        order.append(name)

    await dispatcher.submit("k", lambda: job("held"), not_before_ms=1_030)
    await dispatcher.submit("other", lambda: job("other"))
    await dispatcher.submit("k", lambda: job("k, held longer"), not_before_ms=1_050)
    await asyncio.sleep(0.05)
    assert order == ["other"]  # the one slot was free for a record not held
    clock["now"] = 1_030
    await asyncio.sleep(0.05)
    assert order == ["other", "held"]
    clock["now"] = 1_050
    await dispatcher.join()
    assert order == ["other", "held", "k, held longer"]
    assert dispatcher.in_flight == 0


async def test_within_a_key_a_record_due_earlier_overtakes_one_held_longer():
    clock = {"now": 1_000}
    dispatcher = KeyedDispatcher(4, now_ms=lambda: clock["now"])
    order: list[str] = []

    async def job(name: str) -> None:
        order.append(name)

    # handed over ahead of time in arrival order, not due order (the delay stage's lead)
    await dispatcher.submit("k", lambda: job("due 1400"), not_before_ms=1_400)
    await dispatcher.submit("k", lambda: job("due 1200"), not_before_ms=1_200)
    await dispatcher.submit("k", lambda: job("due now"))
    await dispatcher.submit("k", lambda: job("due 1200 too"), not_before_ms=1_200)
    await asyncio.sleep(0.05)
    assert order == ["due now"]
    clock["now"] = 1_500
    await dispatcher.join()
    assert order == ["due now", "due 1200", "due 1200 too", "due 1400"]


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
