"""The delivery engine on the real broker with real targets: retries, backoff, the DLQ, poison
records, a SIGKILL mid-retry, and the kv target end to end."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3

import pytest
from aiokafka import AIOKafkaProducer

from walstream.core.dlq import DlqEntry
from walstream.dlq import read_dlq
from walstream.records import decode_envelope

from .conftest import apply_namespace, eventually, wait_serving
from .http_recorder import attempts_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def http_namespace(name, url, **overrides):
    definition = {
        "name": name,
        "max_attempts": 10,
        "backoff": {"base_ms": 300, "multiplier": 2.0, "cap_ms": 10_000, "jitter": 0.2},
        "target": {"type": "http", "url": url},
    }
    definition.update(overrides)
    return definition


async def dlq_entries(settings, ns):
    view = await read_dlq(settings.bootstrap_list, f"wal.{ns}.dlq")
    return view.open


async def test_fails_three_times_then_delivered_once_with_backoff_gaps(
    wal_settings, workers, recorder, wal_client, unique
):
    ns = f"retry-{unique}"
    await apply_namespace(wal_settings, http_namespace(ns, recorder.url))
    worker = workers()
    await wait_serving(worker, f"wal.{ns}.log")
    recorder.fail_next(3, status=503)
    written = await wal_client.write(ns, {"order": 1})
    assert written.ok
    await eventually(recorder.successes, 30, "the delivery")
    await asyncio.sleep(1.0)  # anything more would be a duplicate
    assert len(recorder.successes()) == 1
    calls = [r for r in recorder.all() if r.headers["X-Wal-Id"] == written.id]
    assert attempts_of(calls, written.id) == [0, 1, 2, 3]
    assert calls[-1].headers["Idempotency-Key"] == written.id  # no token given: the id
    gaps_ms = [(b.at - a.at) * 1000 for a, b in itertools.pairwise(calls)]
    for attempt, gap in enumerate(gaps_ms):
        backoff = 300 * 2**attempt
        assert gap >= backoff * 0.8, f"attempt {attempt + 1} early: {gaps_ms}"
        assert gap <= backoff * 1.2 + 500, f"attempt {attempt + 1} late: {gaps_ms}"


async def test_always_failing_target_is_dead_lettered_after_exactly_max_attempts(
    wal_settings, workers, recorder, wal_client, unique
):
    ns = f"dead-{unique}"
    definition = http_namespace(ns, recorder.url, max_attempts=4)
    definition["backoff"]["base_ms"] = 100
    await apply_namespace(wal_settings, definition)
    worker = workers()
    await wait_serving(worker, f"wal.{ns}.log")
    recorder.fail_always(503)
    written = await wal_client.write(ns, {"order": 2}, key="k")
    entries = await eventually(
        lambda: dlq_entries(wal_settings, ns), 30, "the DLQ entry", every=0.5
    )
    entry: DlqEntry = entries[written.id]
    assert entry.attempts == 4
    assert entry.error_class == "http_503"
    assert entry.source.startswith(f"wal.{ns}.")
    assert "gave up after 4 attempts" in entry.reason
    history = decode_envelope(entry.value).history
    assert [h.attempt for h in history] == [0, 1, 2, 3]
    assert all(h.error_class == "http_503" for h in history)
    assert attempts_of(recorder.all(), written.id) == [0, 1, 2, 3]


async def test_a_4xx_is_dead_lettered_after_one_attempt(
    wal_settings, workers, recorder, wal_client, unique
):
    ns = f"perm-{unique}"
    await apply_namespace(wal_settings, http_namespace(ns, recorder.url))
    worker = workers()
    await wait_serving(worker, f"wal.{ns}.log")
    recorder.fail_always(422)
    written = await wal_client.write(ns, {"order": 3})
    entries = await eventually(
        lambda: dlq_entries(wal_settings, ns), 30, "the DLQ entry", every=0.5
    )
    assert entries[written.id].attempts == 1
    assert entries[written.id].error_class == "http_422"
    assert "permanent error" in entries[written.id].reason
    assert attempts_of(recorder.all(), written.id) == [0]


async def test_a_poison_record_is_dead_lettered_and_the_records_behind_it_delivered(
    wal_settings, workers, recorder, wal_client, unique
):
    ns = f"poison-{unique}"
    await apply_namespace(wal_settings, http_namespace(ns, recorder.url))
    worker = workers()
    await wait_serving(worker, f"wal.{ns}.log")
    producer = AIOKafkaProducer(bootstrap_servers=wal_settings.bootstrap_list)
    await producer.start()
    try:
        for partition in range(wal_settings.default_partitions):  # poison ahead on every partition
            await producer.send_and_wait(f"wal.{ns}.log", b"\x00garbage", partition=partition)
    finally:
        await producer.stop()
    written = [await wal_client.write(ns, {"n": n}, key=f"k{n}") for n in range(8)]
    await eventually(lambda: len(recorder.successes()) >= 8, 30, "the records behind the poison")
    delivered = {r.headers["X-Wal-Id"] for r in recorder.successes()}
    assert delivered == {w.id for w in written}
    entries = await eventually(
        lambda: dlq_entries(wal_settings, ns), 30, "the poison entries", every=0.5
    )
    poison = [e for e in entries.values() if e.poison]
    assert len(poison) == wal_settings.default_partitions
    assert all(e.value == b"\x00garbage" and "undecodable" in e.reason for e in poison)


async def test_sigkill_mid_retry_continues_the_attempt_count(
    wal_settings, workers, recorder, wal_client, unique
):
    ns = f"crash-{unique}"
    definition = http_namespace(ns, recorder.url, max_attempts=6)
    definition["backoff"] = {"base_ms": 400, "multiplier": 1.5, "cap_ms": 10_000, "jitter": 0.0}
    await apply_namespace(wal_settings, definition)
    worker = workers(WALSTREAM_STORE="rocksdb://")
    await wait_serving(worker, f"wal.{ns}.log")
    recorder.fail_always(503)
    written = await wal_client.write(ns, {"order": 4})
    await eventually(lambda: len(recorder.all()) >= 3, 30, "attempt 2")
    worker.kill()
    before_kill = attempts_of(recorder.all(), written.id)
    assert max(before_kill) < 5, f"every attempt made before the kill: {before_kill}"
    restarted = workers(
        WALSTREAM_STORE="rocksdb://", WALSTREAM_DATA_DIR=worker.env["WALSTREAM_DATA_DIR"]
    )
    entries = await eventually(
        lambda: dlq_entries(wal_settings, ns), 90, "the DLQ entry after the restart", every=0.5
    )
    assert restarted.alive()
    seen = attempts_of(recorder.all(), written.id)
    assert seen == sorted(seen), f"the attempt count went back: {seen}"
    assert sorted(set(seen)) == [0, 1, 2, 3, 4, 5]
    history = [h.attempt for h in decode_envelope(entries[written.id].value).history]
    assert history == [0, 1, 2, 3, 4, 5]


async def test_kv_target_end_to_end_keeps_the_newest_write(
    wal_settings, workers, wal_client, unique, tmp_path
):
    ns = f"kv-{unique}"
    await apply_namespace(
        wal_settings, {"name": ns, "target": {"type": "kv", "table": "profiles", "key": "u1"}}
    )
    db = tmp_path / "kv.sqlite"
    worker = workers(WALSTREAM_KV_URL=f"sqlite:///{db}")
    await wait_serving(worker, f"wal.{ns}.log")
    newer = await wal_client.write(
        ns, {"v": "new"}, original_write_time=2_000, idempotency_token="t2", key="u1"
    )
    older = await wal_client.write(
        ns, {"v": "old"}, original_write_time=1_000, idempotency_token="t1", key="u1"
    )
    again = await wal_client.write(
        ns, {"v": "dup"}, original_write_time=2_000, idempotency_token="t2", key="u1"
    )
    assert all(w.ok for w in (newer, older, again))

    def row():
        if not db.exists():
            return None
        with sqlite3.connect(db) as conn:
            try:
                return conn.execute(
                    "SELECT value, original_write_time_ms, idempotency_token FROM profiles"
                ).fetchall()
            except sqlite3.OperationalError:
                return None

    await eventually(row, 30, "the kv row")
    await asyncio.sleep(2.0)  # let every write land
    assert row() == [(b'{"v":"new"}', 2_000, "t2")]
