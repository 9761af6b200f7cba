"""A key's records reach the target in order across a rebalance (issue 13, review of items 1/8),
on the real broker.

One partition, one key, a slow target, a small agent buffer (WALSTREAM_DELIVER_MAX_PENDING=3:
the state of any backlog larger than the buffer). A second worker joins while a record is being
delivered. The first worker's dispatcher gave up the queued records at the revoke (freeing
room) while the stream kept feeding it: the next buffered records of the key started at once,
beside and before the ones given up. Measured before the fix: first arrivals
[0, 1, 4, 5, 6, 7, 3, 2, ...]. Now the flow is suspended before the revoke and the dispatcher
refuses records of a revoked partition: the next owner reads them again, in order.
"""

from __future__ import annotations

import json

import pytest

from .conftest import apply_namespace, eventually, wait_serving, write_in_order

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N = 12
#: Faust logs it once a worker's first assignment is recovered (its group has rebalanced).
RECOVERED = "[^---Recovery]: Worker ready"


def logged(worker, line: str) -> bool:
    if not worker.alive():
        raise AssertionError(f"worker died:\n{worker.log_tail()}")
    return line in worker.log_path.read_text(errors="replace")


@pytest.fixture
def wal_env(wal_env):
    return {**wal_env, "WALSTREAM_DEFAULT_PARTITIONS": "1"}


async def test_a_rebalance_keeps_a_keys_first_deliveries_in_order(
    wal_settings, workers, recorder, wal_client, unique
):
    ns = f"revoke-{unique}"
    log = f"wal.{ns}.log"
    target = {"type": "http", "url": recorder.url}
    await apply_namespace(wal_settings, {"name": ns, "max_attempts": 10, "target": target})

    await write_in_order(wal_client, ns, "k", [{"m": "k", "n": n} for n in range(N)])
    recorder.delay_matching(b'"m":"k"', 3.0)
    first = workers(WALSTREAM_DELIVER_MAX_PENDING="3")
    await wait_serving(first, log, within_s=60)
    await eventually(lambda: recorder.all(), 60, "the first record in flight")
    second = workers(WALSTREAM_DELIVER_MAX_PENDING="3")  # joins: a rebalance mid-backlog
    # The second worker is ready once the group has rebalanced (the first one's revoke is over,
    # with most of the key's backlog still queued behind a 3 s record). The rest may go quickly.
    await eventually(lambda: logged(second, RECOVERED), 60, "the second worker to join")
    recorder.delay_matching(b'"m":"k"', 0.1)

    def n_of(request) -> int:
        return int(json.loads(request.body)["n"])

    # the case under test: the rebalance came while more of the key than the buffer was queued
    assert len({n_of(r) for r in recorder.all()}) <= N - 4, "the backlog was gone before the join"

    await eventually(
        lambda: {n_of(r) for r in recorder.successes()} >= set(range(N)), 180, "all delivered"
    )
    firsts = list(dict.fromkeys(n_of(r) for r in recorder.all()))
    assert firsts == list(range(N)), f"key k's records first reached the target as {firsts}"
