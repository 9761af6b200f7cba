"""A partition paused for a hot key loses nothing of the batch already fetched (issue 13, review
of item 8), on the real broker.

The delivery agent pauses a partition once one key holds WALSTREAM_DELIVER_MAX_KEY_PENDING
records. Faust's ``getmany`` handed out a fetched batch's records only while their partition
was in its live set of active partitions, from which the pause removed it at once: the rest of
the batch was never handed to the stream, aiokafka's position had passed it, and the offset
ledger (which knows only records handed over) committed past it. Measured before the fix: 115
of 120 such records were never delivered and the commit passed them (the count is not the point:
the key's records are 8x its cap, so the first fetch holds far more of them than the cap).
"""

from __future__ import annotations

import pytest

from .conftest import apply_namespace, eventually, wait_serving, write_in_order
from .helpers import committed_offset

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N = 40
CAP = 5


@pytest.fixture
def wal_env(wal_env):
    return {**wal_env, "WALSTREAM_DEFAULT_PARTITIONS": "1"}


async def test_a_partition_paused_mid_batch_delivers_the_rest_of_the_batch(
    wal_settings, workers, recorder, wal_client, unique
):
    ns = f"pause-{unique}"
    log = f"wal.{ns}.log"
    target = {"type": "http", "url": recorder.url}
    await apply_namespace(wal_settings, {"name": ns, "max_attempts": 10, "target": target})

    # Every record of the key is in the log before the worker starts: its first fetch holds
    # them all, and the key reaches its cap (CAP) early in that batch.
    ids = await write_in_order(wal_client, ns, "hot-key", [{"m": "hot", "n": n} for n in range(N)])
    recorder.delay_matching(b"hot", 0.05)
    worker = workers(WALSTREAM_DELIVER_MAX_KEY_PENDING=str(CAP))
    await wait_serving(worker, log, within_s=60)
    late = await wal_client.write(ns, {"m": "hot", "n": N}, key="hot-key")
    assert late.ok

    def delivered() -> list[str]:
        return [r.headers["X-Wal-Id"] for r in recorder.successes()]

    # The key's records are delivered in order: once the late one is, every earlier one must be.
    await eventually(lambda: late.id in delivered(), 120, "the late record delivered")
    got = set(delivered())
    missing = [n for n, record_id in enumerate(ids) if record_id not in got]
    assert not missing, (
        f"{len(missing)} of {N} records never delivered (offsets {missing[:3]}..{missing[-3:]})"
    )
    firsts = list(dict.fromkeys(delivered()))
    assert firsts == [*ids, late.id], "the key's records first reached the target out of order"
    # and the commit reaches the end only now that each was delivered
    await eventually(
        lambda: _at_least(committed_offset(wal_settings.bootstrap_list, wal_settings.app_id, log)),
        60,
        "the commit past the late record",
        every=0.5,
    )


async def _at_least(value) -> bool:
    got = await value
    return got is not None and got >= N + 1
