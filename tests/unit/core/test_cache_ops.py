"""walstream.core.cache_ops: the one conversion of a log record to the cache operation every
region applies (issue 17 contract)."""

from __future__ import annotations

import pytest

from walstream.core.cache_ops import NotAnOp, cache_op, cache_op_or_poison
from walstream.core.cache_version import CacheOp, OpKind
from walstream.core.lww import Version
from walstream.testing.replication import cache_envelope

OWT = 1_800_000_000_000


def test_a_set_is_its_payloads_exact_bytes_with_the_records_version_and_ttl() -> None:
    env = cache_envelope("set", "user:1", b"\x00\xffv", ttl=60, owt_ms=OWT, token="t1")
    assert cache_op(env) == CacheOp(
        kind=OpKind.SET, key=b"user:1", version=Version(OWT, "t1"), value=b"\x00\xffv", ttl_s=60
    )
    assert cache_op(cache_envelope("set", "k", b"")).value == b""  # empty value, no ttl: 0
    assert cache_op(cache_envelope("set", "k", b"v")).ttl_s == 0


def test_delete_and_touch_carry_no_value() -> None:
    delete = cache_op(cache_envelope("delete", "clé", token="t2", owt_ms=5))
    assert delete == CacheOp(kind=OpKind.DELETE, key="clé".encode(), version=Version(5, "t2"))
    touch = cache_op(cache_envelope("touch", "k", ttl=30))
    assert (touch.kind, touch.value, touch.ttl_s) == (OpKind.TOUCH, b"", 30)


def _with_target(**changes: object):
    env = cache_envelope("set", "k", b"v")
    target = {**env.target, **changes}
    return env._replace(target={k: v for k, v in target.items() if v is not None})


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        (_with_target(type="http"), "target.type"),
        (_with_target(op="add"), "target.op"),
        (_with_target(op=None), "target.op"),
        (_with_target(key=7), "target.key"),
        (_with_target(key=None), "target.key"),
        (_with_target(ttl="60"), "target.ttl"),
        (_with_target(ttl=True), "target.ttl"),
        (cache_envelope("set", "k", b"v")._replace(payload=None), "a set has no payload"),
        (cache_envelope("set", "k", b"v")._replace(payload="abc"), "not valid base64"),
    ],
)
def test_a_record_that_is_no_cache_operation_says_why(env, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        cache_op(env)
    poison = cache_op_or_poison(env)
    assert isinstance(poison, NotAnOp)
    assert reason in poison.reason


def test_cache_op_or_poison_passes_an_operation_through() -> None:
    env = cache_envelope("touch", "k", ttl=1)
    assert cache_op_or_poison(env) == cache_op(env)
