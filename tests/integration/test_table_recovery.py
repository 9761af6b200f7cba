"""Faust tables recover exactly after SIGKILL on the embedded broker (ListOffsets bug corrected)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from walstream.broker import free_port
from walstream.kafka.admin import ensure_topics
from walstream.topology import TopicSpec

from .helpers import WorkerProcess, get_json, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4
INITIAL_EVENTS = 20_000
EVENTS_PER_ROUND = 1_000
RESTARTS = 5


async def produce_batched(servers: str, topic: str, count: int, start: int) -> None:
    """Produce with a batching producer: the pattern that makes Tansu under-report end offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=20, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, b"x", key=f"k{(start + i) % 97}".encode())
            for i in range(count)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def committed_total(servers: str, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for p in range(PARTITIONS):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


def wait_committed(broker: str, group: str, topic: str, produced: int) -> None:
    """Wait until the group has committed every produced event: a kill before that would
    re-consume them, and (correctly, at least once) count them twice."""
    wait_until(
        lambda: asyncio.run(committed_total(broker, group, topic)) >= produced,
        timeout=30,
        what="offsets to be committed",
        every=0.5,
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_table_total_is_exact_after_repeated_sigkill(
    broker: str, unique: str, store: str, tmp_path: Path
) -> None:
    topic = f"counter-src-{unique}"
    app_id = f"counter-{unique}"
    asyncio.run(ensure_topics(broker, [TopicSpec(name=topic, partitions=PARTITIONS)]))
    port = free_port()
    env = {
        "WALSTREAM_BOOTSTRAP_SERVERS": broker,
        "WALSTREAM_STORE": store,
        "WALSTREAM_DATA_DIR": str(tmp_path / "data"),
        "WALSTREAM_WORKER_WEB_PORT": str(port),
        "WALSTREAM_BROKER_SESSION_TIMEOUT_S": "2",
        "WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
        "COUNTER_APP_ID": app_id,
        "COUNTER_TOPIC": topic,
    }
    url = f"http://127.0.0.1:{port}/total"
    produced = INITIAL_EVENTS
    asyncio.run(produce_batched(broker, topic, INITIAL_EVENTS, 0))
    worker = WorkerProcess("tests.integration.apps.counter", env, tmp_path / "worker.log").start()
    try:
        for restart in range(RESTARTS + 1):
            total = wait_until(
                lambda produced=produced: (
                    (body := get_json(url))["ready"] and body["total"] >= produced and body
                ),
                timeout=90,
                what=f"the worker to count {produced} (round {restart})\n{worker.log_tail()}",
            )["total"]
            assert total == produced, f"round {restart}: table says {total}, produced {produced}"
            if restart == RESTARTS:
                break
            wait_committed(broker, app_id, topic, produced)
            asyncio.run(produce_batched(broker, topic, EVENTS_PER_ROUND, produced))
            produced += EVENTS_PER_ROUND
            wait_until(
                lambda produced=produced: get_json(url)["total"] >= produced,
                timeout=60,
                what="new events counted",
            )
            wait_committed(broker, app_id, topic, produced)
            worker.kill()
            worker.start()
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
