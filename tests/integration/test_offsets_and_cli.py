"""End-offset correction on the real broker, and the `walstream ns` commands."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from walstream.kafka.admin import ensure_topics
from walstream.kafka.offsets import probe_end_offsets
from walstream.topology import TopicSpec

from .helpers import ROOT

pytestmark = pytest.mark.integration

PER_PARTITION = 250


async def test_corrected_end_offsets_are_exact_after_batched_produce(broker, unique):
    topic = f"offsets-{unique}"
    await ensure_topics(broker, [TopicSpec(name=topic, partitions=2)])
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, b"v", partition=p)
            for _ in range(PER_PARTITION)
            for p in (0, 1)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None)
    await consumer.start()
    try:
        reported = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    corrected = await probe_end_offsets(broker, reported)
    assert corrected == dict.fromkeys(tps, PER_PARTITION)
    # never lowers a right answer: feeding the exact ends back changes nothing
    assert await probe_end_offsets(broker, corrected) == corrected


def _cli(broker, control_topic, *args):
    env = {
        **os.environ,
        "WALSTREAM_BOOTSTRAP_SERVERS": broker,
        "WALSTREAM_CONTROL_TOPIC": control_topic,
    }
    return _run_cli(env, *args)


def _run_cli(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "walstream", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ns_apply_list_show_delete(broker, unique, tmp_path):
    control = f"walstream.namespaces.cli-{unique}"
    applied = _cli(broker, control, "ns", "apply", "topology/namespaces")
    assert applied.returncode == 0, applied.stderr
    assert "applied demo" in applied.stdout

    listed = _cli(broker, control, "ns", "list")
    assert listed.returncode == 0, listed.stderr
    assert {line.split("\t")[0] for line in listed.stdout.splitlines()} >= {"demo", "pds"}

    shown = _cli(broker, control, "ns", "show", "demo")
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout)["topics"]["log"] == "wal.demo.log"

    deleted = _cli(broker, control, "ns", "delete", "demo")
    assert deleted.returncode == 0, deleted.stderr
    after = _cli(broker, control, "ns", "show", "demo")
    assert after.returncode == 1
    assert "not defined" in after.stderr


def test_ns_apply_refuses_a_bad_file_naming_the_key(broker, unique, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "ok"\nmax_attempts = 0\n')
    result = _cli(broker, f"walstream.namespaces.bad-{unique}", "ns", "apply", str(bad))
    assert result.returncode == 2
    assert "max_attempts" in result.stderr


def test_cluster_commands_need_bootstrap_servers():
    env = {k: v for k, v in os.environ.items() if k != "WALSTREAM_BOOTSTRAP_SERVERS"}
    result = _run_cli(env, "ns", "list")
    assert result.returncode == 2
    assert "WALSTREAM_BOOTSTRAP_SERVERS" in result.stderr
