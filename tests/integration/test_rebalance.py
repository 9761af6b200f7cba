"""A rebalance does not wait for queued work (issue 13, item 8), on the real broker.

Worker A holds a hot key's backlog (300 records, its target answers one each 100 ms: 30 s of
work). Worker B joins. A drops the queued records of the partitions it gives up, unacked, and
waits at most WALSTREAM_DELIVER_REVOKE_WAIT_S for the one being delivered, so B is serving within
seconds; every record is still delivered, by whichever worker owns its partition afterwards (the
commit never passed them).
"""

from __future__ import annotations

import time

import pytest
from aiokafka.partitioner import DefaultPartitioner

from .conftest import apply_namespace, eventually, wait_serving
from .helpers import worker_assignment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

HOT = b"hot-record"
BACKLOG = 300


@pytest.fixture
def wal_env(wal_env):
    return {**wal_env, "WALSTREAM_DEFAULT_PARTITIONS": "2"}


def settled(*workers) -> bool:
    """Every worker owns something and none is rebalancing."""
    for worker in workers:
        body = worker_assignment(worker)
        if body is None:
            return False
        if body["rebalancing"] or not body["assignment"]:
            return False
    return True


async def test_a_rebalance_drops_queued_records_and_they_are_still_delivered(
    wal_settings, workers, recorder, wal_client, unique
):
    ns = f"rebalance-{unique}"
    log = f"wal.{ns}.log"
    target = {"type": "http", "url": recorder.url}
    await apply_namespace(wal_settings, {"name": ns, "max_attempts": 10, "target": target})
    first = workers(WALSTREAM_DELIVER_REVOKE_WAIT_S="2")
    await wait_serving(first, log)
    recorder.delay_matching(HOT, 0.1)
    hot_key = next(
        f"hot{n}"
        for n in range(1000)
        if DefaultPartitioner()(f"hot{n}".encode(), [0, 1], [0, 1]) == 0
    )
    written = [
        await wal_client.write(ns, {"m": HOT.decode(), "n": n}, key=hot_key) for n in range(BACKLOG)
    ]
    assert all(w.ok for w in written)
    ids = {w.id for w in written}

    def delivered() -> set[str]:
        return ids & {r.headers["X-Wal-Id"] for r in recorder.successes()}

    await eventually(lambda: len(delivered()) >= 5, 30, "the backlog to start")
    joined = time.monotonic()
    # the case: the backlog still holds 20 s and more of the target's time when B joins
    assert BACKLOG - len(delivered()) >= 200, f"{len(delivered())} delivered before the join"
    second = workers(WALSTREAM_DELIVER_REVOKE_WAIT_S="2")
    await eventually(lambda: settled(first, second), 60, "both workers serving")
    took = time.monotonic() - joined
    backlog_left = BACKLOG - len(delivered())
    # The queued backlog would have taken backlog_left / 10 s; the rebalance must not wait for it.
    assert took < 15, f"the rebalance took {took:.1f} s with {backlog_left} records left"
    recorder.delay_matching(HOT, 0.005)  # proven: the rest of the backlog may go quickly
    await eventually(lambda: delivered() == ids, 120, "every record of the backlog", every=0.5)
