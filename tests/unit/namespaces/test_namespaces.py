"""Namespace config parsing, files, and the registry fold (last value wins, tombstone deletes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from walstream.core.ordering import OnDlq
from walstream.errors import ConfigError, NamespaceNotFoundError
from walstream.namespaces.config import Ordering, parse_namespace
from walstream.namespaces.files import load_namespace_files
from walstream.namespaces.registry import Change, NamespaceRegistry, encode_event

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_and_derived_topics():
    ns = parse_namespace({"name": "pds"})
    assert (ns.topics.log, ns.topics.retry, ns.topics.dlq) == (
        "wal.pds.log",
        "wal.pds.retry",
        "wal.pds.dlq",
    )
    assert ns.max_attempts == 10
    assert ns.max_delay_ms == 7 * 24 * 3600 * 1000
    assert ns.target is None
    assert (ns.ordering, ns.on_dlq) == (Ordering.NONE, OnDlq.RELEASE)


def test_overrides_are_kept_and_round_trip():
    obj = {
        "name": "evc_foobar",
        "partitions": 8,
        "topics": {"log": "evcache_foobar"},
        "backoff": {"base_ms": 10, "multiplier": 3, "cap_ms": 1000, "jitter": 0.5},
        "max_attempts": 3,
        "target": {"type": "kv", "table": "t", "key": "k"},
        "max_payload_bytes": 100,
        "max_delay_ms": 0,
        "description": "x",
        "ordering": "key",
        "on_dlq": "hold",
        "allowed_targets": {"http": ["https://Hooks.example/"], "kafka": ["b:1,a:2"]},
    }
    ns = parse_namespace(obj)
    assert ns.to_json()["allowed_targets"] == {
        "http": ["https://hooks.example:443"],
        "kafka": ["a:2,b:1"],
    }
    assert (ns.ordering, ns.on_dlq) == (Ordering.KEY, OnDlq.HOLD)
    assert ns.topics.log == "evcache_foobar"
    assert ns.topics.dlq == "wal.evc_foobar.dlq"
    assert ns.backoff.multiplier == 3.0
    assert parse_namespace(ns.to_json()) == ns


@pytest.mark.parametrize(
    ("obj", "key"),
    [
        ({"name": "Bad.Name"}, "name"),
        ({"name": "a" * 64}, "name"),
        ({"name": "a", "bogus": 1}, "bogus"),
        ({"name": "a", "max_attempts": 0}, "max_attempts"),
        ({"name": "a", "max_attempts": "3"}, "max_attempts"),
        ({"name": "a", "partitions": 0}, "partitions"),
        ({"name": "a", "backoff": {"base_ms": 10, "cap_ms": 5}}, "backoff.cap_ms"),
        ({"name": "a", "backoff": {"jitter": 2}}, "jitter"),
        ({"name": "a", "backoff": {"nope": 2}}, "backoff.nope"),
        ({"name": "a", "topics": {"log": "x", "retry": "x"}}, "topics"),
        ({"name": "a", "topics": {"audit": "x"}}, "topics.audit"),
        ({"name": "a", "target": {"type": "kafka"}}, "target.topic"),
        ({"name": "a", "allowed_targets": ["http://x"]}, "allowed_targets"),
        ({"name": "a", "allowed_targets": {"ftp": []}}, "allowed_targets.ftp"),
        ({"name": "a", "allowed_targets": {"http": ["http://x/path"]}}, "allowed_targets.http"),
        ({"name": "a", "allowed_targets": {"http": ["x.example"]}}, "allowed_targets.http"),
        ({"name": "a", "allowed_targets": {"kafka": [" , "]}}, "allowed_targets.kafka"),
        (
            {"name": "a", "target": {"type": "http", "url": "http://h", "headers": {"host": "x"}}},
            "target.headers.host",
        ),
        ({"name": "a", "max_delay_ms": -1}, "max_delay_ms"),
        ({"name": "a", "ordering": "strict"}, "ordering"),
        ({"name": "a", "on_dlq": True}, "on_dlq"),
    ],
)
def test_invalid_definitions_name_the_key(obj, key):
    with pytest.raises(ConfigError) as info:
        parse_namespace(obj)
    assert info.value.key == key


def test_topology_files_are_valid():
    configs = load_namespace_files([ROOT / "topology" / "namespaces"])
    assert {c.name for c in configs} >= {"demo", "pds"}


def test_bad_file_is_named(tmp_path):
    (tmp_path / "a.toml").write_text('name = "a"\nmax_attempts = -1\n')
    with pytest.raises(ConfigError) as info:
        load_namespace_files([tmp_path])
    assert "a.toml" in info.value.key
    (tmp_path / "a.toml").write_text("name = ")
    with pytest.raises(ConfigError, match="unreadable"):
        load_namespace_files([tmp_path])


def test_duplicate_names_across_files(tmp_path):
    (tmp_path / "a.toml").write_text('name = "same"\n')
    (tmp_path / "b.toml").write_text('name = "same"\n')
    with pytest.raises(ConfigError, match="more than one file"):
        load_namespace_files([tmp_path])


def test_registry_fold_last_value_wins_and_tombstone_deletes():
    registry = NamespaceRegistry()
    key, v1 = encode_event(parse_namespace({"name": "a", "max_attempts": 3}), 1)
    _, v2 = encode_event(parse_namespace({"name": "a", "max_attempts": 7}), 2)
    assert registry.apply(key, v1) is Change.APPLIED
    assert registry.get("a").max_attempts == 3
    assert registry.apply(key, v2) is Change.APPLIED
    assert registry.get("a").max_attempts == 7
    assert registry.updated_at_ms("a") == 2
    assert registry.apply(key, None) is Change.DELETED
    assert "a" not in registry
    with pytest.raises(NamespaceNotFoundError):
        registry.get("a")
    assert registry.apply(key, None) is Change.IGNORED


def test_registry_makes_a_namespace_with_a_bad_last_event_unavailable():
    """As a process started after compaction (which sees only the bad event) would: issue 14
    item 10, tests/unit/namespaces/test_registry.py."""
    key, good = encode_event(parse_namespace({"name": "a"}), 1)
    _, other = encode_event(parse_namespace({"name": "b"}), 1)
    for bad in [
        b"not json",
        b'{"v": 9}',
        b'{"v": 1, "config": {"name": "a", "max_attempts": -1}}',
        other,  # key and config disagree
    ]:
        registry = NamespaceRegistry()
        registry.apply(key, good)
        assert registry.apply(key, bad) is Change.UNREADABLE
        assert registry.names() == []
        assert set(registry.unreadable) == {"a"}
    registry = NamespaceRegistry()
    registry.apply(key, good)
    assert registry.apply(None, good) is Change.IGNORED
    assert registry.names() == ["a"]
