"""Replay on the real broker covers the writes of its window by write time and never delivers
early: a record not yet due is left to the worker (with the later records of its key in a
key-ordered namespace); a delayed write that came due after the window is found where it entered
the log; a partition whose timestamps are out of order is read to its end, not to the first
timestamp past the window."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from aiokafka import AIOKafkaProducer

from walstream.testing import http_record

from .conftest import apply_namespace, eventually, run_cli, wait_serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def definition(name, url, **extra):
    return {"name": name, "max_attempts": 2, "target": {"type": "http", "url": url}, **extra}


def replayed(env: dict, ns: str, from_ms: int, to_ms: int) -> dict[str, int]:
    """Run ``walstream replay``; its counts by name."""
    done = run_cli(env, "replay", ns, "--from", str(from_ms), "--to", str(to_ms))
    assert done.returncode == 0, done.stderr
    counts = {name: int(n) for name, n in re.findall(r"(\w+) (\d+)", done.stdout)}
    assert "delivered" in counts, done.stdout
    return counts


async def first_write(wal_client, ns, payload, **options):
    """The first write of a test with no worker: once the API has read the namespace."""

    async def written():
        result = await wal_client.write(ns, payload, **options)
        assert result.ok or "is not defined" in result.message, result.message
        return result.ok and result

    return await eventually(written, 30, f"the API to know {ns}", every=0.2)


def ids(received) -> list[str]:
    return [r.headers["X-Wal-Id"] for r in received]


async def test_a_record_not_yet_due_is_left_to_the_worker_with_its_keys_later_records(
    wal_env, wal_settings, recorder, wal_client, unique
):
    ns = f"replaydue-{unique}"
    await apply_namespace(wal_settings, definition(ns, recorder.url, ordering="key"))
    before = delayed_at = now_ms()
    # Key-ordered: the delayed write goes to the log at once, due in a minute; its key's next
    # write waits behind it. No worker runs: whatever reaches the target is the replay's doing.
    delayed = await first_write(wal_client, ns, {"n": 1}, key="k", delay_ms=60_000)
    behind = await wal_client.write(ns, {"n": 2}, key="k")
    other = await wal_client.write(ns, {"n": 3}, key="other")
    assert all(w.ok for w in (delayed, behind, other)), [
        w.message for w in (delayed, behind, other)
    ]
    due_ms = delayed_at + 60_000
    counts = replayed(wal_env, ns, before, now_ms() + 1)
    assert counts["delivered"] == 1
    assert counts["pending"] == 2
    assert ids(recorder.all()) == [other.id]  # nothing of key k before its due time
    assert now_ms() < due_ms  # (the replay finished well before it)


async def test_a_delayed_write_due_after_the_window_is_replayed_and_one_not_yet_due_is_not(
    wal_env, wal_settings, workers, recorder, wal_client, unique
):
    ns = f"replaylate-{unique}"
    await apply_namespace(wal_settings, definition(ns, recorder.url))
    worker = workers()
    await wait_serving(worker, f"wal.{ns}.log")
    before = now_ms()
    direct = await wal_client.write(ns, {"n": 1})
    late = await wal_client.write(ns, {"n": 2}, delay_ms=4_000)  # due after the window
    waiting = await wal_client.write(ns, {"n": 3}, delay_ms=600_000)  # due after the replay
    until = now_ms() + 1
    while now_ms() <= until:  # the clock past the window's end before the next write
        await asyncio.sleep(0.005)
    after = await wal_client.write(ns, {"n": 4})  # written after the window
    assert all(w.ok for w in (direct, late, waiting, after))
    first = await eventually(
        lambda: {direct.id, late.id, after.id} <= set(ids(recorder.successes())) and recorder.all(),
        60,
        "the worker's deliveries",
    )
    late_at = next(r.at for r in first if r.headers["X-Wal-Id"] == late.id)
    assert late_at * 1000 >= until  # it entered the log after the window's end
    worker.stop()
    seen = len(recorder.all())
    counts = replayed(wal_env, ns, before, until)
    # The waiting write is in the delay tiers, not the log: the worker delivers it when due.
    assert counts["delivered"] == 2
    assert sorted(ids(recorder.all()[seen:])) == sorted([direct.id, late.id])


envelope = http_record


async def test_a_partition_with_out_of_order_timestamps_is_replayed_to_its_end(
    wal_env, wal_settings, recorder, unique
):
    ns = f"replayorder-{unique}"
    await apply_namespace(wal_settings, definition(ns, recorder.url))
    start = now_ms() - 600_000
    until = start + 60_000
    # (write time, log timestamp): the second lands with a timestamp past the window (a clock
    # ahead, or a record that came due late); the third is in the window again.
    plan = [
        (start + 1_000, start + 1_000),
        (until + 5_000, until + 300_000),
        (start + 2_000, start + 2_000),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=wal_settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        written = []
        for created, timestamp in plan:
            record_id, value = envelope(ns, recorder.url, created)
            await producer.send_and_wait(
                f"wal.{ns}.log", value, partition=0, timestamp_ms=timestamp
            )
            written.append(record_id)
    finally:
        await producer.stop()
    counts = replayed(wal_env, ns, start, until)
    assert counts["delivered"] == 2
    assert ids(recorder.all()) == [written[0], written[2]]  # in log order, the outsider left out
