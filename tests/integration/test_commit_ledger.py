"""The worker's commit on the real broker: never past a record still in flight (issue 13, item 1).

A slow record C (the target answers it after many seconds) sits beside fast records C+1.. of
other keys on the same partition. They finish first and are acked; the commit timer fires; the
worker dies (SIGKILL) or stops (SIGTERM) while C is still in flight. After a restart C must be
delivered again: the committed offset stayed at C. Faust's own commit rule passes C, with no
committed offset yet (a new group) and with one (it skips one unacked record at the frontier).
"""

from __future__ import annotations

import asyncio

import pytest

from .conftest import apply_namespace, eventually, wait_serving
from .helpers import committed_offset

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

#: The workers' commit interval (WALSTREAM_COMMIT_INTERVAL_S; 2.8 s by default, as Faust's):
#: short, so that several commit timers pass quickly while C is in flight.
COMMIT_INTERVAL_S = 0.5
SLOW = b"slow-record-C"
FAST = 5


@pytest.fixture
def wal_env(wal_env):
    # One partition: C and the fast records after it share it, whatever their keys.
    return {
        **wal_env,
        "WALSTREAM_DEFAULT_PARTITIONS": "1",
        "WALSTREAM_COMMIT_INTERVAL_S": str(COMMIT_INTERVAL_S),
        # a graceful stop waits this long for C (answered after 120 s), then gives it up
        "WALSTREAM_DELIVER_REVOKE_WAIT_S": "1",
    }


def requests_for(recorder, record_id: str) -> list:
    return [r for r in recorder.all() if r.headers.get("X-Wal-Id") == record_id]


async def run_slow_record_case(
    wal_settings, workers, recorder, wal_client, unique, *, committed_first: int, stop: str
) -> None:
    ns = f"ledger-{unique}"
    log = f"wal.{ns}.log"
    # The target's timeout outlasts the test: C must come back by being read again from the log
    # (attempt 0), not as a retry after a timeout.
    target = {"type": "http", "url": recorder.url, "timeout_ms": 110_000}
    await apply_namespace(wal_settings, {"name": ns, "max_attempts": 10, "target": target})
    worker = workers()
    await wait_serving(worker, log)
    group = wal_settings.app_id
    if committed_first:
        early = [
            await wal_client.write(ns, {"n": n}, key=f"early{n}") for n in range(committed_first)
        ]
        assert all(w.ok for w in early)

        async def all_committed() -> bool:
            offset = await committed_offset(wal_settings.bootstrap_list, group, log)
            return offset == committed_first

        await eventually(all_committed, 60, "the first records committed", every=0.5)

    recorder.delay_matching(SLOW, 120.0)  # answered long after the worker is gone
    slow = await wal_client.write(ns, {"marker": SLOW.decode()}, key="slow-key")
    fast = [await wal_client.write(ns, {"n": n}, key=f"fast{n}") for n in range(FAST)]
    assert slow.ok
    assert all(w.ok for w in fast)
    fast_ids = {w.id for w in fast}
    await eventually(
        lambda: (
            fast_ids <= {r.headers["X-Wal-Id"] for r in recorder.successes()}
            and requests_for(recorder, slow.id)
        ),
        60,
        "the fast records delivered and C in flight",
    )
    # Several commit timers pass while C is in flight and C+1.. are acked.
    await asyncio.sleep(6 * COMMIT_INTERVAL_S)
    committed = await committed_offset(wal_settings.bootstrap_list, group, log)
    assert committed is None or committed <= committed_first, f"committed past C: {committed}"
    assert len(requests_for(recorder, slow.id)) == 1  # still in flight, not retried
    if stop == "kill":
        worker.kill()
    else:
        worker.stop()  # SIGTERM: a graceful stop with C in flight
        assert not worker.alive()
    recorder.delay_matching(None)

    restarted = workers()
    again = await eventually(
        lambda: requests_for(recorder, slow.id)[1:],
        90,
        f"C delivered again after the restart\n{restarted.log_tail()}",
    )
    assert restarted.alive()
    assert again[0].headers["X-Wal-Attempt"] == "0"  # read again from the log, not a retry


async def test_sigkill_with_a_slow_record_in_flight_and_no_committed_offset(
    wal_settings, workers, recorder, wal_client, unique
):
    await run_slow_record_case(
        wal_settings, workers, recorder, wal_client, unique, committed_first=0, stop="kill"
    )


async def test_sigkill_with_a_slow_record_in_flight_after_a_committed_offset(
    wal_settings, workers, recorder, wal_client, unique
):
    await run_slow_record_case(
        wal_settings, workers, recorder, wal_client, unique, committed_first=3, stop="kill"
    )


async def test_graceful_stop_with_a_slow_record_in_flight_reads_it_again(
    wal_settings, workers, recorder, wal_client, unique
):
    await run_slow_record_case(
        wal_settings, workers, recorder, wal_client, unique, committed_first=3, stop="term"
    )
