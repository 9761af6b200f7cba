"""Topics on the real broker: what `ns apply`, the worker and the API create, read back with
DescribeConfigs, and the start-up warning when acks=all means one broker (the embedded broker
reports one)."""

from __future__ import annotations

import logging

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from walstream.api.app import build_api
from walstream.kafka.admin import ensure_topics
from walstream.topology import TopicSpec, default_topics

from .conftest import eventually, run_cli

pytestmark = pytest.mark.integration

DAY = 86_400_000
SINGLE_COPY = "acks=all means one broker"


async def _configs(broker: str, *topics: str) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
        )
    finally:
        await admin.close()
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for _code, _message, _type, name, entries, *_ in response.resources:
            found[name] = {entry[0]: entry[1] for entry in entries}
    return found


async def test_ns_apply_creates_topics_that_keep_owed_records(broker, unique, wal_env, tmp_path):
    forever, finite = f"keep{unique}", f"month{unique}"
    (tmp_path / "forever.toml").write_text(f'name = "{forever}"\n')
    applied = run_cli(wal_env, "ns", "apply", str(tmp_path / "forever.toml"))
    assert applied.returncode == 0, applied.stderr
    kept = default_topics(forever)
    configs = await _configs(broker, *kept.all())
    for topic in kept.all():
        assert configs[topic].get("retention.ms") == "-1", topic
        assert configs[topic].get("retention.bytes") == "-1", topic
        assert configs[topic].get("cleanup.policy") == "delete", topic
        # asked for 2 in sync of 3 copies; the embedded broker is one broker
        assert configs[topic].get("min.insync.replicas") == "1", topic
    assert SINGLE_COPY not in applied.stderr  # ns apply is no process start

    (tmp_path / "finite.toml").write_text(
        f'name = "{finite}"\nlog_retention_ms = {30 * DAY}\ndlq_retention_ms = {90 * DAY}\n'
    )
    applied = run_cli(wal_env, "ns", "apply", str(tmp_path / "finite.toml"))
    assert applied.returncode == 0, applied.stderr
    month = default_topics(finite)
    configs = await _configs(broker, *month.all())
    assert configs[month.log]["retention.ms"] == str(30 * DAY)
    assert configs[month.retry]["retention.ms"] == str(30 * DAY)
    assert configs[month.dlq]["retention.ms"] == str(90 * DAY)


async def test_ns_apply_warns_about_an_existing_topic_that_would_expire_owed_records(
    broker, unique, wal_env, tmp_path
):
    name = f"old{unique}"
    topics = default_topics(name)
    week = str(7 * DAY)  # Kafka's default, as a topic made before walstream managed retention
    await ensure_topics(
        broker,
        [
            TopicSpec(
                name=topics.dlq,
                partitions=4,
                config={"cleanup.policy": "delete", "retention.ms": week, "retention.bytes": "-1"},
            )
        ],
    )
    (tmp_path / "old.toml").write_text(f'name = "{name}"\n')
    applied = run_cli(wal_env, "ns", "apply", str(tmp_path / "old.toml"))
    assert applied.returncode == 0, applied.stderr
    assert f"topic {topics.dlq}: retention.ms is {week}, walstream needs -1" in applied.stderr
    assert f"--entity-name {topics.dlq} --add-config retention.ms=-1" in applied.stderr
    assert topics.log not in applied.stderr  # created now, as specified
    configs = await _configs(broker, topics.dlq, topics.log)
    assert configs[topics.dlq]["retention.ms"] == week  # warned about, not altered
    assert configs[topics.log]["retention.ms"] == "-1"


async def test_api_start_warns_when_acks_all_means_one_broker(wal_settings, caplog):
    caplog.set_level(logging.WARNING, logger="walstream.kafka.admin")
    async with build_api(wal_settings):
        pass
    warnings = [r.getMessage() for r in caplog.records if SINGLE_COPY in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert warnings[0].startswith("API: ")
    assert "replication factor 1 and min.insync.replicas 1 (asked: 3 and 2)" in warnings[0]


async def test_worker_start_warns_and_creates_its_changelogs_as_specified(
    broker, wal_settings, workers
):
    worker = workers()

    def warned() -> bool:
        assert worker.alive(), worker.log_tail()
        return SINGLE_COPY in worker.log_path.read_text(errors="replace")

    await eventually(warned, 60, f"the start-up warning\n{worker.log_tail()}")
    assert f"worker: {SINGLE_COPY}" in worker.log_path.read_text(errors="replace")
    app_id = wal_settings.app_id
    changelogs = [f"{app_id}-attempts-changelog", f"{app_id}-ordering-changelog"]

    async def created():
        configs = await _configs(broker, *changelogs)
        return all(configs.get(topic) for topic in changelogs) and configs

    configs = await eventually(created, 60, f"the changelogs\n{worker.log_tail()}")
    for topic in changelogs:
        assert configs[topic]["cleanup.policy"] == "compact", topic
        assert configs[topic]["min.insync.replicas"] == "1", topic
