"""Topic specs: retention, cleanup policy, replication factor and min.insync.replicas per kind."""

from __future__ import annotations

import pytest

from walstream.core.delay import TIERS_MS
from walstream.errors import ConfigError
from walstream.namespaces.broadcast import namespace_topic_specs
from walstream.namespaces.config import parse_namespace
from walstream.settings import Settings
from walstream.topology import (
    MutationTopics,
    TopicSpec,
    changelog_topic_spec,
    control_topic_spec,
    default_topics,
    delay_topic_specs,
    mutation_topic_specs,
    mutation_topics,
    region_topic,
    reserved_topics,
)

DAY = 86_400_000


def _by_name(specs):
    return {spec.name: spec for spec in specs}


def test_namespace_topics_keep_records_forever_by_default():
    specs = _by_name(namespace_topic_specs(parse_namespace({"name": "orders"}), Settings()))
    topics = default_topics("orders")
    assert set(specs) == set(topics.all())
    for spec in specs.values():
        config = spec.topic_config()
        assert config["cleanup.policy"] == "delete"  # never compacted: a key has many records
        assert config["retention.ms"] == "-1"
        assert config["retention.bytes"] == "-1"
        assert spec.partitions == 4


def test_namespace_topics_are_replicated_three_times_with_two_in_sync_by_default():
    for spec in namespace_topic_specs(parse_namespace({"name": "orders"}), Settings()):
        assert spec.replication_factor == 3
        assert spec.topic_config()["min.insync.replicas"] == "2"


def test_namespace_retention_overrides_reach_their_topics():
    config = parse_namespace(
        {"name": "orders", "log_retention_ms": 30 * DAY, "dlq_retention_ms": 90 * DAY}
    )
    specs = _by_name(namespace_topic_specs(config, Settings()))
    topics = config.topics
    assert specs[topics.log].topic_config()["retention.ms"] == str(30 * DAY)
    assert specs[topics.retry].topic_config()["retention.ms"] == str(30 * DAY)
    assert specs[topics.dlq].topic_config()["retention.ms"] == str(90 * DAY)


def test_settings_choose_the_replication_of_namespace_topics():
    settings = Settings(replication_factor=5, min_insync_replicas=3)
    for spec in namespace_topic_specs(parse_namespace({"name": "orders"}), settings):
        assert spec.replication_factor == 5
        assert spec.topic_config()["min.insync.replicas"] == "3"


def test_delay_tiers_keep_a_record_its_delay_plus_the_grace():
    grace = 7 * DAY
    specs = delay_topic_specs("app", (0, *TIERS_MS), 4, grace)
    assert [spec.topic_config()["retention.ms"] for spec in specs] == [
        str(delay + grace) for delay in (0, *TIERS_MS)
    ]
    for spec in specs:
        assert spec.topic_config()["cleanup.policy"] == "delete"
        assert spec.topic_config()["retention.bytes"] == "-1"
        assert spec.replication_factor == 3
        assert spec.topic_config()["min.insync.replicas"] == "2"


def test_control_topic_and_changelogs_are_compacted_and_replicated():
    for spec in (control_topic_spec("walstream.namespaces"), changelog_topic_spec("a-b-c", 4)):
        config = spec.topic_config()
        assert config["cleanup.policy"] == "compact"
        assert "retention.ms" not in config  # compaction keeps every key's last value
        assert spec.replication_factor == 3
        assert config["min.insync.replicas"] == "2"
    # a worker whose rocksdb store is days old still reads the deletes made since
    changelog = changelog_topic_spec("a-b-c", 4).topic_config()
    assert int(changelog["delete.retention.ms"]) >= 7 * DAY


@pytest.mark.parametrize(("brokers", "rf", "min_isr"), [(1, 1, 1), (2, 2, 2), (3, 3, 2), (5, 3, 2)])
def test_a_spec_is_capped_to_the_brokers_the_cluster_has(brokers, rf, min_isr):
    capped = TopicSpec(name="t", partitions=1).capped(brokers)
    assert (capped.replication_factor, capped.topic_config()["min.insync.replicas"]) == (
        rf,
        str(min_isr),
    )


def test_settings_default_to_three_copies_two_in_sync_and_refuse_more_in_sync_than_copies():
    settings = Settings.from_env({})
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    env = {"WALSTREAM_REPLICATION_FACTOR": "2", "WALSTREAM_MIN_INSYNC_REPLICAS": "3"}
    with pytest.raises(ConfigError, match="WALSTREAM_MIN_INSYNC_REPLICAS"):
        Settings.from_env(env)
    with pytest.raises(ConfigError, match="WALSTREAM_MIN_INSYNC_REPLICAS"):
        Settings.from_env({"WALSTREAM_MIN_INSYNC_REPLICAS": "0"})


def test_a_region_topic_is_named_from_its_namespace_and_region():
    assert region_topic("evc", "us-east") == "wal.evc.region.us-east"
    assert region_topic("evc", "log") not in default_topics("evc").all()
    # walstream's own: no record's target may name one
    assert reserved_topics("walstream", "walstream.namespaces").covers(region_topic("a", "b"))


def test_a_replicated_namespace_has_each_regions_topic_and_dlq_on_the_regions_cluster():
    from walstream.namespaces.broadcast import region_topic_specs

    config = parse_namespace(
        {
            "name": "cache",
            "replication": {
                "regions": {
                    "a": {"memcached": ["127.0.0.1:1"]},
                    "b": {"memcached": ["127.0.0.1:2"], "bootstrap_servers": "kafka-b:9092"},
                }
            },
        }
    )
    names = sorted(_by_name(namespace_topic_specs(config, Settings())))
    assert names == sorted([*config.topics.all(), "wal.cache.region.a", "wal.cache.region.a.dlq"])
    remote = region_topic_specs(config, Settings())["kafka-b:9092"]
    assert [spec.name for spec in remote] == ["wal.cache.region.b", "wal.cache.region.b.dlq"]


def test_mutation_topics_are_named_from_their_namespace():
    topics = mutation_topics("kv")
    assert topics == MutationTopics(mutations="wal.kv.mutations", markers="wal.kv.markers")
    assert (topics.mutations, topics.markers) == ("wal.kv.mutations", "wal.kv.markers")
    assert not set(topics) & set(default_topics("kv").all())
    reserved = reserved_topics("walstream", "walstream.namespaces")
    assert all(reserved.covers(topic) for topic in topics)  # no record's target names one


def test_mutation_topics_keep_records_forever_at_the_namespaces_partitions():
    specs = mutation_topic_specs("kv", 6, replication_factor=5, min_insync_replicas=3)
    assert [spec.name for spec in specs] == ["wal.kv.mutations", "wal.kv.markers"]
    for spec in specs:
        config = spec.topic_config()
        assert config["cleanup.policy"] == "delete"
        assert (config["retention.ms"], config["retention.bytes"]) == ("-1", "-1")
        assert spec.partitions == 6
        assert (spec.replication_factor, config["min.insync.replicas"]) == (5, "3")


def test_a_namespace_taking_mutations_gets_both_topics_on_apply():
    plain = _by_name(namespace_topic_specs(parse_namespace({"name": "kv"}), Settings()))
    assert set(plain) == set(default_topics("kv").all())
    config = parse_namespace({"name": "kv", "mutations": {}})
    specs = _by_name(namespace_topic_specs(config, Settings(default_partitions=8)))
    assert set(specs) == {*default_topics("kv").all(), "wal.kv.mutations", "wal.kv.markers"}
    assert specs["wal.kv.markers"].partitions == specs[config.topics.log].partitions == 8
