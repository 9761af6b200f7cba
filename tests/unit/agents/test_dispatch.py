"""KeyedDispatcher: bounded concurrency, order within a key, no order across keys."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Hashable
from typing import cast

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
            await dispatcher.submit(key, functools.partial(job, key, seq))
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
        await dispatcher.submit("k", functools.partial(job, n))
    await dispatcher.cancel()
    assert done == []
    assert dispatcher.in_flight == 0


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="limit"):
        KeyedDispatcher(0)


async def test_a_hot_key_with_a_slow_target_does_not_hold_the_other_keys():
    # Issue 13 item 8: 300 records of one key at 100 ms each, interleaved with other keys' records
    # (as on one partition). The other keys' records must not wait for the hot key's backlog.
    loop = asyncio.get_running_loop()
    dispatcher = KeyedDispatcher(8)  # the defaults: the buffer does not shrink with the slots
    latency: list[float] = []

    async def hot() -> None:
        await asyncio.sleep(0.1)

    async def other(submitted: float) -> None:
        latency.append(loop.time() - submitted)

    start = loop.time()
    for n in range(300):
        await dispatcher.submit(("p0", "hot"), hot)
        job = functools.partial(other, loop.time())
        await dispatcher.submit(("p0", f"k{n}"), job)
    while len(latency) < 300 and loop.time() - start < 10:
        await asyncio.sleep(0.01)
    elapsed = loop.time() - start
    await dispatcher.cancel()
    assert elapsed < 2.0, f"the other keys' records took {elapsed:.1f} s"
    assert len(latency) == 300
    assert max(latency) < 1.0


async def test_a_key_at_its_cap_pauses_only_its_partition_and_resumes_at_half():
    events: list[tuple[str, Hashable]] = []
    dispatcher = KeyedDispatcher(
        2,
        max_pending=100,
        max_key_pending=10,
        on_pause=lambda p: events.append(("pause", p)),
        on_resume=lambda p: events.append(("resume", p)),
    )
    release = asyncio.Event()
    other_done: list[int] = []

    async def stuck() -> None:
        await release.wait()

    async def other(n: int) -> None:
        other_done.append(n)

    for _ in range(12):  # beyond the cap: records already fetched are still taken
        await asyncio.wait_for(dispatcher.submit("hot", stuck, partition="p0"), 1)
    assert events == [("pause", "p0")]
    for n in range(20):  # another partition's keys flow meanwhile
        await asyncio.wait_for(
            dispatcher.submit(f"k{n}", functools.partial(other, n), partition="p1"), 1
        )
    await asyncio.sleep(0.05)
    assert sorted(other_done) == list(range(20))
    assert dispatcher.paused() == {"p0"}
    release.set()
    await dispatcher.join()
    assert events == [("pause", "p0"), ("resume", "p0")]
    assert dispatcher.paused() == set()
    assert dispatcher.in_flight == 0


async def test_the_total_bound_still_holds_the_stream():
    dispatcher = KeyedDispatcher(2, max_pending=5, max_key_pending=100)
    release = asyncio.Event()

    async def stuck() -> None:
        await release.wait()

    for n in range(5):
        await dispatcher.submit(f"k{n % 2}", stuck, partition="p")
    sixth = asyncio.create_task(dispatcher.submit("k9", stuck, partition="p"))
    await asyncio.sleep(0.05)
    assert not sixth.done()  # memory bound: the stream waits
    release.set()
    await sixth
    await dispatcher.join()
    assert dispatcher.in_flight == 0


async def test_revoke_drops_queued_records_at_once_and_bounds_the_wait_for_running_ones():
    loop = asyncio.get_running_loop()
    dispatcher = KeyedDispatcher(4)
    finished: list[str] = []

    async def slow(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        finished.append(name)

    # a hot key of the revoked partition: one running (too slow for the grace), 300 queued
    for n in range(301):
        await dispatcher.submit(
            "hot",
            functools.partial(slow, f"hot{n}", 0.1 if n else 30),
            partition="p0",
            tag=f"hot{n}",
        )
    # a quick one of the same partition, running, finishes within the grace: not given up
    await dispatcher.submit("quick", lambda: slow("quick", 0.05), partition="p0", tag="quick")
    # an unkeyed one of the revoked partition held until later: not started, dropped
    await dispatcher.submit(
        None,
        lambda: slow("held", 0),
        partition="p0",
        tag="held",
        not_before_ms=int(time.time() * 1000) + 60_000,
    )
    # another partition's records carry on
    await dispatcher.submit("kept", lambda: slow("kept", 0.3), partition="p1", tag="kept")
    await asyncio.sleep(0.01)
    start = loop.time()
    abandoned = await dispatcher.revoke({"p0"}, grace_s=0.5)
    took = loop.time() - start
    assert took < 1.5, f"revoke took {took:.1f} s"
    assert sorted(cast(list[str], abandoned)) == sorted([f"hot{n}" for n in range(301)] + ["held"])
    assert "quick" in finished
    assert not any(name.startswith("hot") for name in finished)
    await dispatcher.join()
    assert "kept" in finished
    assert dispatcher.in_flight == 0
    # refused until its partition comes back; then the key starts afresh
    assert not await dispatcher.submit("hot", lambda: slow("too early", 0), partition="p0")
    dispatcher.assign({"p0"})
    assert await dispatcher.submit("hot", lambda: slow("hot again", 0), partition="p0")
    await dispatcher.join()
    assert finished[-1] == "hot again"


async def test_cancel_resumes_the_partitions_it_paused():
    events: list[tuple[str, Hashable]] = []
    dispatcher = KeyedDispatcher(
        1,
        max_key_pending=2,
        on_pause=lambda p: events.append(("pause", p)),
        on_resume=lambda p: events.append(("resume", p)),
    )

    async def stuck() -> None:
        await asyncio.sleep(10)

    for _ in range(3):
        await dispatcher.submit("hot", stuck, partition="p0")
    await dispatcher.cancel()
    assert events == [("pause", "p0"), ("resume", "p0")]
    assert dispatcher.paused() == set()


async def test_a_submit_waiting_for_room_when_its_partition_is_revoked_is_refused():
    """A rebalance frees room (revoke drops the queued records): the record whose submit was
    waiting for it must not start (it would run beside the key's record still in its grace, on
    a partition this worker no longer owns); submit returns False and it never runs."""
    dispatcher = KeyedDispatcher(2, max_pending=2)
    events: list[str] = []
    running: set[str] = set()
    overlaps: list[tuple[str, ...]] = []
    release = asyncio.Event()

    def job(name: str):
        async def run() -> None:
            events.append(f"{name} started")
            if running:
                overlaps.append((*sorted(running), name))
            running.add(name)
            try:
                await release.wait()
            finally:
                running.discard(name)
            events.append(f"{name} finished")

        return run

    # Two records of one key fill the dispatcher (one running, one queued behind it) ...
    await dispatcher.submit("k", job("a"), partition="p0", tag="a")
    await dispatcher.submit("k", job("b"), partition="p0", tag="b")
    await asyncio.sleep(0)
    # ... and the next one waits for room.
    blocked = asyncio.ensure_future(dispatcher.submit("k", job("c"), partition="p0", tag="c"))
    await asyncio.sleep(0.01)
    assert not blocked.done()

    abandoned = await dispatcher.revoke({"p0"}, grace_s=0.05)
    accepted = await asyncio.wait_for(blocked, 1)
    release.set()
    await dispatcher.join()
    assert "c started" not in events, events
    assert not overlaps, overlaps
    assert sorted(cast(list[str], abandoned)) == ["a", "b"]
    assert accepted is False  # the caller gives it up (unacked)
    assert dispatcher.in_flight == 0


async def test_a_keys_record_in_its_revoke_grace_is_never_joined_by_a_later_one():
    """While a revoked partition's record runs out its grace, later records of its key (still
    in the agent's buffer) are refused, not started beside it; once the partition is assigned
    again the key's records run one at a time, in order."""
    dispatcher = KeyedDispatcher(4)
    order: list[str] = []
    running: set[str] = set()
    overlaps: list[tuple[str, ...]] = []
    finish_a = asyncio.Event()

    async def job(name: str, wait: asyncio.Event | None = None) -> None:
        order.append(name)
        if running:
            overlaps.append((*sorted(running), name))
        running.add(name)
        try:
            if wait is not None:
                await wait.wait()
            await asyncio.sleep(0.01)
        finally:
            running.discard(name)

    await dispatcher.submit("k", lambda: job("a", finish_a), partition="p0", tag="a")
    for name in ("b", "c"):
        await dispatcher.submit("k", functools.partial(job, name), partition="p0", tag=name)
    await asyncio.sleep(0.01)
    revoking = asyncio.ensure_future(dispatcher.revoke({"p0"}, grace_s=5))
    await asyncio.sleep(0.01)  # b and c dropped; a runs in its grace
    # the buffer still held d and e of the key: refused, not started beside a
    refused = [
        await dispatcher.submit("k", functools.partial(job, name), partition="p0", tag=name)
        for name in ("d", "e")
    ]
    await asyncio.sleep(0.05)
    assert order == ["a"], order
    finish_a.set()
    assert await asyncio.wait_for(revoking, 5) == ["b", "c"]
    assert not overlaps, overlaps
    assert refused == [False, False]
    # assigned again: the partition is read again from its commit (b, c, d, e)
    dispatcher.assign({"p0"})
    for name in ("b2", "c2", "d2", "e2"):
        assert await dispatcher.submit("k", functools.partial(job, name), partition="p0")
    await dispatcher.join()
    assert order == ["a", "b2", "c2", "d2", "e2"]
    assert not overlaps, overlaps


async def test_a_submit_begun_before_a_revoke_is_refused_also_after_the_partition_is_back():
    """A record read before a rebalance, whose submit got room only after its partition was
    assigned again, is refused: the partition is read again from its commit, this record too."""
    dispatcher = KeyedDispatcher(1, max_pending=1)
    ran: list[str] = []
    release = asyncio.Event()

    async def job(name: str) -> None:
        ran.append(name)
        await release.wait()

    await dispatcher.submit("x", functools.partial(job, "x"), partition="p1")
    blocked = asyncio.ensure_future(
        dispatcher.submit("k", functools.partial(job, "old"), partition="p0")
    )
    await asyncio.sleep(0.01)
    assert await dispatcher.revoke({"p0"}, grace_s=0.1) == []
    dispatcher.assign({"p0"})
    release.set()  # x finishes: room for the waiting submit
    assert await asyncio.wait_for(blocked, 1) is False
    assert await dispatcher.submit("k", functools.partial(job, "new"), partition="p0")
    await dispatcher.join()
    assert ran == ["x", "new"]


async def test_a_revoke_right_after_a_submit_leaves_no_dead_queue_and_no_lost_room():
    """A revoke in the same turn of the loop as the submits before it (the revoke callback can
    run before the tasks they created ever started) gives the records up, and once the partition
    is assigned again its keys run and the room they held is free."""
    dispatcher = KeyedDispatcher(2, max_pending=4)
    ran: list[str] = []

    async def job(name: str) -> None:
        ran.append(name)

    # no await that suspends between the submits and the revoke: their tasks have not started
    await dispatcher.submit("k", lambda: job("first"), partition="p", tag="keyed")
    await dispatcher.submit(None, lambda: job("alone"), partition="p", tag="unkeyed")
    abandoned = await dispatcher.revoke({"p"}, grace_s=0.1)
    assert sorted(cast(list[str], abandoned)) == ["keyed", "unkeyed"]
    assert ran == []
    assert dispatcher.in_flight == 0
    dispatcher.assign({"p"})
    # the key's records run again (its queue is not a dead one left from before the revoke)
    for n in range(4):  # and all the room is there (max_pending)
        assert await asyncio.wait_for(
            dispatcher.submit("k", functools.partial(job, f"again{n}"), partition="p"), 1
        )
    await asyncio.wait_for(dispatcher.join(), 2)
    assert ran == [f"again{n}" for n in range(4)]
    assert dispatcher.in_flight == 0
