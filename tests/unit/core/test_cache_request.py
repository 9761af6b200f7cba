"""walstream.core.cache_request: a cache operation as a WriteToLog request (issue 17). Its
record, built by the API's own validation, reads back (cache_ops.cache_op) as the operation."""

from __future__ import annotations

import pytest

from walstream.core.cache_ops import cache_op
from walstream.core.cache_request import memcached_target, record_key, write_request
from walstream.core.cache_version import CacheOp, OpKind
from walstream.core.lww import Version
from walstream.core.validate import parse_write_request
from walstream.namespaces.config import parse_namespace
from walstream.records import decode_envelope, encode_envelope
from walstream.topology import reserved_topics

NOW = 1_800_000_000_000
NS = parse_namespace(
    {
        "name": "evc",
        "max_payload_bytes": 1 << 20,
        "replication": {"regions": {"a": {"memcached": ["h:1"]}, "b": {"memcached": ["h:2"]}}},
    }
)


def test_record_key_is_the_memcached_keys_utf8_bytes() -> None:
    assert record_key({"type": "memcached", "key": "clé"}) == "clé".encode()


def test_memcached_target_has_a_ttl_but_for_delete() -> None:
    assert memcached_target(OpKind.DELETE, "k", origin_region="a") == {
        "type": "memcached",
        "op": "delete",
        "key": "k",
        "origin_region": "a",
    }
    assert memcached_target(OpKind.SET, "k", origin_region="a")["ttl"] == 0
    assert memcached_target(OpKind.TOUCH, "k", origin_region="a", ttl_s=9)["ttl"] == 9


@pytest.mark.parametrize(
    "op",
    [
        CacheOp(
            kind=OpKind.SET, key=b"k:1", version=Version(NOW - 5, "t"), value=b"\x00\xff", ttl_s=3
        ),
        CacheOp(kind=OpKind.SET, key="clé".encode(), version=Version(NOW, "t"), value=b""),
        CacheOp(kind=OpKind.DELETE, key=b"k", version=Version(NOW, "tok-2")),
        CacheOp(kind=OpKind.TOUCH, key=b"k", version=Version(1, "t"), ttl_s=30),
    ],
)
def test_a_write_request_logs_the_record_that_reads_back_as_the_operation(op: CacheOp) -> None:
    body = write_request(op, origin_region="b")
    assert body["key"] == body["target"]["key"] == op.key.decode()
    env = parse_write_request(
        body, NS, now_ms=NOW, rand=0.0, reserved=reserved_topics("walstream", "walstream.ns")
    )
    assert env.target["origin_region"] == "b"
    assert (env.payload is None) is (op.kind is not OpKind.SET)
    assert record_key(env.target) == op.key
    assert cache_op(decode_envelope(encode_envelope(env))) == op


def test_a_key_that_is_not_utf8_has_no_request() -> None:
    op = CacheOp(kind=OpKind.DELETE, key=b"\xff", version=Version(1, "t"))
    with pytest.raises(UnicodeDecodeError):
        write_request(op, origin_region="a")
