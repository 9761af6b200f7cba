"""Workers own their partitions in seconds (not ~30 s as with Faust defaults); two per host."""

from __future__ import annotations

import asyncio
import time

import pytest

from walstream.broker import free_port
from walstream.kafka.admin import ensure_topics
from walstream.topology import TopicSpec

from .helpers import WorkerProcess, get_json, wait_until

pytestmark = pytest.mark.integration

#: "A few seconds": Python + Faust import (~2 s) and a group join (~1 s with a 2 s session).
MAX_START_S = 12.0


def _owned(port: int, topic: str) -> set[int]:
    body = get_json(f"http://127.0.0.1:{port}/walstream/assignment")
    return {p for t, p in body["assignment"] if t == topic}


@pytest.mark.timeout(180)
def test_two_workers_on_one_host_split_the_partitions_quickly(broker, unique, tmp_path):
    topic = f"start-src-{unique}"
    asyncio.run(ensure_topics(broker, [TopicSpec(name=topic, partitions=4)]))
    workers, ports = [], []
    for name in ("a", "b"):
        port = free_port()
        ports.append(port)
        env = {
            "WALSTREAM_BOOTSTRAP_SERVERS": broker,
            "WALSTREAM_STORE": "memory://",
            "WALSTREAM_DATA_DIR": str(tmp_path / name),
            "WALSTREAM_WORKER_WEB_PORT": str(port),
            "WALSTREAM_BROKER_SESSION_TIMEOUT_S": "2",
            "WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
            "COUNTER_APP_ID": f"start-{unique}",
            "COUNTER_TOPIC": topic,
        }
        workers.append(
            WorkerProcess("tests.integration.apps.counter", env, tmp_path / f"{name}.log")
        )
    try:
        started = time.monotonic()
        workers[0].start()
        wait_until(
            lambda: _owned(ports[0], topic) == {0, 1, 2, 3},
            timeout=60,
            what=f"worker a to own all partitions\n{workers[0].log_tail()}",
        )
        first_start_s = time.monotonic() - started
        assert first_start_s < MAX_START_S, (
            f"worker took {first_start_s:.1f}s to own its partitions"
        )

        workers[1].start()
        wait_until(
            lambda: (
                (a := _owned(ports[0], topic))
                and (b := _owned(ports[1], topic))
                and not a & b
                and a | b == {0, 1, 2, 3}
            ),
            timeout=60,
            what=f"both workers to share the partitions\n{workers[1].log_tail()}",
        )
        assert all(w.alive() for w in workers)  # no EADDRINUSE: each has its own web port
    finally:
        for worker in workers:
            worker.kill()  # the test is over: no graceful stop needed
