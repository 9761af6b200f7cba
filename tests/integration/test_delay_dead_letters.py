"""The delay stage on the real broker drops nothing and pins nothing: a tier record without valid
delay headers is dead-lettered (its namespace's DLQ, else the deployment's poison topic), a
forward to a partition that does not exist is dead-lettered once the grace is over, and in both
cases the tier partition's committed offset moves past the record, so a restart re-forwards
nothing that was already forwarded."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from walstream.core.delay import delay_headers
from walstream.core.dlq import DlqEntry, parse_dlq_record
from walstream.dlq import read_dlq
from walstream.testing import http_record
from walstream.topology import delay_topic, poison_topic

from .conftest import apply_namespace, eventually, wait_serving
from .helpers import committed_offset, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

GRACE_ENV = {"WALSTREAM_DELAY_DEST_GRACE_MS": "2000"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def envelope(ns: str, url: str) -> tuple[str, bytes]:
    return http_record(ns, url, now_ms())


async def produce(servers: str, topic: str, records: list[tuple[bytes, list]]) -> list[int]:
    """Write ``(value, headers)`` records to partition 0 of ``topic``, one by one; their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        offsets = []
        for value, headers in records:
            meta = await producer.send_and_wait(topic, value, partition=0, headers=headers)
            offsets.append(meta.offset)
        return offsets
    finally:
        await producer.stop()


async def committed(servers: str, group: str, tp: TopicPartition) -> int:
    return await committed_offset(servers, group, tp.topic, tp.partition) or -1


def delivered(recorder, record_id: str) -> int:
    return sum(r.headers["X-Wal-Id"] == record_id for r in recorder.successes())


def definition(name, url):
    return {"name": name, "max_attempts": 2, "target": {"type": "http", "url": url}}


async def test_a_tier_record_without_valid_headers_is_dead_lettered_and_committed_past(
    wal_settings, workers, recorder, unique
):
    ns = f"deadhdr-{unique}"
    servers = wal_settings.bootstrap_servers
    await apply_namespace(wal_settings, definition(ns, recorder.url))
    worker = workers(**GRACE_ENV)
    await wait_serving(worker, f"wal.{ns}.log")
    timer = delay_topic(wal_settings.app_id, 0)
    headerless_id, headerless = envelope(ns, recorder.url)
    ok_id, ok = envelope(ns, recorder.url)
    offsets = await produce(
        servers,
        timer,
        [
            (headerless, []),  # a valid envelope, no delay headers: its namespace's DLQ
            (b"\x00garbage", [("wal-due", b"soon")]),  # nothing usable: the poison topic
            (ok, delay_headers(now_ms(), f"wal.{ns}.log", 0)),  # a good one behind them
        ],
    )
    await eventually(lambda: delivered(recorder, ok_id), 60, "the good record")

    async def dead():
        return (await read_dlq(servers, f"wal.{ns}.dlq")).open.get(headerless_id)

    entry = await eventually(dead, 30, "the DLQ entry", every=0.5)
    assert entry.error_class == "DelayHeadersError"
    assert "delay headers" in entry.reason
    assert entry.source == f"{timer}[0]@{offsets[0]}"
    [poisoned] = await read_topic(servers, poison_topic(wal_settings.app_id), expect=1)
    parsed = parse_dlq_record(poisoned.key, poisoned.value, poisoned.headers, partition=0, offset=0)
    assert isinstance(parsed, DlqEntry)
    assert parsed.error_class == "DelayHeadersError"
    assert parsed.source == f"{timer}[0]@{offsets[1]}"
    assert poisoned.value == b"\x00garbage"
    group = f"{wal_settings.app_id}-delay"
    tp = TopicPartition(timer, 0)

    async def committed_past():
        return await committed(servers, group, tp) >= offsets[2] + 1

    await eventually(committed_past, 30, "the commit past all three", every=0.5)


async def test_a_forward_to_a_missing_partition_is_dead_lettered_and_not_forwarded_again(
    wal_settings, workers, recorder, unique
):
    ns = f"deaddest-{unique}"
    servers = wal_settings.bootstrap_servers
    await apply_namespace(wal_settings, definition(ns, recorder.url))
    worker = workers(**GRACE_ENV)
    await wait_serving(worker, f"wal.{ns}.log")
    timer = delay_topic(wal_settings.app_id, 0)
    before_id, before = envelope(ns, recorder.url)
    gone_id, gone = envelope(ns, recorder.url)
    after_id, after = envelope(ns, recorder.url)
    log = f"wal.{ns}.log"
    started = time.monotonic()
    offsets = await produce(
        servers,
        timer,
        [
            (before, delay_headers(now_ms(), log, 1)),
            (gone, delay_headers(now_ms(), log, 9)),  # the log has 4 partitions
            (after, delay_headers(now_ms(), log, 2)),
        ],
    )
    await eventually(lambda: delivered(recorder, after_id), 60, "the record behind it")

    async def dead():
        return (await read_dlq(servers, f"wal.{ns}.dlq")).open.get(gone_id)

    entry = await eventually(dead, 60, "the DLQ entry", every=0.5)
    assert time.monotonic() - started < 60  # within a bound: the grace (2 s) and a few tries
    assert entry.error_class == "DestinationGoneError"
    assert f"{log}[9]" in entry.reason
    group = f"{wal_settings.app_id}-delay"
    tp = TopicPartition(timer, 0)

    async def committed_past():
        return await committed(servers, group, tp) >= offsets[2] + 1

    await eventually(committed_past, 30, "the commit past the dead-lettered record", every=0.5)

    worker.kill()  # no final commit: what it committed is what the next worker starts from
    replacement = workers(**GRACE_ENV)
    await wait_serving(replacement, log)
    probe_id, probe = envelope(ns, recorder.url)
    await produce(servers, timer, [(probe, delay_headers(now_ms(), log, 0))])
    await eventually(lambda: delivered(recorder, probe_id), 60, "a record after the restart")
    assert delivered(recorder, before_id) == 1  # not forwarded again
    assert delivered(recorder, after_id) == 1
    entries = await read_topic(servers, f"wal.{ns}.dlq", expect=1)
    assert [r.key for r in entries] == [gone_id.encode()]  # dead-lettered once
