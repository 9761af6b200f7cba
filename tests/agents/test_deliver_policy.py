"""The worker re-validates every record against its namespace's current policy (issue 14 items 1
and 2): a record produced straight into a log that names walstream's own topics, another
namespace, a hostile kv table or a far-future write time is dead-lettered with a reason naming
the policy, and nothing is connected to or run (the real TargetPool, no producer made)."""

from __future__ import annotations

import pytest

from walstream.agents.outcomes import Outcome, Source
from walstream.clock import FakeClock
from walstream.core.dlq import parse_dlq_record
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import encode_event
from walstream.records import Envelope, Lifecycle, encode_envelope
from walstream.settings import Settings
from walstream.targets.pool import TargetPool
from walstream.testing import RecordingEmitter, fake_deliverer, registry_of
from walstream.topology import default_topics, delay_topic

NOW = 1_800_000_000_000
SETTINGS = Settings(bootstrap_servers="home:9092", app_id="walstream", kv_url="postgresql://x:1/x")
ATTACKER_LOG = Source(default_topics("attacker").log, 0, 7)


class Factory:
    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self, cluster: str):
        self.made.append(cluster)
        raise AssertionError(f"a producer for {cluster} was made")


@pytest.fixture
def registry():
    registry = registry_of(
        {"name": "attacker", "target": {"type": "kafka", "topic": "attacker-sink"}},
        {
            "name": "victim",
            "target": {
                "type": "http",
                "url": "http://127.0.0.1:9/hook",
                "headers": {"Authorization": "Bearer victim-secret"},
            },
        },
    )
    return registry


@pytest.fixture
def emitter():
    return RecordingEmitter()


@pytest.fixture
async def pool(registry):
    pool = TargetPool(SETTINGS, registry, FakeClock(NOW), producer_factory=Factory())
    yield pool
    await pool.close()


@pytest.fixture
def deliverer(registry, pool, emitter):
    return fake_deliverer(registry, None, emitter, FakeClock(NOW), pool=pool)


def crafted(target, *, namespace="attacker", owt=NOW):
    return Envelope(
        "id-evil",
        namespace,
        "k",
        {"v": 1, "name": "victim", "target": {"type": "kafka", "topic": "attacker-sink"}},
        "json",
        target,
        Lifecycle(NOW, owt, 0),
        "tok-evil",
        NOW,
    )


def nothing_ran(pool):
    assert pool._producer_factory.made == []
    assert pool._http is None
    assert pool._kv is None


async def dead_letter(deliverer, emitter, env):
    outcome = await deliverer.handle(encode_envelope(env), b"k", ATTACKER_LOG)
    assert outcome is Outcome.DEAD
    [written] = emitter.emitted
    assert written.topic == default_topics("attacker").dlq  # the attacker's own DLQ
    return parse_dlq_record(written.key, written.value, written.headers, partition=0, offset=0)


@pytest.mark.parametrize(
    "topic",
    [
        "walstream.namespaces",  # the control topic
        default_topics("victim").log,
        default_topics("victim").dlq,
        "walstream-ordering-changelog",
        delay_topic("walstream", 60_000),
        "walstream.poison",  # topology.poison_topic (issue 13)
    ],
)
async def test_a_record_naming_a_walstream_topic_is_dead_lettered_and_nothing_runs(
    deliverer, emitter, pool, topic
):
    entry = await dead_letter(deliverer, emitter, crafted({"type": "kafka", "topic": topic}))
    assert entry.error_class == "target_not_allowed"
    assert "allowed_targets" in entry.reason
    assert "walstream's own topics" in entry.reason
    assert entry.attempts == 1
    nothing_ran(pool)


async def test_a_record_claiming_another_namespace_is_judged_by_its_topics_namespace(
    deliverer, emitter, pool
):
    """Read from attacker's log, it may not borrow victim's target (and its secret header)."""
    victims = {"type": "http", "url": "http://127.0.0.1:9/hook"}
    entry = await dead_letter(deliverer, emitter, crafted(victims, namespace="victim"))
    assert entry.error_class == "target_not_allowed"
    assert "record-level targets are off" in entry.reason
    nothing_ran(pool)


@pytest.mark.parametrize(
    "table", ['x" (a INT); DROP TABLE app_users; CREATE TABLE "y', "x; DROP TABLE app_users; --"]
)
async def test_a_hostile_kv_table_is_dead_lettered_and_no_sql_runs(deliverer, emitter, pool, table):
    entry = await dead_letter(
        deliverer, emitter, crafted({"type": "kv", "table": table, "key": "k"})
    )
    assert entry.error_class == "target_not_allowed"
    assert "allowed_targets" in entry.reason
    nothing_ran(pool)  # no kv database opened


async def test_a_far_future_original_write_time_is_dead_lettered_before_the_target(
    deliverer, emitter, pool
):
    env = crafted({"type": "kafka", "topic": "attacker-sink"}, owt=9_000_000_000_000_000)
    entry = await dead_letter(deliverer, emitter, env)
    assert entry.error_class == "bad_write_time"
    assert "1 h in the future" in entry.reason
    nothing_ran(pool)


async def test_each_attempt_is_checked_against_the_namespaces_current_policy(
    registry, deliverer, emitter, pool
):
    """Allowed when written, refused on its retry once the namespace stops allowing it."""
    wide = parse_namespace(
        {
            "name": "attacker",
            "target": {"type": "kafka", "topic": "attacker-sink"},
            "allowed_targets": {"kafka_topics": ["audit"]},
        }
    )
    registry.apply(*encode_event(wide, 10, 2))
    env = crafted({"type": "kafka", "topic": "audit"})
    outcome = await deliverer.handle(encode_envelope(env), b"k", ATTACKER_LOG)
    assert outcome is Outcome.RETRY  # allowed: it tried the cluster (the fake one fails)
    assert pool._producer_factory.made == ["home:9092"]
    emitter.emitted.clear()
    assert wide.target is not None
    narrow = parse_namespace({"name": "attacker", "target": wide.target.wire})
    registry.apply(*encode_event(narrow, 20, 3))
    entry = await dead_letter(deliverer, emitter, env._replace(attempt=1))
    assert entry.error_class == "target_not_allowed"
    assert "record-level targets are off" in entry.reason
    assert pool._producer_factory.made == ["home:9092"]  # nothing tried the second time
