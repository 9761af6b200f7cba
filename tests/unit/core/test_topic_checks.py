"""ns apply's topic checks (walstream.core.topic_checks, walstream.kafka.admin): the decisions;
the real-broker proof is tests/integration/test_ns_apply_topics.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from walstream.core.topic_checks import name_problems, partition_problems
from walstream.errors import TopicError
from walstream.kafka import clients as clients_module
from walstream.kafka.admin import deployment_topic, ensure_topics
from walstream.settings import Settings
from walstream.testing import FakeAdmin
from walstream.topology import TopicSpec, delay_topic, poison_topic

ROLES = {"log": "wal.a.log", "retry": "wal.a.retry", "dlq": "wal.a.dlq"}


def test_every_topic_with_another_partition_count_is_named():
    problems = partition_problems(
        "a", ROLES, partitions={"wal.a.log": 6, "wal.a.retry": 4, "wal.a.dlq": 2}, wanted=4
    )
    assert [(p.role, p.topic) for p in problems] == [("log", "wal.a.log"), ("dlq", "wal.a.dlq")]
    assert "has 6 partitions" in str(problems[0])
    assert "WALSTREAM_DEFAULT_PARTITIONS=4" in str(problems[0])


def test_a_topic_missing_after_creation_is_a_problem_and_one_not_asked_about_is_not():
    problems = partition_problems("a", ROLES, partitions={"wal.a.log": None}, wanted=4)
    assert [p.topic for p in problems] == ["wal.a.log"]
    assert "not on the cluster" in problems[0].reason
    assert partition_problems("a", ROLES, partitions={}, wanted=4) == []


def test_names_of_other_namespaces_and_of_the_deployment_are_refused():
    owners = {"wal.a.log": "a", "wal.b.log": "b"}
    roles = {"log": "wal.a.log", "retry": "wal.b.log", "dlq": "ctl"}

    def reserved(topic: str) -> str | None:
        return "the control topic" if topic == "ctl" else None

    problems = name_problems("a", roles, owners=owners, reserved=reserved)
    assert [(p.role, p.reason) for p in problems] == [
        ("retry", "is used by namespace b"),
        ("dlq", "is the control topic of this deployment"),
    ]


def test_the_deployments_own_topics():
    settings = Settings(app_id="app", control_topic="app.ns")
    assert deployment_topic("app.ns", settings) == "the control topic"
    assert deployment_topic(poison_topic("app"), settings) == "the poison topic"
    assert deployment_topic(delay_topic("app", 0), settings) == "a delay tier"
    assert deployment_topic(delay_topic("app", 3_600_000), settings) == "a delay tier"
    assert "changelog" in str(deployment_topic("app-attempts-changelog", settings))
    assert deployment_topic("app-__assignor-__leader", settings) is not None
    for free in ("wal.a.log", "application.log", "app.logs", "other-attempts-changelog"):
        assert deployment_topic(free, settings) is None, free


class _RefusingAdmin(FakeAdmin):
    async def create_topics(self, new_topics):
        return SimpleNamespace(
            topic_errors=[(t.name, 44, "Topic creation policy violated") for t in new_topics]
        )


async def test_a_creation_the_broker_refuses_raises_naming_the_topic(monkeypatch):
    # walstream.kafka.clients makes every admin client
    monkeypatch.setattr(clients_module, "AIOKafkaAdminClient", _RefusingAdmin)
    with pytest.raises(TopicError, match=r"wal\.a\.log") as raised:
        await ensure_topics("kafka:9092", [TopicSpec(name="wal.a.log", partitions=4)])
    assert "error 44" in str(raised.value)
