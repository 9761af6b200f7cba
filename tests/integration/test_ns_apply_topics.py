"""``ns apply`` checks a namespace's topics on the real broker (issue 14, item 6).

Every namespace topic must have the deployment's partition count (records on a partition past
it are never acked, retried or dead-lettered), may not be another namespace's or one of the
deployment's own (control topic, changelogs, delay tiers, poison topic), and a topic the broker
refuses to create fails the command. A refused namespace is not broadcast.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import CliRunner

from walstream.cli import cli
from walstream.kafka.admin import ensure_topics
from walstream.topology import TopicSpec, delay_topic, poison_topic

from .conftest import apply_namespace, run_cli
from .helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def write_namespace(tmp_path, name: str, topics: dict[str, str] | None = None) -> str:
    lines = [f'name = "{name}"', "", "[target]", 'type = "http"', 'url = "http://127.0.0.1:9/"']
    if topics:
        lines += ["", "[topics]", *(f'{role} = "{topic}"' for role, topic in topics.items())]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def broadcast_names(settings) -> set[str]:
    """Names of the namespaces the control topic holds an event for."""
    records = await read_topic(
        settings.bootstrap_servers, settings.control_topic, expect=1_000, within_s=3
    )
    return {r.key.decode() for r in records}


async def topics_on(servers: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_a_log_topic_with_another_partition_count_is_refused(
    wal_env, wal_settings, tmp_path, unique
):
    ns = f"six-{unique}"
    log = f"wal.{ns}.log"
    asyncio.run(ensure_topics(wal_settings.bootstrap_list, [TopicSpec(name=log, partitions=6)]))
    applied = run_cli(wal_env, "ns", "apply", write_namespace(tmp_path, ns))
    assert applied.returncode != 0, applied.stdout
    assert log in applied.stderr
    assert "6 partitions" in applied.stderr
    assert "WALSTREAM_DEFAULT_PARTITIONS=4" in applied.stderr
    assert ns not in asyncio.run(broadcast_names(wal_settings))
    # nothing else was created for the refused namespace
    assert not {f"wal.{ns}.retry", f"wal.{ns}.dlq"} & asyncio.run(
        topics_on(wal_settings.bootstrap_servers)
    )


def test_topics_of_another_namespace_or_of_the_deployment_are_refused(
    wal_env, wal_settings, tmp_path, unique
):
    owner = f"owner-{unique}"
    asyncio.run(
        apply_namespace(
            wal_settings, {"name": owner, "target": {"type": "http", "url": "http://127.0.0.1:9/"}}
        )
    )
    app_id = wal_settings.app_id
    cases = {
        "another namespace's log": (f"wal.{owner}.log", f"is used by namespace {owner}"),
        "the control topic": (wal_settings.control_topic, "is the control topic"),
        "a changelog": (f"{app_id}-attempts-changelog", "changelog"),
        "a delay tier": (delay_topic(app_id, 10_000), "is a delay tier"),
        "the poison topic": (poison_topic(app_id), "is the poison topic"),
    }
    for n, (what, (topic, reason)) in enumerate(cases.items()):
        name = f"thief{n}-{unique}"
        path = write_namespace(tmp_path, name, {"dlq": topic})
        applied = run_cli(wal_env, "ns", "apply", path)
        assert applied.returncode != 0, f"{what}: {applied.stdout}"
        assert topic in applied.stderr, what
        assert reason in applied.stderr, f"{what}: {applied.stderr}"
    names = asyncio.run(broadcast_names(wal_settings))
    assert owner in names
    assert not {n for n in names if n.startswith("thief")}


def test_a_topic_the_broker_refuses_to_create_fails_ns_apply(
    wal_env, wal_settings, tmp_path, unique, monkeypatch
):
    # The embedded broker creates any topic asked for; a real cluster refuses some (a policy,
    # an invalid name, no authorization). The refusal is the broker's answer, every other
    # request goes to the real broker.
    ns = f"refused-{unique}"
    create_topics = AIOKafkaAdminClient.create_topics

    async def refusing(self, new_topics, *args, **kwargs):
        if any(t.name.startswith(f"wal.{ns}.") for t in new_topics):
            return SimpleNamespace(
                topic_errors=[(t.name, 44, "Topic creation policy violated") for t in new_topics]
            )
        return await create_topics(self, new_topics, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaAdminClient, "create_topics", refusing)
    for key, value in wal_env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, ["ns", "apply", write_namespace(tmp_path, ns)])
    assert result.exit_code != 0, result.output
    assert f"wal.{ns}." in result.output
    assert "refused to create" in result.output
    assert ns not in asyncio.run(broadcast_names(wal_settings))


async def partition_counts(servers: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}


def test_a_namespace_taking_mutations_gets_its_mutation_and_marker_topics(
    wal_env, wal_settings, tmp_path, unique
):
    ns = f"muts-{unique}"
    path = write_namespace(tmp_path, ns)
    with open(path, "a") as file:
        file.write("\n[mutations]\ncompletion_timeout_s = 120\n")
    applied = run_cli(wal_env, "ns", "apply", path)
    assert applied.returncode == 0, applied.stderr
    wanted = [f"wal.{ns}.mutations", f"wal.{ns}.markers"]
    counts = asyncio.run(partition_counts(wal_settings.bootstrap_servers, wanted))
    assert counts == {topic: wal_settings.default_partitions for topic in wanted}
    # a namespace without the block gets neither
    plain = f"plain-{unique}"
    assert run_cli(wal_env, "ns", "apply", write_namespace(tmp_path, plain)).returncode == 0
    on_cluster = asyncio.run(topics_on(wal_settings.bootstrap_servers))
    assert f"wal.{plain}.log" in on_cluster
    assert not {f"wal.{plain}.mutations", f"wal.{plain}.markers"} & on_cluster


def test_a_markers_topic_with_another_partition_count_is_refused(
    wal_env, wal_settings, tmp_path, unique
):
    ns = f"muts6-{unique}"
    markers = f"wal.{ns}.markers"
    spec = TopicSpec(name=markers, partitions=6)
    asyncio.run(ensure_topics(wal_settings.bootstrap_list, [spec]))
    path = write_namespace(tmp_path, ns)
    with open(path, "a") as file:
        file.write("\n[mutations]\n")
    applied = run_cli(wal_env, "ns", "apply", path)
    assert applied.returncode != 0, applied.stdout
    assert markers in applied.stderr
    assert "6 partitions" in applied.stderr
    assert ns not in asyncio.run(broadcast_names(wal_settings))
