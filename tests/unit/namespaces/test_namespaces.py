"""Namespace config parsing, files, and the registry fold (last value wins, tombstone deletes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from walstream.cli import cli
from walstream.core.ordering import OnDlq
from walstream.errors import ConfigError, NamespaceNotFoundError
from walstream.namespaces.config import MutationsConfig, Ordering, parse_namespace
from walstream.namespaces.files import load_namespace_files
from walstream.namespaces.registry import Change, NamespaceRegistry, encode_event
from walstream.namespaces.replication import MemcachedServer, Replicate, Replication

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


# -- replication regions (issue 17 item 1) --

REGIONS = {
    "us-east": {"memcached": ["127.0.0.1:11211", "Cache-1.Example:11212"]},
    "eu_west": {"memcached": ["[::1]:11211"], "bootstrap_servers": "k1:9092,k2:9092"},
}


def _replicated(**replication):
    return {"name": "evc", "replication": {"regions": REGIONS, **replication}}


def _replication(obj) -> Replication:
    replication = parse_namespace(obj).replication
    assert replication is not None
    return replication


def test_a_namespace_names_its_regions_and_round_trips():
    ns = parse_namespace(_replicated(replicate="invalidate", max_lag_s=60, tombstone_ttl_s=600))
    replication = ns.replication
    assert replication is not None
    assert replication.replicate is Replicate.INVALIDATE
    assert replication.region_names == ("eu_west", "us-east")
    east = replication.region("us-east")
    assert east is not None
    assert east.bootstrap_servers is None
    assert east.memcached == (
        MemcachedServer("127.0.0.1", 11211),
        MemcachedServer("cache-1.example", 11212),
    )
    assert replication.region("nowhere") is None
    assert ns.to_json()["replication"] == {
        "replicate": "invalidate",
        "regions": {
            "eu_west": {"memcached": ["[::1]:11211"], "bootstrap_servers": "k1:9092,k2:9092"},
            "us-east": {"memcached": ["127.0.0.1:11211", "cache-1.example:11212"]},
        },
        "max_lag_s": 60,
        "tombstone_ttl_s": 600,
    }
    assert parse_namespace(ns.to_json()) == ns


def test_replication_defaults_to_values_and_a_tombstone_outliving_the_lag():
    replication = _replication(_replicated())
    assert replication.replicate is Replicate.VALUE
    assert (replication.max_lag_s, replication.tombstone_ttl_s) == (86_400, 172_800)
    # The default tombstone is twice the lag allowed, within memcached's 30 days of seconds.
    assert _replication(_replicated(max_lag_s=100)).tombstone_ttl_s == 200
    assert _replication(_replicated(max_lag_s=20 * 86_400)).tombstone_ttl_s == 30 * 86_400


def test_a_namespace_without_replication_publishes_no_such_key():
    ns = parse_namespace({"name": "plain"})
    assert ns.replication is None
    assert "replication" not in ns.to_json()


def test_regions_load_from_a_topology_file(tmp_path):
    (tmp_path / "evc.toml").write_text(
        'name = "evc"\n'
        "[replication]\n"
        'replicate = "invalidate"\n'
        "[replication.regions.us-east]\n"
        'memcached = ["10.0.0.1:11211", "10.0.0.2:11211"]\n'
        "[replication.regions.eu-west]\n"
        'memcached = ["10.1.0.1:11211"]\n'
        'bootstrap_servers = "kafka.eu:9092"\n'
    )
    (ns,) = load_namespace_files([tmp_path])
    assert ns.replication is not None
    assert ns.replication.region_names == ("eu-west", "us-east")
    (tmp_path / "evc.toml").write_text(
        'name = "evc"\n[replication.regions.us-east]\nmemcached = ["10.0.0.1:0"]\n'
        '[replication.regions.eu-west]\nmemcached = ["10.1.0.1:11211"]\n'
    )
    with pytest.raises(ConfigError) as info:
        load_namespace_files([tmp_path])
    assert "replication.regions.us-east.memcached[0]" in info.value.key
    assert "evc.toml" in info.value.key


def _with_region(name, region):
    return {"name": "evc", "replication": {"regions": {**REGIONS, name: region}}}


def _with_server(server):
    return _with_region("ap", {"memcached": ["127.0.0.2:11211", server]})


@pytest.mark.parametrize(
    ("obj", "key"),
    [
        ({"name": "evc", "replication": ["us-east"]}, "replication"),
        (_replicated(bogus=1), "replication.bogus"),
        (_replicated(replicate="copy"), "replication.replicate"),
        (_replicated(replicate=["value"]), "replication.replicate"),
        (_replicated(max_lag_s=0), "replication.max_lag_s"),
        (_replicated(max_lag_s="60"), "replication.max_lag_s"),
        (_replicated(max_lag_s=True), "replication.max_lag_s"),
        (_replicated(max_lag_s=30 * 86_400), "replication.max_lag_s"),
        (_replicated(tombstone_ttl_s=30 * 86_400 + 1), "replication.tombstone_ttl_s"),
        (_replicated(max_lag_s=600, tombstone_ttl_s=600), "replication.tombstone_ttl_s"),
        ({"name": "evc", "replication": {}}, "replication.regions"),
        ({"name": "evc", "replication": {"regions": []}}, "replication.regions"),
        (
            {"name": "evc", "replication": {"regions": {"us-east": REGIONS["us-east"]}}},
            "replication.regions",
        ),
        (_with_region("US-EAST", {"memcached": ["h:1"]}), "replication.regions.US-EAST"),
        (_with_region("a.b", {"memcached": ["h:1"]}), "replication.regions.a.b"),
        (_with_region("ap\n", {"memcached": ["h:1"]}), "replication.regions.ap\n"),
        (_with_region("a" * 64, {"memcached": ["h:1"]}), f"replication.regions.{'a' * 64}"),
        (_with_region("ap", ["h:1"]), "replication.regions.ap"),
        (
            _with_region("ap", {"memcached": ["h:1"], "kafka": "k:1"}),
            "replication.regions.ap.kafka",
        ),
        (_with_region("ap", {}), "replication.regions.ap.memcached"),
        (_with_region("ap", {"memcached": []}), "replication.regions.ap.memcached"),
        (_with_region("ap", {"memcached": "h:1"}), "replication.regions.ap.memcached"),
        (
            _with_region("ap", {"memcached": ["h:1"], "bootstrap_servers": ""}),
            "replication.regions.ap.bootstrap_servers",
        ),
        (
            _with_region("ap", {"memcached": ["h:1"], "bootstrap_servers": " , "}),
            "replication.regions.ap.bootstrap_servers",
        ),
        (
            _with_region("ap", {"memcached": ["h:1"], "bootstrap_servers": "k" * 1025}),
            "replication.regions.ap.bootstrap_servers",
        ),
        (
            _with_region("ap", {"memcached": ["h:1"], "bootstrap_servers": ["k:1"]}),
            "replication.regions.ap.bootstrap_servers",
        ),
        (_with_server(11211), "replication.regions.ap.memcached[1]"),
        (_with_server("cache"), "replication.regions.ap.memcached[1]"),
        (_with_server("cache:"), "replication.regions.ap.memcached[1]"),
        (_with_server("cache:0"), "replication.regions.ap.memcached[1]"),
        (_with_server("cache:65536"), "replication.regions.ap.memcached[1]"),
        (_with_server("cache:+80"), "replication.regions.ap.memcached[1]"),
        (_with_server("cache:11211\n"), "replication.regions.ap.memcached[1]"),
        (_with_server(":11211"), "replication.regions.ap.memcached[1]"),
        (_with_server("ca che:11211"), "replication.regions.ap.memcached[1]"),
        (_with_server("cache.:11211"), "replication.regions.ap.memcached[1]"),
        (_with_server("-cache:11211"), "replication.regions.ap.memcached[1]"),
        (_with_server("caché:11211"), "replication.regions.ap.memcached[1]"),
        (_with_server(f"{'a' * 64}:11211"), "replication.regions.ap.memcached[1]"),
        (_with_server(f"{'a.' * 127}a:11211"), "replication.regions.ap.memcached[1]"),
        (_with_server("256.0.0.1:11211"), "replication.regions.ap.memcached[1]"),
        (_with_server("10.1:11211"), "replication.regions.ap.memcached[1]"),
        (_with_server("::1:11211"), "replication.regions.ap.memcached[1]"),
        (_with_server("[cache]:11211"), "replication.regions.ap.memcached[1]"),
        (_with_server("127.0.0.2:11211"), "replication.regions.ap.memcached[1]"),
        (_with_server("[::1]:11211"), "replication.regions.eu_west.memcached[0]"),
        (_with_server("CACHE-1.example:11212"), "replication.regions.us-east.memcached[1]"),
    ],
)
def test_invalid_replication_names_the_field(obj, key):
    with pytest.raises(ConfigError) as info:
        parse_namespace(obj)
    assert info.value.key == key
    assert key in str(info.value)


def test_servers_are_told_apart_as_addresses_not_spellings():
    ap = _replication(_with_region("ap", {"memcached": ["[0:0::2]:11211", "[::3]:11211"]})).region(
        "ap"
    )
    assert ap is not None
    assert [str(server) for server in ap.memcached] == ["[::2]:11211", "[::3]:11211"]
    with pytest.raises(ConfigError, match="listed twice"):
        parse_namespace(_with_region("ap", {"memcached": ["[::2]:11211", "[0::2]:11211"]}))
    with pytest.raises(ConfigError, match="already a memcached server of region ap"):
        parse_namespace(_with_region("ap", {"memcached": ["[0:0::1]:11211"]}))


def test_ns_apply_refuses_bad_regions_naming_the_field_before_any_broker(tmp_path):
    (tmp_path / "evc.toml").write_text(
        'name = "evc"\n[replication]\nreplicate = "copy"\n'
        '[replication.regions.a]\nmemcached = ["10.0.0.1:11211"]\n'
        '[replication.regions.b]\nmemcached = ["10.0.0.2:11211"]\n'
    )
    # No broker listens on port 9: the file is refused before anything is published.
    result = CliRunner().invoke(
        cli, ["ns", "apply", str(tmp_path)], env={"WALSTREAM_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    )
    assert result.exit_code == 2
    assert "replication.replicate='copy': must be value | invalidate" in result.output


def test_the_mutations_block_sets_the_completion_timeout_and_round_trips():
    ns = parse_namespace({"name": "kv", "mutations": {"completion_timeout_s": 30}})
    assert ns.mutations == MutationsConfig(completion_timeout_ms=30_000)
    assert ns.to_json()["mutations"] == {"completion_timeout_s": 30}
    assert parse_namespace(ns.to_json()) == ns
    default = parse_namespace({"name": "kv", "mutations": {}})
    assert default.mutations is not None
    assert default.mutations.completion_timeout_ms == 600_000


def test_a_namespace_without_mutations_publishes_no_such_key():
    ns = parse_namespace({"name": "plain"})
    assert ns.mutations is None
    assert "mutations" not in ns.to_json()


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"completion_timeout_s": 0}, "mutations.completion_timeout_s"),
        ({"completion_timeout_s": 86_401}, "mutations.completion_timeout_s"),
        ({"completion_timeout_s": 1.5}, "mutations.completion_timeout_s"),
        ({"completion_timeout_s": True}, "mutations.completion_timeout_s"),
        ({"completion_timeout_s": "600"}, "mutations.completion_timeout_s"),
        ({"timeout": 5}, "mutations.timeout"),
        ([], "mutations"),
    ],
)
def test_an_invalid_mutations_block_names_the_field(block, key):
    with pytest.raises(ConfigError) as info:
        parse_namespace({"name": "kv", "mutations": block})
    assert info.value.key == key


def test_the_completion_timeout_bounds_are_inclusive():
    for seconds in (1, 86_400):
        ns = parse_namespace({"name": "kv", "mutations": {"completion_timeout_s": seconds}})
        assert ns.mutations == MutationsConfig(completion_timeout_ms=seconds * 1000)
