"""ReplicatingCache's decisions (issue 17 item 2) over an in-memory producer and a recording
region: the record it publishes is WriteToLog's, the log first, then the local apply with the
record's own operation; FALSE and UNKNOWN apply nothing; a local failure after TRUE is
reported, not raised. The real broker and memcached: tests/integration/test_replication_client.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest

from walstream.core.cache_ops import cache_op
from walstream.core.cache_version import CacheOp, OpKind, PoisonReason
from walstream.core.lww import Version
from walstream.errors import (
    BadRequestError,
    PayloadTooLargeError,
    TargetUnavailableError,
    WalError,
    WriteRejectedError,
    WriteUnknownError,
)
from walstream.kafka.producer import MemoryLogProducer
from walstream.namespaces.config import parse_namespace
from walstream.records import decode_envelope
from walstream.replication import ApplyOutcome, ApplyResult, RegionCache
from walstream.replication.client import ReplicatingCache
from walstream.settings import Settings

NOW = 1_800_000_000_000
NS = parse_namespace(
    {
        "name": "evc",
        "replication": {
            "regions": {"a": {"memcached": ["127.0.0.1:1"]}, "b": {"memcached": ["h:2"]}},
            "max_lag_s": 60,
        },
    }
)


class Region:
    """A RegionCache's get/apply/close, recorded (or failing with ``fail``)."""

    def __init__(self) -> None:
        self.applied: list[CacheOp] = []
        self.fail: Exception | None = None
        self.closed = False

    async def apply(self, op: CacheOp) -> ApplyResult:
        if self.fail is not None:
            raise self.fail
        self.applied.append(op)
        return ApplyResult(ApplyOutcome.APPLIED)

    async def apply_many(self, ops: Sequence[CacheOp]) -> list[ApplyResult]:  # pragma: no cover
        return [await self.apply(op) for op in ops]

    async def get(self, key: bytes) -> bytes | None:
        return b"v:" + key

    async def check(self, op: CacheOp) -> PoisonReason | None:
        return None

    async def close(self) -> None:
        self.closed = True


def client(producer: Any = None, region: Region | None = None) -> ReplicatingCache:
    return ReplicatingCache(
        NS,
        "a",
        producer=producer if producer is not None else MemoryLogProducer(),
        region_cache=cast(RegionCache, region or Region()),
        clock=lambda: NOW,
    )


async def test_a_set_is_published_as_writetologs_record_then_applied_locally() -> None:
    producer, region = MemoryLogProducer(), Region()
    cache = client(producer, region)
    result = await cache.set("user:1", b"\x00bytes", 60)
    assert result.durable == "TRUE"
    assert result.error is None
    assert result.local == ApplyResult(ApplyOutcome.APPLIED)
    [record] = producer.sent
    assert (record.topic, record.key, record.due) == ("wal.evc.log", b"user:1", None)
    env = decode_envelope(record.value)
    assert env.id == result.record_id
    assert dict(env.target) == {
        "type": "memcached",
        "op": "set",
        "key": "user:1",
        "ttl": 60,
        "origin_region": "a",
    }
    assert (env.key, env.payload_encoding, env.created_at_ms) == ("user:1", "base64", NOW)
    # a fresh token, the clock's time: the version every region stores
    assert result.version == Version(NOW, env.idempotency_token)
    assert env.idempotency_token == env.id
    assert region.applied == [cache_op(env)]
    assert region.applied[0].value == b"\x00bytes"


async def test_delete_and_touch_carry_the_given_version() -> None:
    producer, region = MemoryLogProducer(), Region()
    cache = client(producer, region)
    deleted = await cache.delete("k", original_write_time_ms=5, idempotency_token="t-del")
    touched = await cache.touch("k", 30, idempotency_token="t-touch")
    assert deleted.version == Version(5, "t-del")
    assert touched.version == Version(NOW, "t-touch")
    assert [(op.kind, op.version, op.ttl_s, op.value) for op in region.applied] == [
        (OpKind.DELETE, Version(5, "t-del"), 0, b""),
        (OpKind.TOUCH, Version(NOW, "t-touch"), 30, b""),
    ]
    envs = [decode_envelope(r.value) for r in producer.sent]
    assert [env.payload for env in envs] == [None, None]
    assert "ttl" not in envs[0].target
    assert envs[1].target["ttl"] == 30


@pytest.mark.parametrize(
    ("error", "durable"),
    [
        (WriteRejectedError("refused"), "FALSE"),
        (WriteUnknownError("timed out after the hand-over"), "UNKNOWN"),
    ],
)
async def test_a_publish_that_is_not_true_applies_nothing_locally(
    error: WalError, durable: str
) -> None:
    region = Region()
    cache = client(MemoryLogProducer(fail_with=error), region)
    result = await cache.set("k", b"v", original_write_time_ms=NOW - 7, idempotency_token="t")
    assert (result.durable, result.error, result.local) == (durable, error, None)
    assert result.version == Version(NOW - 7, "t")  # to retry with: a duplicate if logged
    assert region.applied == []


async def test_a_local_failure_after_a_true_publish_is_reported_not_raised() -> None:
    producer, region = MemoryLogProducer(), Region()
    region.fail = TargetUnavailableError("127.0.0.1:1: connection refused")
    result = await client(producer, region).delete("k")
    assert result.durable == "TRUE"  # the log holds it: it reaches the other regions
    assert result.local is not None
    assert result.local.outcome is ApplyOutcome.TRANSIENT
    assert "connection refused" in result.local.reason
    # and the same record again, as an origin repair the fan-out copies to region a only
    logged, repair = producer.sent
    assert (repair.topic, repair.key, repair.value) == (logged.topic, logged.key, logged.value)
    assert repair.headers == [("wal-origin-repair", b"1")]
    assert (result.repair, result.repair_error) == ("TRUE", None)


class Outcome(Region):
    """A region answering ``outcome`` to every apply."""

    def __init__(self, outcome: ApplyOutcome) -> None:
        super().__init__()
        self.outcome = outcome

    async def apply(self, op: CacheOp) -> ApplyResult:
        self.applied.append(op)
        return ApplyResult(self.outcome, "lost the CAS race every round")


@pytest.mark.parametrize("outcome", [ApplyOutcome.TRANSIENT, ApplyOutcome.POISON])
async def test_a_local_apply_that_did_not_land_is_repaired_through_the_log(
    outcome: ApplyOutcome,
) -> None:
    producer = MemoryLogProducer()
    result = await client(producer, Outcome(outcome)).set("k", b"v")
    assert (result.durable, result.local, result.repair) == (
        "TRUE",
        ApplyResult(outcome, "lost the CAS race every round"),
        "TRUE",
    )
    logged, repair = producer.sent
    assert repair.value == logged.value  # the same envelope: same id, version and key
    assert decode_envelope(repair.value).id == result.record_id
    assert dict(repair.headers or []) == {"wal-origin-repair": b"1"}


@pytest.mark.parametrize(
    "outcome",
    [ApplyOutcome.APPLIED, ApplyOutcome.STALE, ApplyOutcome.DUPLICATE, ApplyOutcome.ABSENT],
)
async def test_a_settled_local_apply_logs_no_repair(outcome: ApplyOutcome) -> None:
    producer = MemoryLogProducer()
    result = await client(producer, Outcome(outcome)).touch("k", 5)
    assert (result.durable, result.repair, result.repair_error) == ("TRUE", None, None)
    [logged] = producer.sent
    assert logged.headers is None


class FailingSecond(MemoryLogProducer):
    """Takes the first record; the second send raises ``second``."""

    def __init__(self, second: Exception) -> None:
        super().__init__()
        self.second = second

    async def send(self, record: Any) -> None:
        if self.sent:
            raise self.second
        await super().send(record)


@pytest.mark.parametrize(
    ("error", "repair"),
    [
        (WriteRejectedError("refused"), "FALSE"),
        (WriteUnknownError("no acknowledgement"), "UNKNOWN"),
        (RuntimeError("a producer bug"), "UNKNOWN"),
    ],
)
async def test_a_repair_that_was_not_logged_is_reported_not_raised(
    error: Exception, repair: str
) -> None:
    producer, region = FailingSecond(error), Region()
    region.fail = TargetUnavailableError("127.0.0.1:1: connection refused")
    result = await client(producer, region).set("k", b"v")
    assert result.durable == "TRUE"  # the operation is logged: the other regions get it
    assert result.local is not None
    assert result.local.outcome is ApplyOutcome.TRANSIENT  # the local failure is kept
    assert result.repair == repair
    assert result.repair_error is not None
    assert result.repair_error.durable == repair
    if isinstance(error, WalError):
        assert result.repair_error is error
    else:
        assert "a producer bug" in str(result.repair_error)
    assert len(producer.sent) == 1


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.set("a b", b"v"), "target.key"),
        (lambda c: c.set("k" * 251, b"v"), "target.key"),
        (lambda c: c.touch("k", -1), "target.ttl"),
        (lambda c: c.set("k", b"v", original_write_time_ms=NOW + 3_600_001), "lifecycle."),
    ],
)
async def test_what_writetolog_refuses_is_raised_and_nothing_is_written(call, field) -> None:
    producer, region = MemoryLogProducer(), Region()
    with pytest.raises(BadRequestError) as info:
        await call(client(producer, region))
    assert info.value.field.startswith(field)
    assert (producer.sent, region.applied) == ([], [])


async def test_get_reads_the_local_region_and_close_closes_it() -> None:
    region = Region()
    async with client(region=region) as cache:
        assert await cache.get("k") == b"v:k"
    assert region.closed


@pytest.mark.parametrize(
    ("ns", "region", "kwargs", "problem"),
    [
        (parse_namespace({"name": "plain"}), "a", {"bootstrap_servers": "h:1"}, "no replication"),
        (NS, "c", {"bootstrap_servers": "h:1"}, "not a region of evc"),
        (NS, "a", {}, "bootstrap_servers"),
    ],
)
def test_a_client_needs_a_replicated_namespace_its_region_and_a_log(
    ns, region, kwargs, problem
) -> None:
    with pytest.raises(ValueError, match=problem):
        ReplicatingCache(ns, region, **kwargs)


async def test_its_own_producer_and_region_are_made_from_the_namespace() -> None:
    cache = ReplicatingCache(NS, "a", bootstrap_servers="127.0.0.1:1")
    assert cache._kafka is not None
    assert cache._cache.servers == ("127.0.0.1:1",)
    assert cache._cache.tombstone_ttl_s == 120
    await cache._cache.close()


async def test_a_record_over_writetologs_limit_is_refused_and_nothing_is_written() -> None:
    # a set's value travels in base64: a value the memcached holds can still be over the log's
    # record limit; refused with the limit named (before: the producer's refusal, FALSE)
    producer, region = MemoryLogProducer(), Region()
    cache = ReplicatingCache(
        NS,
        "a",
        producer=producer,
        region_cache=cast(RegionCache, region),
        clock=lambda: NOW,
        max_record_bytes=4_000,
    )
    assert (await cache.set("k", b"x" * 2_000)).durable == "TRUE"  # 2,668 bytes in base64
    with pytest.raises(PayloadTooLargeError) as info:
        await cache.set("k", b"x" * 3_000)
    assert info.value.field == "value"
    assert "over the log's limit of 4000" in str(info.value)
    assert len(producer.sent) == 1
    assert len(region.applied) == 1


def test_the_default_record_limit_is_writetologs() -> None:
    assert client().max_record_bytes == Settings().max_record_bytes == 934_464
