"""core.outbox's replication records: the fan-out's region copies and the region DLQ entries."""

from __future__ import annotations

import pytest

from walstream.core.dlq import DlqEntry, parse_dlq_record
from walstream.core.outbox import (
    ORIGIN_REPAIR_HEADER,
    Outgoing,
    fanout_regions,
    is_origin_repair,
    origin_region,
    origin_repair,
    region_copy,
    region_dlq_entry,
    route_write,
)
from walstream.records import decode_envelope, encode_envelope
from walstream.testing.replication import cache_envelope
from walstream.topology import region_dlq_topic, region_topic, region_topic_specs


def test_every_region_but_the_origin_gets_a_copy():
    origin = origin_region(encode_envelope(cache_envelope("set", "k", b"v", origin="b")))
    assert origin == "b"
    assert fanout_regions(origin, ["a", "b", "c"]) == ["a", "c"]
    assert fanout_regions(None, ["a", "b", "c"]) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "value", [None, b"", b"not json", b"[1]", b'{"target": 3}', b'{"target": {"origin_region": 1}}']
)
def test_a_record_without_an_origin_goes_to_every_region(value):
    assert origin_region(value) is None


def test_a_copy_keeps_key_and_bytes_in_value_mode():
    env = cache_envelope("set", "k", b"v", ttl=9)
    value = encode_envelope(env)
    copy = region_copy(value, b"k", env, topic=region_topic("cache", "b"))
    assert (copy.topic, copy.partition, copy.key, copy.value) == (
        "wal.cache.region.b",
        None,
        b"k",
        value,
    )


def test_invalidate_mode_sends_a_set_as_a_delete_of_the_same_key_and_version():
    env = cache_envelope("set", "k", b"v", ttl=9, owt_ms=77, token="t9")
    copy = region_copy(encode_envelope(env), b"k", env, topic="t", invalidate=True)
    sent = decode_envelope(copy.value)
    assert sent.target == {"type": "memcached", "op": "delete", "key": "k", "origin_region": "a"}
    assert sent.payload is None
    assert (sent.id, sent.idempotency_token, sent.lifecycle) == (env.id, "t9", env.lifecycle)
    assert copy.key == b"k"


def test_invalidate_mode_sends_deletes_and_touches_as_they_are():
    for env in (cache_envelope("delete", "k"), cache_envelope("touch", "k", ttl=3)):
        value = encode_envelope(env)
        assert region_copy(value, b"k", env, topic="t", invalidate=True).value == value


def test_a_region_dlq_entry_reads_back_with_its_reason():
    out = region_dlq_entry(
        b"raw",
        dlq_topic=region_dlq_topic("cache", "b"),
        partition=2,
        record_id="id-1",
        namespace="cache",
        reason="key_bad_char",
        source="wal.cache.region.b[2]@7",
        dead_at_ms=5,
        key="a b",
    )
    assert (out.topic, out.partition, out.key) == ("wal.cache.region.b.dlq", 2, b"id-1")
    headers = dict(out.headers or [])
    assert headers["wal-error"] == b"key_bad_char"
    assert headers["wal-error-class"] == b"PoisonOperation"
    assert headers["wal-source"] == b"wal.cache.region.b[2]@7"
    entry = parse_dlq_record(out.key, out.value, out.headers or [], partition=2, offset=0)
    assert isinstance(entry, DlqEntry)
    assert (entry.id, entry.reason, entry.key, entry.value) == (
        "id-1",
        "key_bad_char",
        "a b",
        b"raw",
    )


def test_a_region_has_a_topic_and_a_dlq_kept_forever():
    specs = region_topic_specs("cache", "b", 3, replication_factor=1, min_insync_replicas=1)
    assert [s.name for s in specs] == ["wal.cache.region.b", "wal.cache.region.b.dlq"]
    assert all(s.partitions == 3 and s.config["retention.ms"] == "-1" for s in specs)


def test_an_origin_repair_goes_to_its_origin_only():
    assert fanout_regions("b", ["a", "b", "c"], repair=True) == ["b"]
    # a fan-out that does not copy to the origin (a region's own): nothing
    assert fanout_regions("b", ["c"], repair=True) == []
    # no readable origin: its first copy reached every region, whose writers dead-letter it
    assert fanout_regions(None, ["a", "b", "c"], repair=True) == []
    assert fanout_regions("b", ["a", "b", "c"], repair=False) == ["a", "c"]


def test_an_origin_repair_is_the_same_record_with_its_header():
    env = cache_envelope("set", "k", b"v", origin="a")
    logged = route_write(env, "wal.cache.log", env.lifecycle.deliver_at_ms, "")
    repair = origin_repair(logged)
    assert (repair.topic, repair.key, repair.value, repair.due) == (
        logged.topic,
        logged.key,
        logged.value,
        None,
    )
    assert repair.headers == [("wal-origin-repair", b"1")]
    assert ORIGIN_REPAIR_HEADER == "wal-origin-repair"
    assert is_origin_repair(repair.headers)
    assert not is_origin_repair(logged.headers)
    # headers it had are kept
    kept = origin_repair(Outgoing("t", b"k", b"v", headers=[("h", b"x")]))
    assert kept.headers == [("h", b"x"), ("wal-origin-repair", b"1")]


@pytest.mark.parametrize(
    "headers",
    [None, [], [("wal-origin-repair", b"0")], [("wal-origin-repair", b"")], [("other", b"1")]],
)
def test_only_the_repair_header_of_value_1_makes_a_repair(headers):
    assert not is_origin_repair(headers)
