"""Rebalances do not re-deliver acked records (issue 14, item 5), on the real broker.

Records flow continuously while a second worker joins and later leaves. Each record's delivery
times come from the HTTP recorder; each rebalance's time from the workers' logs (aiokafka's
"Revoking previously assigned partitions ... for group <app-id>" line, and the moment the
second worker is told to stop). A record acked more than one commit interval before a rebalance
must never be delivered again after it: by then the periodic commit has passed it; nor may one
acked (ACK_SLACK_S) before it: the revoke-time commit passes every record acked up to the
revoke. (Records in flight at the revoke may come again: at least once.) A worker start must
cost one group join: the namespace registry is loaded and the agents subscribed before the
consumer first joins.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from datetime import datetime

import pytest
from aiokafka import AIOKafkaProducer

from walstream.core.ids import new_id
from walstream.records import Envelope, Lifecycle, encode_envelope

from .conftest import apply_namespace, eventually, wait_serving
from .helpers import get_json

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

#: Faust's broker_commit_interval (walstream keeps Faust's default, faust/types/settings).
COMMIT_INTERVAL_S = 2.8
#: A record is acked a little after the recorder answers it (the response's way back, the
#: worker's event loop on a loaded machine); records in flight at a revoke may come again.
ACK_SLACK_S = 1.0
PARTITIONS = 4
#: Records a worker delivers at once (WALSTREAM_DELIVER_CONCURRENCY): at most these are in flight
#: at a revoke, the only records a rebalance may deliver again.
CONCURRENCY = 4
_STAMP = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]"


@pytest.fixture
def wal_env(wal_env):
    return {**wal_env, "WALSTREAM_DEFAULT_PARTITIONS": str(PARTITIONS)}


def envelope(ns: str, target: dict, n: int) -> tuple[str, bytes, bytes]:
    """Id, key and value of a new write of ``{"n": n}``, as the API logs it."""
    now = int(time.time() * 1000)
    env = Envelope(
        id=new_id(now),
        namespace=ns,
        key=f"k{n}",
        payload={"n": n},
        payload_encoding="json",
        target=target,
        lifecycle=Lifecycle(deliver_at_ms=now, original_write_time_ms=now),
        idempotency_token=f"t{n}",
        created_at_ms=now,
    )
    return env.id, f"k{n}".encode(), encode_envelope(env)


def log_entries(worker) -> list[tuple[float, str]]:
    """The worker's log entries (a pretty-printed set spans lines) with their epoch times."""
    entries: list[tuple[float, str]] = []
    for line in worker.log_path.read_text(errors="replace").splitlines():
        stamp = re.match(_STAMP, line)
        if stamp:
            # asctime is local time, as datetime.timestamp() reads a naive datetime
            at = datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # noqa: DTZ007
            entries.append((at, line))
        elif entries:
            entries[-1] = (entries[-1][0], f"{entries[-1][1]}\n{line}")
    return entries


def log_times(worker, pattern: str) -> list[float]:
    """Epoch times of the worker's log entries matching ``pattern``."""
    return [at for at, text in log_entries(worker) if re.search(pattern, text, re.DOTALL)]


def revokes(worker, group: str) -> list[float]:
    return log_times(worker, rf"Revoking previously assigned partitions.* for group {group}\s*$")


def joins(worker, group: str) -> int:
    return len(log_times(worker, rf"\(Re-\)joining group {group}\s*$"))


def assignment(worker) -> dict:
    if not worker.alive():
        raise AssertionError(f"worker died:\n{worker.log_tail()}")
    return get_json(f"http://127.0.0.1:{worker.web_port}/walstream/assignment")


def owns_log(worker, log: str) -> set[int]:
    try:
        body = assignment(worker)
    except OSError:
        return set()
    if body["rebalancing"]:
        return set()
    return {p for t, p in body["assignment"] if t == log}


def late_duplicates(
    deliveries: dict[str, list[float]], rebalances: list[float], before_s: float
) -> list[tuple[str, float, float, float]]:
    """(id, first delivery, rebalance, later delivery) for every record delivered again after
    a rebalance that came more than ``before_s`` after its first delivery."""
    found = []
    for record_id, times in deliveries.items():
        first, *later = sorted(times)
        for rebalance in rebalances:
            if rebalance - first <= before_s:
                continue
            again = [t for t in later if t > rebalance]
            if again:
                found.append((record_id, first, rebalance, again[0]))
                break
    return found


async def test_a_worker_joining_and_leaving_redelivers_no_record_acked_before(
    wal_settings, workers, recorder, unique
):
    ns = f"dups-{unique}"
    log = f"wal.{ns}.log"
    group = wal_settings.app_id
    target = {"type": "http", "url": recorder.url}
    await apply_namespace(wal_settings, {"name": ns, "max_attempts": 10, "target": target})
    first = workers(WALSTREAM_DELIVER_CONCURRENCY=str(CONCURRENCY))
    await wait_serving(first, log)
    first_joins = joins(first, group)

    ids: list[str] = []
    stop = asyncio.Event()
    producer = AIOKafkaProducer(bootstrap_servers=wal_settings.bootstrap_list, acks="all")
    await producer.start()

    async def write_continuously() -> None:
        # Straight to the log, as the API writes (walstream.kafka.producer): the test is about
        # the worker's consumer group, and a producer of its own keeps the pace steady.
        n = 0
        while not stop.is_set():
            record_id, key, value = envelope(ns, target, n)
            await producer.send_and_wait(log, value, key=key)
            ids.append(record_id)
            n += 1
            await asyncio.sleep(0.01)

    writer = asyncio.create_task(write_continuously())
    try:
        await eventually(lambda: len(recorder.successes()) >= 200, 60, "records flowing")
        second = workers(WALSTREAM_DELIVER_CONCURRENCY=str(CONCURRENCY))
        await eventually(
            lambda: owns_log(first, log) and owns_log(second, log),
            90,
            f"both workers serving\n{second.log_tail()}",
            every=0.2,
        )
        second_joins = joins(second, group)
        await asyncio.sleep(5)  # records flow through both workers (the time under test)
        second_revokes = revokes(second, group)
        stopped_at = time.time()
        second.stop()
        await eventually(
            lambda: owns_log(first, log) == set(range(PARTITIONS)),
            90,
            "the first worker to own every partition again",
            every=0.2,
        )
        # a record read again after the leave comes before the ones written after it: the wait
        # below for every record delivered covers it
        await asyncio.sleep(1)
    finally:
        stop.set()
        await writer
        await producer.stop()
    written = set(ids)

    def delivered() -> set[str]:
        return written & {r.headers["X-Wal-Id"] for r in recorder.successes()}

    await eventually(lambda: delivered() == written, 120, "every record delivered", every=0.5)

    deliveries: dict[str, list[float]] = defaultdict(list)
    for request in recorder.successes():
        deliveries[request.headers["X-Wal-Id"]].append(request.at)
    rebalances = sorted([*revokes(first, group), *second_revokes, stopped_at])
    duplicated = {i: t for i, t in deliveries.items() if len(t) > 1}
    late = late_duplicates(deliveries, rebalances, COMMIT_INTERVAL_S + ACK_SLACK_S)
    acked_before = late_duplicates(deliveries, rebalances, ACK_SLACK_S)
    print(  # noqa: T201 - the figures the report quotes
        f"\nrecords {len(written)}, delivered twice or more {len(duplicated)} "
        f"({100 * len(duplicated) / len(written):.1f} %), rebalances {len(rebalances)}, "
        f"delivered again after a rebalance: acked > {COMMIT_INTERVAL_S} s before it "
        f"{len(late)}, acked > {ACK_SLACK_S} s before it {len(acked_before)}"
    )
    assert (first_joins, second_joins) == (1, 1), "a worker start must join the group once"
    assert not late, (
        f"{len(late)} records acked more than a commit interval before a rebalance were "
        f"delivered again (id, first, rebalance, again): {late[:5]}"
    )
    # The revoke commits what was acked up to it, not only what the last periodic commit had:
    # only records in flight at a rebalance may come again.
    twice, bound = len(duplicated), CONCURRENCY * len(rebalances)
    assert twice <= bound, (
        f"{twice} records delivered twice: more than could be in flight at "
        f"{len(rebalances)} rebalances ({CONCURRENCY} each)"
    )
    assert not acked_before, (
        f"{len(acked_before)} records acked before a rebalance were delivered again "
        f"(id, first, rebalance, again): {acked_before[:5]}"
    )


async def test_a_worker_start_joins_the_group_once(wal_settings, workers, recorder, unique):
    ns = f"join-{unique}"
    log = f"wal.{ns}.log"
    target = {"type": "http", "url": recorder.url}
    await apply_namespace(wal_settings, {"name": ns, "target": target})
    worker = workers()
    await wait_serving(worker, log)
    producer = AIOKafkaProducer(bootstrap_servers=wal_settings.bootstrap_list, acks="all")
    await producer.start()
    try:
        record_id, key, value = envelope(ns, target, 1)
        await producer.send_and_wait(log, value, key=key)
    finally:
        await producer.stop()
    await eventually(
        lambda: any(r.headers["X-Wal-Id"] == record_id for r in recorder.successes()),
        60,
        "the record delivered",
    )
    joined = joins(worker, wal_settings.app_id)
    assert joined == 1, f"a worker start joined the group {joined} times"
