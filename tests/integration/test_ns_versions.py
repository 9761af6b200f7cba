"""Namespace versions on the real broker (issue 14 items 10 and 11): ``ns apply --expect-version``
is a compare-and-set, a live namespace's topics cannot change, and an apply that lost to a newer
one leaves the newer one as the key's last control record (what compaction keeps)."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from walstream.errors import VersionConflictError
from walstream.namespaces.broadcast import NamespaceFeed, NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event

from .conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def write(tmp_path, name: str, topic: str, extra: str = "") -> str:
    path = tmp_path / f"{name}-{topic}.toml"
    path.write_text(f'name = "{name}"\n{extra}[target]\ntype = "kafka"\ntopic = "{topic}"\n')
    return str(path)


def shown(wal_env, name: str) -> tuple[str, str]:
    result = run_cli(wal_env, "ns", "show", name)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)["target"]["topic"], result.stderr


def test_ns_apply_expect_version_is_a_compare_and_set(wal_env, unique, tmp_path):
    name = f"cas{unique}"
    first = run_cli(wal_env, "ns", "apply", "--expect-version", "0", write(tmp_path, name, "s1"))
    assert first.returncode == 0, first.stderr
    assert f"applied {name} (version 1)" in first.stdout
    topic, stderr = shown(wal_env, name)
    assert topic == "s1"
    assert "version 1" in stderr

    stale = run_cli(wal_env, "ns", "apply", "--expect-version", "0", write(tmp_path, name, "s9"))
    assert stale.returncode == 1
    assert "is version 1, not version 0" in stale.stderr
    assert shown(wal_env, name)[0] == "s1"  # nothing applied

    second = run_cli(wal_env, "ns", "apply", "--expect-version", "1", write(tmp_path, name, "s2"))
    assert second.returncode == 0, second.stderr
    assert f"applied {name} (version 2)" in second.stdout
    assert shown(wal_env, name)[0] == "s2"

    plain = run_cli(wal_env, "ns", "apply", write(tmp_path, name, "s3"))  # no check: version 3
    assert f"applied {name} (version 3)" in plain.stdout

    moved = run_cli(
        wal_env,
        "ns",
        "apply",
        write(tmp_path, name, "s4", f'[topics]\nretry = "wal.{name}.retry2"\n'),
    )
    assert moved.returncode == 1
    assert "strand its retry records" in moved.stderr
    assert shown(wal_env, name)[0] == "s3"


async def _last_control_value(settings, name: str) -> bytes | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_list, group_id=None)
    await consumer.start()
    try:
        topic = settings.control_topic
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            await consumer.topics()
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last = None
        for tp in tps:
            while True:
                batch = await consumer.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, []):
                    if record.key == name.encode():
                        last = record.value
                if await consumer.position(tp) >= (consumer.highwater(tp) or 0) and not batch:
                    break
        return last
    finally:
        await consumer.stop()


async def test_an_apply_that_lost_to_a_newer_version_leaves_the_newer_one_last(
    wal_settings, unique
):
    name = f"race{unique}"

    def config(topic: str):
        return parse_namespace({"name": name, "target": {"type": "kafka", "topic": topic}})

    publisher = NamespacePublisher(wal_settings)
    await publisher.start()
    producer = AIOKafkaProducer(bootstrap_servers=wal_settings.bootstrap_list, acks="all")
    await producer.start()
    try:
        assert await publisher.apply(config("s1")) == 1
        # the applier's view is stale (version 1) while another applier already wrote version 7
        view = NamespaceRegistry()
        view.apply(*encode_event(config("s1"), 1, 1))

        async def stale_view() -> NamespaceRegistry:
            return view

        publisher._registry = stale_view  # type: ignore[method-assign]
        key, value = encode_event(config("newer"), 10**13, 7)
        await producer.send_and_wait(wal_settings.control_topic, value, key=key)
        with pytest.raises(VersionConflictError, match="concurrent apply won"):
            await publisher.apply(config("older"))
    finally:
        await producer.stop()
        await publisher.stop()

    feed = NamespaceFeed(wal_settings)
    await feed.start()
    try:
        assert await feed.wait_ready(30)
        newer = feed.registry.get(name)
        assert newer is not None
        assert newer.target is not None
        assert newer.target.wire["topic"] == "newer"
        assert feed.registry.version(name) == 7
    finally:
        await feed.stop()
    # what a compacted topic keeps: the winner, not the lost apply
    last = await _last_control_value(wal_settings, name)
    assert last is not None
    assert orjson.loads(last)["config"]["target"]["topic"] == "newer"


async def test_an_unreadable_event_makes_the_namespace_unavailable_in_running_and_new_processes(
    api_client, wal_settings, workers, unique
):
    """On 9e4a94b the running worker and API kept the old config while a process started after
    compaction had none; now both have none, loudly (metric, 503 naming why)."""
    from walstream.api.app import build_api

    from .conftest import eventually, wait_serving
    from .helpers import worker_metric

    name = f"unread{unique}"
    definition = {"name": name, "target": {"type": "kafka", "topic": "o"}}
    publisher = NamespacePublisher(wal_settings)
    await publisher.start()
    try:
        await publisher.apply(parse_namespace(definition))
    finally:
        await publisher.stop()
    worker = workers()
    await wait_serving(worker, f"wal.{name}.log")
    client = await api_client(build_api(wal_settings))
    await eventually(
        lambda: _status(client, f"/v1/namespaces/{name}", 200), 30, "the API to know it"
    )

    producer = AIOKafkaProducer(bootstrap_servers=wal_settings.bootstrap_list, acks="all")
    await producer.start()
    try:  # an event from a future walstream
        future = orjson.dumps({"v": 2, "updated_at_ms": 1, "config": {"name": name}})
        await producer.send_and_wait(wal_settings.control_topic, future, key=name.encode())
    finally:
        await producer.stop()

    await eventually(
        lambda: worker_metric(worker, "walstream_namespace_config_unreadable", namespace=name) == 1,
        30,
        "the worker's unreadable gauge",
    )
    await eventually(
        lambda: _status(client, f"/v1/namespaces/{name}", 503), 30, "the running API's 503"
    )
    feed = NamespaceFeed(wal_settings)  # a process started now
    await feed.start()
    try:
        assert await feed.wait_ready(30)
        assert name not in feed.registry
        assert name in feed.registry.unreadable
    finally:
        await feed.stop()

    publisher = NamespacePublisher(wal_settings)  # a readable apply makes it available again
    await publisher.start()
    try:
        await publisher.apply(parse_namespace(definition))
    finally:
        await publisher.stop()
    await eventually(
        lambda: worker_metric(worker, "walstream_namespace_config_unreadable", namespace=name) == 0,
        30,
        "the gauge back at 0",
    )
    await eventually(lambda: _status(client, f"/v1/namespaces/{name}", 200), 30, "200 again")


async def _status(client, path: str, expected: int) -> bool:
    return (await client.get(path)).status == expected
