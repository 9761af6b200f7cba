"""The namespace registry folds to the same result before and after compaction (issue 14 item 10).

Compaction keeps (at least) the last record of each key, so a process started after it may see
only that one. On 9e4a94b an unreadable last event left running processes on the old config
while a fresh process had none, and an older event read later replaced a newer one.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walstream.errors import (
    ConfigError,
    NamespaceNotFoundError,
    NamespaceUnavailableError,
    VersionConflictError,
)
from walstream.namespaces.config import NamespaceConfig, parse_namespace
from walstream.namespaces.registry import (
    Change,
    NamespaceRegistry,
    encode_event,
    next_event,
)

Record = tuple[bytes, bytes | None]


@functools.cache
def _event(name: str, version: int, updated: int, topic: str) -> Record:
    return encode_event(config(name, topic), updated, version)


def config(name: str, topic: str = "sink", **extra):
    return parse_namespace({"name": name, "target": {"type": "kafka", "topic": topic}, **extra})


def event(name: str, version: int, updated: int, topic: str = "sink") -> Record:
    return _event(name, version, updated, topic)


def unreadable(name: str) -> Record:
    """An event from a future walstream (``v: 2``)."""
    return name.encode(), orjson.dumps({"v": 2, "updated_at_ms": 9, "config": {"name": name}})


def fold(records: list[Record]) -> NamespaceRegistry:
    registry = NamespaceRegistry()
    for key, value in records:
        registry.apply(key, value)
    return registry


def compacted(records: list[Record]) -> list[Record]:
    """What a compacted topic keeps at least: the last record of each key (tombstones too)."""
    last: dict[bytes, int] = {key: n for n, (key, _) in enumerate(records)}
    return [records[n] for n in sorted(last.values())]


def partly_compacted(records: list[Record], upto: int) -> list[Record]:
    """Compaction part way through: the cleaned part (before ``upto``) keeps the last record of
    each key in it, the head after it keeps everything."""
    return compacted(records[:upto]) + records[upto:]


def topic_of(ns: NamespaceConfig | None) -> str:
    """The topic a namespace's kafka target writes to."""
    assert ns is not None
    assert ns.target is not None
    return ns.target.wire["topic"]


def test_an_unreadable_last_event_makes_the_namespace_unavailable_before_and_after_compaction(
    caplog,
):
    records = [event("pay", 1, 100), event("pay", 2, 200, "sink2"), unreadable("pay")]
    with caplog.at_level(logging.ERROR):
        running = fold(records)
    fresh = fold(compacted(records))
    assert running.snapshot() == fresh.snapshot()
    assert "pay" not in running
    assert "unknown" in running.unreadable["pay"]
    with pytest.raises(NamespaceUnavailableError, match="unreadable") as info:
        running.get("pay")
    assert isinstance(info.value, NamespaceNotFoundError)  # the worker holds its records
    assert any(r.levelno == logging.ERROR and "pay" in r.getMessage() for r in caplog.records)
    # a readable event afterwards makes it available again, everywhere
    records.append(event("pay", 1, 300, "sink3"))
    assert fold(records).snapshot() == fold(compacted(records)).snapshot()
    assert topic_of(fold(records).get("pay")) == "sink3"


def test_an_older_event_arriving_later_does_not_win():
    registry = fold([event("pay", 3, 300, "new")])
    assert registry.apply(*event("pay", 2, 400, "old")) is Change.STALE  # lower version
    assert registry.apply(*event("pay", 3, 299, "old")) is Change.STALE  # same, earlier time
    assert topic_of(registry.get("pay")) == "new"
    assert (registry.version("pay"), registry.stale_events) == (3, 2)
    # the publisher then publishes the winner again (NamespacePublisher._confirm): compacted
    # or not, the registry is the same
    records = [
        event("pay", 3, 300, "new"),
        event("pay", 2, 400, "old"),
        event("pay", 3, 300, "new"),
    ]
    assert fold(records).snapshot() == fold(compacted(records)).snapshot()
    # events from before versions (version 0) compare by updated_at_ms
    legacy = fold([event("old", 0, 500, "b"), event("old", 0, 400, "a")])
    assert topic_of(legacy.get("old")) == "b"


def test_a_tombstone_deletes_and_a_key_naming_another_namespace_is_unreadable():
    records = [event("a", 1, 1), (b"a", None)]
    assert fold(records).snapshot() == fold(compacted(records)).snapshot() == {}
    wrong = [event("b", 1, 1), (b"b", event("c", 2, 2)[1])]
    assert set(fold(wrong).unreadable) == {"b"}
    assert fold(wrong).snapshot() == fold(compacted(wrong)).snapshot()


@st.composite
def histories(draw):
    """Control-topic histories as well-behaved publishers leave them: each apply one version up
    from the one in force; unreadable events and tombstones anywhere."""
    records: list[Record] = []
    versions: dict[str, int] = {}
    clock = 0
    for _ in range(draw(st.integers(1, 30))):
        name = draw(st.sampled_from(["a", "b", "c"]))
        kind = draw(st.sampled_from(["apply", "apply", "apply", "unreadable", "delete"]))
        clock += draw(st.integers(0, 3))
        if kind == "apply":
            versions[name] = versions.get(name, 0) + 1
            topic = draw(st.sampled_from(["s1", "s2", "s3"]))
            records.append(event(name, versions[name], clock, topic))
        elif kind == "unreadable":
            versions.pop(name, None)
            records.append(unreadable(name))
        else:
            versions.pop(name, None)
            records.append((name.encode(), None))
    return records


@settings(max_examples=200, deadline=None)
@given(histories(), st.integers(0, 30))
def test_any_history_folds_the_same_before_during_and_after_compaction(records, upto):
    whole = fold(records).snapshot()
    assert fold(compacted(records)).snapshot() == whole
    assert fold(partly_compacted(records, upto)).snapshot() == whole


def test_next_event_is_one_version_up_and_checks_the_expected_version_and_topics():
    registry = fold([event("pay", 4, 1_000)])
    assert next_event(registry, config("pay"), now_ms=500) == (5, 1_001)  # never earlier
    assert next_event(registry, config("pay"), now_ms=2_000, expect_version=4) == (5, 2_000)
    with pytest.raises(VersionConflictError, match="version 4, not version 3"):
        next_event(registry, config("pay"), now_ms=2_000, expect_version=3)
    assert next_event(registry, config("new"), now_ms=7, expect_version=0) == (1, 7)
    with pytest.raises(VersionConflictError, match="not defined"):
        next_event(registry, config("new"), now_ms=7, expect_version=2)
    moved = config("pay", topics={"retry": "wal.pay.retry2"})
    with pytest.raises(ConfigError, match="strand its retry records") as info:
        next_event(registry, moved, now_ms=2_000)
    assert info.value.key == "pay: topics"


# The worker leaves a replicated namespace's log
# and retry topic to the replication stages, and the API takes only cache operations for it. An
# apply that turns replication on for a live namespace (or off for a replicated one) strands what
# it holds, as the topic change next_event refuses does: its records waiting on the retry topic
# are read by no agent any more (never delivered, their keys blocked), and the fan-out, a new
# consumer group reading the log from its start, sends every record the log still holds (targets
# delivered or not) to each region as an operation, where it is poison (the region DLQs). Turned
# off, the agents read the cache operations as records to deliver. A live namespace keeps whether
# it replicates.
REGIONS = {"a": {"memcached": ["127.0.0.1:11211"]}, "b": {"memcached": ["127.0.0.1:11212"]}}
PLAIN: dict[str, Any] = {"name": "pay", "target": {"type": "http", "url": "http://h/x"}}
REPLICATED: dict[str, Any] = {"name": "pay", "replication": {"regions": REGIONS}}


@pytest.mark.parametrize(("live", "applied"), [(PLAIN, REPLICATED), (REPLICATED, PLAIN)])
def test_a_live_namespace_keeps_whether_it_replicates(
    live: dict[str, Any], applied: dict[str, Any]
) -> None:
    registry = NamespaceRegistry()
    registry.apply(*encode_event(parse_namespace(live), 1_000, 1))
    with pytest.raises(ConfigError) as info:
        next_event(registry, parse_namespace(applied), now_ms=2_000)
    assert info.value.key == "pay: replication"
