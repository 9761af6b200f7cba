"""What ensure_topics asks the cluster for (a stand-in admin client: the broker test is
tests/integration/test_topics.py; the embedded broker is one broker, so capping to two is
only visible here)."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import KafkaConnectionError

from walstream.kafka import clients as clients_module
from walstream.kafka.admin import ensure_topics
from walstream.namespaces.broadcast import namespace_topic_specs
from walstream.namespaces.config import parse_namespace
from walstream.settings import Settings
from walstream.testing import FakeAdmin


@pytest.fixture
def fake_admin(monkeypatch):
    admin = type(
        "Admin", (FakeAdmin,), {"brokers": 2, "existing": (), "described": [], "created": []}
    )
    # walstream.kafka.clients makes every admin client
    monkeypatch.setattr(clients_module, "AIOKafkaAdminClient", admin)
    return admin


async def test_new_topics_are_created_capped_to_the_cluster_with_their_retention(fake_admin):
    specs = namespace_topic_specs(parse_namespace({"name": "orders"}), Settings())
    assert await ensure_topics("kafka:9092", specs) == []
    assert [t.name for t in fake_admin.created] == [s.name for s in specs]
    for topic in fake_admin.created:
        assert topic.replication_factor == 2  # asked 3, the cluster has 2 brokers
        assert topic.topic_configs == {
            "cleanup.policy": "delete",
            "retention.ms": "-1",
            "retention.bytes": "-1",
            "min.insync.replicas": "2",
        }


async def test_an_existing_topic_is_described_and_its_weaker_settings_returned(fake_admin, caplog):
    specs = namespace_topic_specs(parse_namespace({"name": "orders"}), Settings())
    fake_admin.existing = tuple(s.name for s in specs)
    kafka_default: list[tuple] = [
        ("cleanup.policy", "delete", False, 5, False, []),
        ("retention.ms", "604800000", False, 5, False, []),
        ("retention.bytes", "-1", False, 5, False, []),
        ("min.insync.replicas", "2", False, 5, False, []),
    ]
    fake_admin.described = [(0, None, 2, s.name, kafka_default) for s in specs]
    with caplog.at_level(logging.WARNING):
        drifts = await ensure_topics("kafka:9092", specs)
    assert fake_admin.created == []  # never re-created, never altered
    assert [(d.topic, d.key, d.actual) for d in drifts] == [
        (s.name, "retention.ms", "604800000") for s in specs
    ]
    assert caplog.text.count("--add-config retention.ms=-1") == 3


async def test_a_topic_the_broker_will_not_describe_is_skipped_with_a_warning(fake_admin, caplog):
    specs = namespace_topic_specs(parse_namespace({"name": "orders"}), Settings())
    fake_admin.existing = tuple(s.name for s in specs)
    fake_admin.described = [(29, "denied", 2, s.name, []) for s in specs]
    with caplog.at_level(logging.WARNING):
        assert await ensure_topics("kafka:9092", specs) == []
    assert "could not describe topic" in caplog.text
    fake_admin.described = KafkaConnectionError("gone")
    assert await ensure_topics("kafka:9092", specs) == []
