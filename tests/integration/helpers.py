"""Helpers for integration tests: worker subprocesses, polling, plain Kafka reads."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from walstream.kafka.offsets import probe_end_offsets

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polling a process that is still starting
            last_error = exc
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def worker_metric(worker: WorkerProcess, name: str, **labels: str) -> float | None:
    """A sample of the worker's Prometheus page (None while not reported)."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{worker.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def worker_assignment(worker: WorkerProcess) -> Any:
    """The worker's assignment page (``assignment``, ``rebalancing``), None while it does not
    answer; fails once the worker has died."""
    if not worker.alive():
        raise AssertionError(f"worker died:\n{worker.log_tail()}")
    try:
        return get_json(f"http://127.0.0.1:{worker.web_port}/walstream/assignment")
    except OSError:
        return None


class WorkerProcess:
    """A Faust worker in a subprocess, stopped by PID."""

    def __init__(self, app_module: str, env: dict[str, str], log_path: Path) -> None:
        self.app_module = app_module
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.web_port: int | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", self.app_module, "worker", "-l", "info"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def read_topic(servers: str, topic: str, *, expect: int, within_s: float = 15.0) -> list[Any]:
    """Read a whole topic with a plain groupless aiokafka consumer until ``expect`` records."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        deadline = asyncio.get_running_loop().time() + within_s
        while not parts and asyncio.get_running_loop().time() < deadline:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
            await asyncio.sleep(0.1)
        consumer.assign([TopicPartition(topic, p) for p in parts])
        while len(records) < expect and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        # a little longer: anything beyond ``expect`` would be a duplicate or a stray write
        for batch in (await consumer.getmany(timeout_ms=300)).values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def reported_and_true_ends(
    servers: str | list[str], topic: str
) -> dict[int, tuple[int, int]]:
    """Each partition of ``topic``: the end the broker reports (ListOffsets) and the true end
    (corrected for the embedded broker's ListOffsets bug)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        reported = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    true = await probe_end_offsets(servers, reported)
    return {tp.partition: (end, true[tp]) for tp, end in reported.items()}


async def topic_end_offsets(servers: str | list[str], topic: str) -> dict[int, int]:
    """True end offsets of a topic (corrected for the embedded broker's ListOffsets bug)."""
    ends = await reported_and_true_ends(servers, topic)
    return {partition: true for partition, (_, true) in ends.items()}


async def committed_offset(
    servers: str | list[str], group: str, topic: str, partition: int = 0
) -> int | None:
    """The offset ``group`` committed on a partition of ``topic`` (None: nothing committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group)
    await consumer.start()
    try:
        committed: int | None = await consumer.committed(TopicPartition(topic, partition))
        return committed
    finally:
        await consumer.stop()


def mutations_definition(
    ns: str, *, timeout_s: int = 600, max_attempts: int = 1000, jitter: float = 0.1
) -> dict:
    """A namespace taking mutations into kv tables m_* (its own target's m_a), quick backoff."""
    return {
        "name": ns,
        "target": {"type": "kv", "table": "m_a", "key": "k"},
        "allowed_targets": {"kv_tables": ["m_*"]},
        "mutations": {"completion_timeout_s": timeout_s},
        "backoff": {"base_ms": 50, "multiplier": 2.0, "cap_ms": 400, "jitter": jitter},
        "max_attempts": max_attempts,
    }


async def changelog_rows(servers: str, app_id: str) -> dict[str, bytes]:
    """The mutation table as its changelog says (last value per key; a tombstone deletes)."""
    topic = f"{app_id}-mutations-changelog"
    ends = await topic_end_offsets(servers, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False)
    await consumer.start()
    rows: dict[str, bytes] = {}
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        left = {tp for tp in tps if ends[tp.partition] > 0}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                for record in batch:
                    if record.value is None:
                        rows.pop(record.key.decode(), None)
                    else:
                        rows[record.key.decode()] = record.value
                    if record.offset + 1 >= ends[tp.partition]:
                        left.discard(tp)
        assert not left, f"changelog not read to its end: {left}"
    finally:
        await consumer.stop()
    return rows
