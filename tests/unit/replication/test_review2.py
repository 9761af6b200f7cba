"""Issue 17 review (round 2, R4): strict xfails proving defects in what changed.

Each test fails (AssertionError) on the code it names and is expected to pass once the fix
its reason gives is made."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from walstream.aio import Backoff
from walstream.clock import FakeClock
from walstream.core.breaker import BreakerPolicy
from walstream.core.cache_version import CacheOp, OpKind, decode, fold
from walstream.core.lww import Version
from walstream.errors import BadRequestError
from walstream.kafka.producer import MemoryLogProducer
from walstream.namespaces.config import parse_namespace
from walstream.replication.client import ReplicatingCache
from walstream.replication.region import ApplyOutcome, ApplyResult, RegionCache
from walstream.replication.writer import RegionWriter
from walstream.settings import Settings

#: a write time of now (a fixed one would make these values expire as the calendar passes it)
NOW_MS = time.time_ns() // 1_000_000


class LocalRegion:
    """The origin's RegionCache: applies every operation and records it."""

    def __init__(self) -> None:
        self.applied: list[Any] = []

    async def apply(self, op: Any) -> ApplyResult:
        self.applied.append(op)
        return ApplyResult(ApplyOutcome.APPLIED)

    async def check(self, op: Any) -> None:
        return None

    async def close(self) -> None:
        return None


class RegionMemcached:
    """Region b's cache: applies every operation and records it."""

    def __init__(self) -> None:
        self.applied: list[Any] = []

    async def apply_many(self, ops: list[Any]) -> list[ApplyResult]:
        self.applied += ops
        return [ApplyResult(ApplyOutcome.APPLIED) for _ in ops]


class DlqProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, bytes]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def send(self, topic: str, value: bytes | None, **kw: Any) -> Any:
        self.sent.append((topic, dict(kw["headers"])))
        fut: Any = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_a_set_given_an_old_write_time_is_applied_in_its_origin_and_nowhere_else():
    ns = parse_namespace(
        {
            "name": "cache",
            "replication": {
                "regions": {"a": {"memcached": ["127.0.0.1:1"]}, "b": {"memcached": ["h:2"]}},
                "max_lag_s": 60,
            },
        }
    )
    replication = ns.replication
    assert replication is not None
    clock = FakeClock()
    now = clock.now_ms()
    local, log = LocalRegion(), MemoryLogProducer()
    cache = ReplicatingCache(
        ns, "a", producer=log, region_cache=cast(RegionCache, local), clock=lambda: now
    )
    old = now - (replication.tombstone_ttl_s + 5) * 1000  # e.g. a backfill from a database
    refused: BadRequestError | None = None
    try:
        result = await cache.set("k", b"v", original_write_time_ms=old)
    except BadRequestError as exc:
        refused = exc
    if refused is not None:  # written nowhere: every region alike
        assert refused.field == "lifecycle.original_write_time"
        assert log.sent == []
        assert local.applied == []
        return
    assert result.durable == "TRUE"
    assert [op.key for op in local.applied] == [b"k"]  # region a holds it
    # region b's writer gets the fan-out's copy (value mode: the record's bytes as they are)
    [record] = log.sent
    region = replication.region("b")
    assert region is not None
    writer = RegionWriter(
        Settings(bootstrap_servers="127.0.0.1:9", auth=False),
        namespace="cache",
        region=region,
        replication=replication,
        clock=clock,
        backoff=Backoff(first_s=0.1, cap_s=0.4),
        breaker=BreakerPolicy(threshold=3, base_open_ms=2_000, max_open_ms=2_000),
    )
    b_cache, dlq = RegionMemcached(), DlqProducer()
    writer.cache, writer.producer = b_cache, dlq  # type: ignore[assignment]
    tp = TopicPartition("wal.cache.region.b", 0)
    copy = SimpleNamespace(
        topic=tp.topic, partition=0, offset=0, key=record.key, value=record.value
    )
    await writer.handle({tp: [copy]})
    assert dlq.sent == [], f"region b dead-lettered what region a applied: {dlq.sent}"
    assert [op.key for op in b_cache.applied] == [b"k"]


def _fold_in_turn(stored: bytes, ops: list[Any]) -> tuple[bytes, int]:
    """What a key holding ``stored`` ends with (bytes, exptime) when each operation arrives in
    a batch of its own, in this order (each write read back as the next batch's state)."""
    raw, ttl = stored, 0
    for op in ops:
        result = fold(decode(raw), [op], tombstone_ttl_s=3_600)
        if result.write is not None:
            raw, ttl = result.write, result.ttl_s
    return raw, ttl


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason=(
        "core/cache_version.py _touch: a touch of foreign bytes (a value a plain memcached "
        "client wrote, e.g. the cache as it was before replication) sets their expiry but "
        "records no version, so a set older than the touch arriving after it replaces them "
        "with the set's own expiry (_replace keeps only a StoredItem's touch): the region that "
        "got the set first ends with the touch's expiry, the one that got the touch first with "
        "the set's. Fix: a touch of Foreign returns StoredItem(version=NO_VERSION, "
        "kind=Kind.VALUE, value=state.raw, expires_at_ms=at, touch=op.version) (the walstream "
        "client's get still returns the foreign bytes; NO_VERSION is older than any version, so "
        "_replace then keeps the newer touch and _touch refuses an older one)"
    ),
)
def test_a_touch_of_foreign_bytes_and_an_older_set_end_alike_in_either_order() -> None:
    foreign = b"warmed by the application before replication"
    older_set = CacheOp(
        kind=OpKind.SET, key=b"k", version=Version(NOW_MS, "s"), value=b"v", ttl_s=60
    )
    newer_touch = CacheOp(
        kind=OpKind.TOUCH, key=b"k", version=Version(NOW_MS + 1_000, "t"), ttl_s=0
    )
    # region a made the set (applied at once), then got b's touch; b made the touch (its own
    # memcached still held the foreign bytes), then got a's set
    in_a = _fold_in_turn(foreign, [older_set, newer_touch])
    in_b = _fold_in_turn(foreign, [newer_touch, older_set])
    assert in_a[1] == 0  # the newer touch: no expiry
    assert in_b == in_a, f"a keeps {in_a[1]!r} as exptime, b {in_b[1]!r}"
