"""WriteToLog validation: every bad field is named; good requests become exact envelopes."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.core.cache_request import check_memcached_target
from walstream.core.targets import parse_memcached_target
from walstream.core.validate import (
    MAX_FUTURE_SKEW_MS,
    parse_batch,
    parse_write_request,
)
from walstream.errors import BadRequestError, PayloadTooLargeError, TargetNotAllowedError
from walstream.namespaces.config import parse_namespace
from walstream.topology import reserved_topics

NOW = 1_800_000_000_000
NS = parse_namespace(
    {
        "name": "orders",
        "max_payload_bytes": 64,
        "max_delay_ms": 10_000,
        "target": {"type": "kafka", "topic": "orders.out"},
        "allowed_targets": {
            "http": ["http://127.0.0.1:9"],
            "kafka": ["b1:9092, B2:9092"],
            "kafka_topics": ["t", "team.*"],
            "kv_tables": ["t"],
            "wal": ["other"],
        },
    }
)
RESERVED = reserved_topics("walstream", "walstream.namespaces", {"wal.other.log": "other"}.get)


def parse(body, rand=0.0):
    return parse_write_request(
        body, NS, now_ms=NOW, rand=rand, reserved=RESERVED, make_id=lambda ms: f"id-{ms}"
    )


def test_minimal_request_uses_namespace_defaults():
    env = parse({"payload": {"a": 1}})
    assert env.id == f"id-{NOW}"
    assert env.namespace == "orders"
    assert env.payload == {"a": 1}
    assert env.payload_bytes() == b'{"a":1}'
    assert env.target == {"type": "kafka", "topic": "orders.out"}
    assert env.lifecycle.deliver_at_ms == NOW
    assert env.lifecycle.original_write_time_ms == NOW
    assert env.idempotency_token == env.id  # a write without a token is its own write
    assert env.attempt == 0
    assert env.history == ()


def test_full_request_is_kept_exactly():
    raw = b"\x00\xffbinary"
    env = parse(
        {
            "payload": base64.b64encode(raw).decode(),
            "payload_encoding": "base64",
            "lifecycle": {"delay_ms": 1000, "jitter_ms": 200, "original_write_time": NOW - 5},
            "target": {"type": "http", "url": "http://127.0.0.1:9/x"},
            "idempotency_token": "tok-1",
            "key": "user-7",
        },
        rand=0.5,
    )
    assert env.payload_bytes() == raw
    assert env.lifecycle.deliver_at_ms == NOW + 1100
    assert env.lifecycle.delay_ms == 1100
    assert env.lifecycle.original_write_time_ms == NOW - 5
    assert env.target == {"type": "http", "url": "http://127.0.0.1:9/x"}
    assert env.idempotency_token == "tok-1"
    assert env.key == "user-7"


@pytest.mark.parametrize(
    "name",
    [
        "Transfer-Encoding",
        "content-length",
        "HOST",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authorization",
        "Proxy-Authenticate",
        "TE",
        "Trailer",
        "Upgrade",
        "Expect",
    ],
)
def test_framing_and_hop_by_hop_headers_are_refused_whatever_their_case(name):
    target = {"type": "http", "url": "http://127.0.0.1:9/x", "headers": {"X-Ok": "1", name: "v"}}
    with pytest.raises(BadRequestError) as info:
        parse({"payload": 1, "target": target})
    assert info.value.field == f"target.headers.{name}"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "payload"),
        ({"payload": 1, "paylod": 2}, "paylod"),
        ({"payload": 1, "payload_encoding": "hex"}, "payload_encoding"),
        ({"payload": 5, "payload_encoding": "base64"}, "payload"),
        ({"payload": "!!notbase64", "payload_encoding": "base64"}, "payload"),
        ({"payload": 1, "lifecycle": 3}, "lifecycle"),
        ({"payload": 1, "lifecycle": {"delay": 3}}, "lifecycle.delay"),
        ({"payload": 1, "lifecycle": {"delay_ms": "3"}}, "lifecycle.delay_ms"),
        ({"payload": 1, "lifecycle": {"delay_ms": True}}, "lifecycle.delay_ms"),
        ({"payload": 1, "lifecycle": {"delay_ms": -1}}, "lifecycle.delay_ms"),
        ({"payload": 1, "lifecycle": {"delay_ms": 10_001}}, "lifecycle.delay_ms"),
        (
            {"payload": 1, "lifecycle": {"delay_ms": 9_000, "jitter_ms": 2_000}},
            "lifecycle.jitter_ms",
        ),
        (
            {"payload": 1, "lifecycle": {"original_write_time": "now"}},
            "lifecycle.original_write_time",
        ),
        ({"payload": 1, "lifecycle": {"original_write_time": 0}}, "lifecycle.original_write_time"),
        (
            {"payload": 1, "lifecycle": {"original_write_time": NOW + MAX_FUTURE_SKEW_MS + 1}},
            "lifecycle.original_write_time",
        ),
        ({"payload": 1, "target": "kafka"}, "target"),
        ({"payload": 1, "target": {"type": "ftp"}}, "target.type"),
        ({"payload": 1, "target": {"type": "kafka"}}, "target.topic"),
        ({"payload": 1, "target": {"type": "kafka", "topic": "a b"}}, "target.topic"),
        ({"payload": 1, "target": {"type": "http", "url": "ftp://x"}}, "target.url"),
        ({"payload": 1, "target": {"type": "http", "url": "http://x", "x": 1}}, "target.x"),
        ({"payload": 1, "target": {"type": "kv", "table": "t"}}, "target.key"),
        ({"payload": 1, "target": {"type": "wal", "namespace": "Bad Name"}}, "target.namespace"),
        ({"payload": 1, "idempotency_token": ""}, "idempotency_token"),
        ({"payload": 1, "idempotency_token": "x" * 257}, "idempotency_token"),
        # control characters an upstream refuses in a header value (sent as Idempotency-Key)
        ({"payload": 1, "idempotency_token": "a\x01b"}, "idempotency_token"),
        ({"payload": 1, "idempotency_token": "a\x0bb"}, "idempotency_token"),
        ({"payload": 1, "idempotency_token": "a\x7f"}, "idempotency_token"),
        (
            {
                "payload": 1,
                "target": {"type": "http", "url": "http://127.0.0.1:9", "headers": {"X-T": "\x1f"}},
            },
            "target.headers.X-T",
        ),
        ({"payload": 1, "key": 7}, "key"),
    ],
)
def test_bad_input_names_the_field(body, field):
    with pytest.raises(BadRequestError) as info:
        parse(body)
    assert info.value.field == field
    assert info.value.status == 400
    assert field in str(info.value)


def test_payload_over_the_namespace_limit_is_413():
    with pytest.raises(PayloadTooLargeError) as info:
        parse({"payload": "x" * 100})
    assert info.value.status == 413
    assert info.value.field == "payload"


def test_base64_payload_limit_counts_decoded_bytes():
    exactly = base64.b64encode(b"y" * 64).decode()  # 88 chars of text, 64 bytes of payload
    assert parse({"payload": exactly, "payload_encoding": "base64"}).payload_bytes() == b"y" * 64
    with pytest.raises(PayloadTooLargeError):
        parse({"payload": base64.b64encode(b"y" * 65).decode(), "payload_encoding": "base64"})


def test_target_is_required_without_a_namespace_default():
    bare = parse_namespace({"name": "bare"})
    with pytest.raises(BadRequestError) as info:
        parse_write_request({"payload": 1}, bare, now_ms=NOW, rand=0.0, reserved=RESERVED)
    assert info.value.field == "target"


@given(delay=st.integers(0, 5_000), jitter=st.integers(0, 5_000), rand=st.floats(0, 0.999999))
def test_jitter_places_delivery_inside_the_window(delay, jitter, rand):
    env = parse({"payload": 1, "lifecycle": {"delay_ms": delay, "jitter_ms": jitter}}, rand=rand)
    assert NOW + delay <= env.lifecycle.deliver_at_ms <= NOW + delay + jitter


def test_batch_shape():
    assert parse_batch({"records": [{"payload": 1}]}, max_records=2) == [{"payload": 1}]
    for body, field in [
        ([], "body"),
        ({"records": []}, "records"),
        ({"records": {}}, "records"),
        ({"records": [1], "extra": 1}, "extra"),
    ]:
        with pytest.raises(BadRequestError) as info:
            parse_batch(body, max_records=2)
        assert info.value.field == field
    with pytest.raises(PayloadTooLargeError):
        parse_batch({"records": [1, 2, 3]}, max_records=2)


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({"type": "http", "url": "http://127.0.0.1:10/x"}, "target.url"),
        ({"type": "http", "url": "https://127.0.0.1:9/x"}, "target.url"),
        ({"type": "http", "url": "http://169.254.169.254/latest"}, "target.url"),
        (
            {"type": "kafka", "topic": "t", "bootstrap_servers": "evil:9092"},
            "target.bootstrap_servers",
        ),
        (
            {"type": "kafka", "topic": "t", "bootstrap_servers": "b1:9092"},
            "target.bootstrap_servers",
        ),
        ({"type": "wal", "namespace": "x", "bootstrap_servers": "e:1"}, "target.bootstrap_servers"),
    ],
)
def test_a_target_outside_allowed_targets_is_refused_naming_the_field(target, field):
    with pytest.raises(TargetNotAllowedError) as info:
        parse({"payload": 1, "target": target})
    assert info.value.field == field
    assert info.value.status == 403
    assert "allowed_targets" in info.value.reason


@pytest.mark.parametrize(
    "target",
    [
        {"type": "http", "url": "http://127.0.0.1:9/any/path?q=1"},
        {"type": "kafka", "topic": "t", "bootstrap_servers": "b2:9092,b1:9092"},
        {"type": "kafka", "topic": "t"},  # the home cluster
        {"type": "kv", "table": "t", "key": "k"},
    ],
)
def test_a_target_inside_allowed_targets_is_accepted(target):
    assert parse({"payload": 1, "target": target}).target == target


def test_by_default_only_the_namespaces_own_origin_is_allowed():
    ns = parse_namespace({"name": "hooks", "target": {"type": "http", "url": "http://a:8/in"}})
    ok = parse_write_request(
        {"payload": 1, "target": {"type": "http", "url": "http://a:8/other"}},
        ns,
        now_ms=NOW,
        rand=0.0,
        reserved=RESERVED,
    )
    assert ok.target["url"] == "http://a:8/other"
    with pytest.raises(TargetNotAllowedError):
        parse_write_request(
            {"payload": 1, "target": {"type": "http", "url": "http://b:8/in"}},
            ns,
            now_ms=NOW,
            rand=0.0,
            reserved=RESERVED,
        )


# -- the memcached target (issue 17 item 2): a replicated namespace's cache operations --

REPLICATED = parse_namespace(
    {
        "name": "evc",
        "replication": {
            "regions": {"us-east": {"memcached": ["h1:11211"]}, "eu": {"memcached": ["h2:1"]}}
        },
    }
)


def test_a_memcached_target_is_validated():
    spec = parse_memcached_target(
        {"type": "memcached", "op": "set", "key": "user:1", "ttl": 60.0, "origin_region": "eu"}
    )
    assert spec.wire == {
        "type": "memcached",
        "op": "set",
        "key": "user:1",
        "ttl": 60,
        "origin_region": "eu",
    }
    touch = {"type": "memcached", "op": "touch", "key": "k", "ttl": 0, "origin_region": "eu"}
    assert parse_memcached_target(touch).options["ttl"] == 0
    delete = {"type": "memcached", "op": "delete", "key": "k" * 250, "origin_region": "us-east"}
    assert "ttl" not in parse_memcached_target(delete).options
    check_memcached_target(spec.wire, "v", REPLICATED)
    check_memcached_target(delete, None, REPLICATED)


def test_writetolog_takes_a_memcached_target_only_to_a_replicated_namespace():
    target = {"type": "memcached", "op": "delete", "key": "k", "origin_region": "eu"}
    with pytest.raises(BadRequestError) as info:
        parse({"payload": None, "target": target})
    assert info.value.field == "target.type"
    assert "replication regions" in info.value.reason


def parse_replicated(body):
    return parse_write_request(
        body, REPLICATED, now_ms=NOW, rand=0.5, reserved=RESERVED, make_id=lambda ms: f"id-{ms}"
    )


def test_a_cache_operation_is_logged_under_its_memcached_key():
    target = {"type": "memcached", "op": "set", "key": "user:1", "ttl": 60, "origin_region": "eu"}
    env = parse_replicated(
        {
            "payload": "dmFs",
            "payload_encoding": "base64",
            "target": target,
            "idempotency_token": "t1",
            "lifecycle": {"original_write_time": NOW - 7, "deliver_at": NOW - 100},
        }
    )
    assert env.key == "user:1"  # the Kafka record key (walstream.core.outbox.route_write)
    assert dict(env.target) == target
    assert (env.payload_bytes(), env.idempotency_token) == (b"val", "t1")
    assert env.lifecycle == (NOW, NOW - 7, 0)
    delete = {"type": "memcached", "op": "delete", "key": "k", "origin_region": "us-east"}
    env = parse_replicated({"payload": None, "target": delete, "key": "k"})
    assert (env.key, env.payload, env.target["op"]) == ("k", None, "delete")


def test_a_cache_set_older_than_the_namespace_replicates_is_refused():
    # default max_lag_s 86,400 and tombstone_ttl_s 172,800: a set may be 86,400 s old at most
    target = {"type": "memcached", "op": "set", "key": "k", "origin_region": "eu"}
    allowed_ms = 86_400_000

    def body(target, age_ms, payload="dg=="):
        lifecycle = {"original_write_time": NOW - age_ms}
        encoding = {"payload_encoding": "base64"} if payload is not None else {}
        return {"payload": payload, "target": target, "lifecycle": lifecycle, **encoding}

    assert parse_replicated(body(target, allowed_ms)).lifecycle.original_write_time_ms == (
        NOW - allowed_ms
    )
    with pytest.raises(BadRequestError) as info:
        parse_replicated(body(target, allowed_ms + 1_000))
    assert info.value.field == "lifecycle.original_write_time"
    assert "86401 s ago" in info.value.reason
    assert "older_than_tombstone_ttl" in info.value.reason
    # a delete or a touch at any age is applied by every region: not refused
    parse_replicated(body({**target, "op": "delete"}, allowed_ms * 5, payload=None))
    touch = {**target, "op": "touch", "ttl": 5}
    parse_replicated(body(touch, allowed_ms * 5, payload=None))


_DELETE = {"type": "memcached", "op": "delete", "key": "k", "origin_region": "eu"}


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"payload": 1, "target": {"type": "kafka", "topic": "t"}}, "target.type", "not kafka"),
        ({"payload": 1, "target": {"type": "http", "url": "http://a"}}, "target.type", "http"),
        ({"payload": None}, "target", "memcached operation"),
        ({"payload": None, "target": {**_DELETE, "op": "touch"}}, "target.ttl", "touch"),
        ({"payload": None, "target": _DELETE, "key": "other"}, "key", "target's key"),
        ({"payload": None, "target": _DELETE, "lifecycle": {"delay_ms": 5}}, "lifecycle", ""),
        ({"payload": None, "target": _DELETE, "lifecycle": {"jitter_ms": 9}}, "lifecycle", ""),
        ({"payload": None, "target": {**_DELETE, "op": "set"}}, "payload", "its value"),
        ({"payload": 1, "target": _DELETE}, "payload", "must be null"),
        (
            {"payload": None, "target": {**_DELETE, "origin_region": "x"}},
            "target.origin_region",
            "",
        ),
    ],
)
def test_a_replicated_namespace_takes_cache_operations_only(body, field, reason):
    with pytest.raises(BadRequestError) as info:
        parse_write_request(
            body, REPLICATED, now_ms=NOW, rand=0.0, reserved=RESERVED, make_id=lambda ms: "i"
        )
    assert (info.value.field, info.value.status) == (field, 400)
    assert reason in info.value.reason


_MC = {"type": "memcached", "op": "set", "key": "k", "origin_region": "eu"}


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ("memcached", "target"),
        ({**_MC, "type": "kv"}, "target.type"),
        ({**_MC, "value": "v"}, "target.value"),
        ({**_MC, "op": "add"}, "target.op"),
        ({k: v for k, v in _MC.items() if k != "op"}, "target.op"),
        ({k: v for k, v in _MC.items() if k != "key"}, "target.key"),
        ({**_MC, "key": ""}, "target.key"),
        ({**_MC, "key": 7}, "target.key"),
        ({**_MC, "key": "k" * 251}, "target.key"),
        ({**_MC, "key": "é" * 126}, "target.key"),  # 252 bytes
        ({**_MC, "key": "a b"}, "target.key"),
        ({**_MC, "key": "a\nb"}, "target.key"),
        ({**_MC, "key": "a\x7f"}, "target.key"),
        ({**_MC, "ttl": -1}, "target.ttl"),
        ({**_MC, "ttl": 30 * 86_400 + 1}, "target.ttl"),
        ({**_MC, "ttl": "60"}, "target.ttl"),
        ({**_MC, "ttl": True}, "target.ttl"),
        ({**_MC, "op": "touch"}, "target.ttl"),
        ({**_MC, "op": "delete", "ttl": 5}, "target.ttl"),
        ({k: v for k, v in _MC.items() if k != "origin_region"}, "target.origin_region"),
        ({**_MC, "origin_region": "EU"}, "target.origin_region"),
        ({**_MC, "origin_region": "eu\n"}, "target.origin_region"),
        ({**_MC, "origin_region": "a.b"}, "target.origin_region"),
        ({**_MC, "origin_region": 1}, "target.origin_region"),
    ],
)
def test_a_bad_memcached_target_names_the_field(target, field):
    with pytest.raises(BadRequestError) as info:
        parse_memcached_target(target)
    assert info.value.field == field
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("ns", "target", "payload", "field"),
    [
        (NS, _MC, "v", "target.type"),  # the namespace replicates nothing
        (REPLICATED, {**_MC, "origin_region": "ap"}, "v", "target.origin_region"),
        (REPLICATED, {**_MC, "op": "delete"}, "v", "payload"),
        (REPLICATED, {**_MC, "op": "touch", "ttl": 5}, {}, "payload"),
    ],
)
def test_a_memcached_target_the_namespace_cannot_take_names_the_field(ns, target, payload, field):
    with pytest.raises(BadRequestError) as info:
        check_memcached_target(target, payload, ns)
    assert info.value.field == field
    assert info.value.status == 400
