"""Delivered marks on the real broker (issue 15 item 11): after a SIGKILL, the records the target
had acknowledged are read again (nothing was committed) and none is delivered a second time, not
the log records (the retried ones went out again as ``X-Wal-Attempt: 0`` before), nor their retry
copies."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from walstream.client import write_request
from walstream.testing import namespace_definition

from .conftest import apply_namespace, eventually, wait_serving
from .helpers import topic_end_offsets

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RECORDS = 40
FAILED_FIRST = 10  # the target's first answers are 503: these records go through the retry topic


async def uncommitted(servers: str, group: str, topics: list[str]) -> int:
    """Records of ``topics`` past ``group``'s committed offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        behind = 0
        for topic in topics:
            for partition, end in (await topic_end_offsets(servers, topic)).items():
                committed = await consumer.committed(TopicPartition(topic, partition))
                behind += end - (committed or 0)
        return behind
    finally:
        await consumer.stop()


async def marks_on_the_changelog(servers: str, topic: str) -> int:
    """Keys of the attempts changelog whose last value is a delivered mark (a negative one)."""
    ends = {p: end for p, end in (await topic_end_offsets(servers, topic)).items() if end > 0}
    if not ends:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False)
    await consumer.start()
    last: dict[bytes, bytes | None] = {}
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending, deadline = set(tps), time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for batch in (await consumer.getmany(*pending, timeout_ms=500)).values():
                for record in batch:
                    last[record.key] = record.value
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp.partition]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return sum(1 for value in last.values() if value is not None and int(value) < 0)


async def test_records_delivered_before_a_sigkill_are_not_delivered_again_after_it(
    wal_settings, workers, recorder, wal_client, unique
):
    ns = f"marks-{unique}"
    target = {"type": "http", "url": recorder.url}
    definition = namespace_definition(ns, base_ms=200, cap_ms=1_000, max_attempts=10, target=target)
    await apply_namespace(wal_settings, definition)
    topics = [f"wal.{ns}.log", f"wal.{ns}.retry"]
    servers, group = wal_settings.bootstrap_list, wal_settings.app_id
    # no periodic commit in this worker's life: a kill makes its successor read everything
    # again; the failures must not open the breaker (a deferral is one more copy each time)
    worker = workers(WALSTREAM_COMMIT_INTERVAL_S="3600", WALSTREAM_BREAKER_THRESHOLD="1000")
    await wait_serving(worker, topics[0])
    recorder.fail_next(FAILED_FIRST, status=503)
    written = await wal_client.write_batch(
        ns, [write_request({"n": n}, key=f"k{n % 7}") for n in range(RECORDS)]
    )
    assert all(w.ok for w in written)
    ids = {w.id for w in written}

    def delivered() -> set[str]:
        return {r.headers["X-Wal-Id"] for r in recorder.successes()} & ids

    await eventually(lambda: delivered() == ids, 60, "every record delivered")
    changelog = f"{group}-attempts-changelog"
    await eventually(
        lambda: _at_least(marks_on_the_changelog(servers, changelog), RECORDS),
        30,
        f"{RECORDS} delivered marks on the changelog",
    )
    failures = [r for r in recorder.all() if r.status == 503]
    assert len(failures) == FAILED_FIRST  # each one a retry copy on the retry topic
    # nothing committed: the next worker reads every log record and retry copy again
    assert await uncommitted(servers, group, topics) == RECORDS + FAILED_FIRST

    worker.kill()
    before = len(recorder.all())
    successor = workers(WALSTREAM_BREAKER_THRESHOLD="1000")
    await wait_serving(successor, topics[0], within_s=90)
    await eventually(
        lambda: _is_zero(uncommitted(servers, group, topics)),
        90,
        "the successor to handle and commit everything it read again",
    )

    again = [r for r in recorder.all()[before:] if r.headers.get("X-Wal-Id") in ids]
    successes = Counter(r.headers["X-Wal-Id"] for r in recorder.successes())
    assert again == [], (
        f"{len(again)} records delivered again after the kill, attempts "
        f"{Counter(r.headers.get('X-Wal-Attempt') for r in again)}"
    )
    assert set(successes) >= ids
    assert max(successes[i] for i in ids) == 1


async def _at_least(count, n: int) -> bool:
    return await count >= n


async def _is_zero(count) -> bool:
    return await count == 0
