"""A hot key with a slow target holds back only its own partition (issue 13, item 8), on the real
broker: the worker stops fetching the hot key's partition once the key holds
WALSTREAM_DELIVER_MAX_KEY_PENDING records, so the agent's buffer never fills with it and the
other partition's records keep their latency. Every hot-key record is still delivered, in order:
a pause applies from the next fetch, never to the rest of a batch already fetched (Faust's
``getmany`` dropped it while aiokafka's position, and then the commit, passed it)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.partitioner import DefaultPartitioner

from .conftest import apply_namespace, eventually, wait_serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

HOT = b"hot-record"
HOT_RATE = 30  # records/s of the hot key; its target answers 10/s
SECONDS = 6  # the hot key's backlog ends at ~120 records: more than the agent's buffer
MAX_PENDING = 50  # the agent's buffer (WALSTREAM_DELIVER_MAX_PENDING)
KEY_CAP = 10  # WALSTREAM_DELIVER_MAX_KEY_PENDING


@pytest.fixture
def wal_env(wal_env):
    return {**wal_env, "WALSTREAM_DEFAULT_PARTITIONS": "2"}


def keys_on(partition: int, count: int, prefix: str) -> list[str]:
    partitioner = DefaultPartitioner()
    keys: list[str] = []
    n = 0
    while len(keys) < count:
        key = f"{prefix}{n}"
        if partitioner(key.encode(), [0, 1], [0, 1]) == partition:
            keys.append(key)
        n += 1
    return keys


async def test_a_hot_key_holds_back_only_its_partition(
    wal_settings, workers, recorder, wal_client, unique
):
    ns = f"hot-{unique}"
    target = {"type": "http", "url": recorder.url}
    await apply_namespace(wal_settings, {"name": ns, "max_attempts": 10, "target": target})
    worker = workers(
        WALSTREAM_DELIVER_MAX_PENDING=str(MAX_PENDING),
        WALSTREAM_DELIVER_MAX_KEY_PENDING=str(KEY_CAP),
    )
    await wait_serving(worker, f"wal.{ns}.log")
    recorder.delay_matching(HOT, 0.1)
    [hot_key] = keys_on(0, 1, "hot")
    others = keys_on(1, SECONDS * 10, "other")
    written_at: dict[str, float] = {}
    hot_ids: list[str] = []

    # The hot key is written 3x faster than its target answers, for SECONDS: its backlog grows
    # past the agent's whole buffer (MAX_PENDING). Other keys' records (partition 1) are written
    # beside.
    start = time.time()
    for n in range(SECONDS * HOT_RATE):
        pause = start + n / HOT_RATE - time.time()
        if pause > 0:
            await asyncio.sleep(pause)
        hot = await wal_client.write(ns, {"m": HOT.decode(), "n": n}, key=hot_key)
        assert hot.ok
        hot_ids.append(hot.id)
        if n % 3 == 2:
            other = await wal_client.write(ns, {"n": n}, key=others[n // 3])
            assert other.ok
            written_at[other.id] = time.time()

    def delivered() -> dict[str, float]:
        return {
            r.headers["X-Wal-Id"]: r.at
            for r in recorder.successes()
            if r.headers["X-Wal-Id"] in written_at
        }

    await eventually(lambda: len(delivered()) == len(written_at), 120, "the other keys' records")
    latency = sorted(delivered()[i] - written_at[i] for i in written_at)
    assert latency[-1] < 3.0, f"other partition's records waited up to {latency[-1]:.1f} s"

    # The hot key's backlog drains at its target's pace (10/s): all of it, in order.
    def hot_delivered() -> list[str]:
        return [r.headers["X-Wal-Id"] for r in recorder.successes() if HOT in r.body]

    await eventually(lambda: hot_ids[-1] in hot_delivered(), 150, "the hot key's last record")
    got = set(hot_delivered())
    missing = [n for n, record_id in enumerate(hot_ids) if record_id not in got]
    assert not missing, f"{len(missing)} of {len(hot_ids)} hot-key records never delivered"
    assert list(dict.fromkeys(hot_delivered())) == hot_ids
