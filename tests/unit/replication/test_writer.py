"""RegionWriter's batch handling against a fake consumer and cache (no broker, no server): a
region whose memcached is away keeps its batch in hand, pauses its partitions while its breaker
is open, probes, resumes, and dead-letters nothing but poison."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from walstream.aio import Backoff
from walstream.clock import FakeClock
from walstream.core.breaker import BreakerPolicy, BreakerState
from walstream.metrics import WalMetrics
from walstream.namespaces.replication import parse_replication
from walstream.records import encode_envelope
from walstream.replication.region import ApplyOutcome, ApplyResult
from walstream.replication.writer import OLDER_THAN_TOMBSTONE_TTL, RegionWriter
from walstream.settings import Settings
from walstream.testing.replication import cache_envelope

TP = TopicPartition("wal.cache.region.b", 0)


class Consumer:
    """What the writer asks of its consumer while a batch waits: pause, poll, resume."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.paused: set[Any] = set()
        self.log: list[str] = []
        #: the partition's end: the last fetch's high watermark, and what ListOffsets answers
        self.fetched_end = 3
        self.end = 3

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: self.end for tp in tps}

    def highwater(self, tp: Any) -> int:
        return self.fetched_end

    def assignment(self) -> set[Any]:
        return {TP}

    def pause(self, *tps: Any) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: Any) -> None:
        self.paused -= set(tps)
        self.log.append("resume")

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        assert self.paused == {TP}, "polled while waiting without pausing its partitions"
        self.log.append(f"idle {timeout_ms}")
        self.clock.advance(timeout_ms)
        self.end += 100  # the region's topic grows while its writer waits
        return {}


class Cache:
    """Unavailable for ``down`` calls, then applies; records what it was asked."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.calls: list[int] = []

    async def apply_many(self, ops: list[Any]) -> list[ApplyResult]:
        self.calls.append(len(ops))
        if len(self.calls) <= self.down:
            return [ApplyResult(ApplyOutcome.TRANSIENT, "connection refused")] * len(ops)
        return [
            ApplyResult(ApplyOutcome.POISON, "key_bad_char")
            if b" " in op.key
            else ApplyResult(ApplyOutcome.APPLIED)
            for op in ops
        ]


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict[str, bytes]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    async def send(self, topic: str, value: bytes | None, **kw: Any) -> Any:
        self.sent.append((topic, value, dict(kw["headers"])))
        fut: Any = __import__("asyncio").get_running_loop().create_future()
        fut.set_result(None)
        return fut


def writer(
    down: int, *, metrics: WalMetrics | None = None, lags: dict[str, int] | None = None
) -> tuple[RegionWriter, Consumer, Cache, Producer, FakeClock]:
    replication = parse_replication(
        {
            "regions": {"a": {"memcached": ["127.0.0.1:1"]}, "b": {"memcached": ["127.0.0.1:2"]}},
            **(lags or {}),
        }
    )
    assert replication is not None
    region = replication.region("b")
    assert region is not None
    clock = FakeClock()
    stage = RegionWriter(
        Settings(bootstrap_servers="127.0.0.1:9", auth=False),
        namespace="cache",
        region=region,
        replication=replication,
        metrics=metrics,
        clock=clock,
        backoff=Backoff(first_s=0.1, cap_s=0.4),
        breaker=BreakerPolicy(threshold=3, base_open_ms=2_000, max_open_ms=2_000),
    )
    consumer, cache, producer = Consumer(clock), Cache(down), Producer()
    stage.consumer, stage.cache, stage.producer = consumer, cache, producer  # type: ignore[assignment]
    return stage, consumer, cache, producer, clock


def records(*envs: Any) -> list[Any]:
    return [
        SimpleNamespace(
            topic=TP.topic,
            partition=0,
            offset=n,
            key=(env.key or "").encode(),
            value=encode_envelope(env),
        )
        for n, env in enumerate(envs)
    ]


async def test_a_region_away_keeps_its_batch_pauses_while_the_breaker_is_open_and_resumes():
    stage, consumer, cache, producer, _ = writer(down=5)
    states: list[BreakerState] = []
    stage.breaker.on_change = states.append
    batch = records(*(cache_envelope("set", f"k{n}", b"v", token=f"t{n}") for n in range(3)))
    await stage.handle({TP: batch})
    # every call got the whole batch; none of it went to the DLQ
    assert cache.calls == [3] * 6
    assert producer.sent == []
    assert stage.outcomes["applied"] == 3
    assert stage.retries == 15
    # backoff waits, then the breaker opened (its 2 s waits), probed, and closed again
    assert BreakerState.OPEN in states
    assert states[-1] is BreakerState.CLOSED
    assert consumer.log == ["idle 100", "idle 200", *["idle 2000"] * 3, "resume"]
    assert consumer.log[-1] == "resume"
    assert consumer.paused == set()


async def test_poison_goes_to_the_region_dlq_and_the_rest_is_applied():
    stage, _, cache, producer, _ = writer(down=0)
    bad = cache_envelope("set", "a b", b"v", token="bad")
    not_an_op = cache_envelope("set", "k", b"v", token="odd")._replace(target={"type": "http"})
    batch = records(bad, cache_envelope("set", "ok", b"v", token="ok"), not_an_op)
    await stage.handle({TP: batch})
    assert cache.calls == [2]  # the record that is no cache operation never reaches the cache
    assert [(topic, headers["wal-error"]) for topic, _, headers in producer.sent] == [
        ("wal.cache.region.b.dlq", b"key_bad_char"),
        ("wal.cache.region.b.dlq", b"target.type is 'http', not memcached"),
    ]
    assert producer.sent[0][1] == batch[0].value
    assert stage.outcomes == {"applied": 1, "dlq": 2}


async def test_the_backlog_grows_while_the_partitions_wait_paused():
    """A paused partition is not fetched, so its high watermark stands still: the backlog is
    read from the end offsets listed while the batch waits."""
    stage, _, _, _, _ = writer(down=5)
    seen: list[int] = []
    stage.ledger.assign([TP])
    batch = records(*(cache_envelope("set", f"k{n}", b"v", token=f"t{n}") for n in range(3)))
    for record in batch:
        stage.ledger.track(TP, record.offset)
    original = stage.report

    def report() -> None:
        original()
        seen.append(stage.backlog())

    stage.report = report  # type: ignore[method-assign]
    await stage.handle({TP: batch})
    # listed at most once a second: the backoffs' waits (100, 200 ms) share the first listing;
    # then each of the breaker's 2 s waits lists the grown end
    assert seen == [3, 3, 3, 303, 403]
    assert stage.listed_ends == {}  # resumed: fetches read the high watermark again
    assert stage.backlog() == 3


# -- late operations: max_lag_s and tombstone_ttl_s ----------------------------------------------

LAGS = {"max_lag_s": 60, "tombstone_ttl_s": 120}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"namespace": "cache", "region": "b", **labels})
    return value or 0.0


def late_warnings(caplog: Any) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "walstream.replication.writer" and r.levelno == logging.WARNING
    ]


async def test_operations_later_than_max_lag_are_applied_counted_and_warned_once_a_batch(caplog):
    registry = CollectorRegistry()
    stage, _, cache, producer, clock = writer(0, metrics=WalMetrics.create(registry), lags=LAGS)
    now = clock.now_ms()
    batch = records(
        cache_envelope("set", "on-time", b"v", owt_ms=now - 60_000, token="t0"),  # = max_lag
        cache_envelope("set", "late", b"v", owt_ms=now - 61_000, token="t1"),
        cache_envelope("delete", "later", owt_ms=now - 90_500, token="t2"),
        cache_envelope("touch", "late-touch", ttl=5, owt_ms=now - 119_000, token="t3"),
    )
    with caplog.at_level(logging.WARNING, logger="walstream.replication.writer"):
        await stage.handle({TP: batch})
    # all applied: later than max_lag_s, but within the tombstone TTL: nothing dead-lettered
    assert cache.calls == [4]
    assert producer.sent == []
    assert stage.outcomes == {"applied": 4}
    assert stage.over_max_lag == 3
    assert stage.over_tombstone_ttl == {}
    assert sample(registry, "walstream_replication_over_max_lag_total") == 3
    assert sample(registry, "walstream_replication_operations_total", outcome="applied") == 4
    [warning] = late_warnings(caplog)  # one for the batch
    assert "3 operation(s) settled later than max_lag_s (60 s), worst lag 119.0 s" in warning
    assert "cache/b" in warning

    caplog.clear()
    on_time = records(cache_envelope("set", "k", b"v", owt_ms=clock.now_ms() - 5, token="t4"))
    with caplog.at_level(logging.WARNING, logger="walstream.replication.writer"):
        await stage.handle({TP: on_time})
    assert late_warnings(caplog) == []
    assert stage.over_max_lag == 3


async def test_a_set_later_than_the_tombstone_ttl_goes_to_the_dlq_and_its_redriven_copy_applies(
    caplog,
):
    registry = CollectorRegistry()
    stage, _, cache, producer, clock = writer(0, metrics=WalMetrics.create(registry), lags=LAGS)
    now = clock.now_ms()
    old_set = cache_envelope("set", "k", b"old", owt_ms=now - 121_000, token="old")
    batch = records(
        old_set,
        # a delete or a touch that late cannot bring a value back: applied
        cache_envelope("delete", "d", owt_ms=now - 500_000, token="del"),
        cache_envelope("touch", "t", ttl=5, owt_ms=now - 500_000, token="touch"),
        cache_envelope("set", "fresh", b"v", owt_ms=now - 1_000, token="fresh"),
    )
    with caplog.at_level(logging.WARNING, logger="walstream.replication.writer"):
        await stage.handle({TP: batch})
    assert cache.calls == [3]  # the late set never reached the cache
    [(topic, value, headers)] = producer.sent
    assert topic == "wal.cache.region.b.dlq"
    assert headers["wal-error"] == OLDER_THAN_TOMBSTONE_TTL.encode()
    assert value == batch[0].value  # the record, byte for byte: nothing is lost
    assert stage.outcomes == {"applied": 3, "dlq": 1}
    assert stage.over_max_lag == 3
    assert stage.over_tombstone_ttl == {"dlq": 1}
    assert sample(registry, "walstream_replication_over_tombstone_ttl_total", outcome="dlq") == 1
    [warning] = late_warnings(caplog)
    assert "3 operation(s) settled later than max_lag_s (60 s), worst lag 500.0 s" in warning
    assert "1 dead-lettered (older_than_tombstone_ttl" in warning

    # the operator redrives it (walstream.dlq: the copy's redrive count raised, its original
    # write time kept): the writer applies it, counted
    caplog.clear()
    producer.sent.clear()
    clock.advance(3_600_000)
    copy = records(old_set._replace(redrive=1))
    with caplog.at_level(logging.WARNING, logger="walstream.replication.writer"):
        await stage.handle({TP: copy})
    assert cache.calls == [3, 1]
    assert producer.sent == []
    assert stage.outcomes == {"applied": 4, "dlq": 1}
    assert stage.over_tombstone_ttl == {"dlq": 1, "applied": 1}
    assert (
        sample(registry, "walstream_replication_over_tombstone_ttl_total", outcome="applied") == 1
    )
    assert sample(registry, "walstream_replication_over_max_lag_total") == 4
    [warning] = late_warnings(caplog)
    assert "0 dead-lettered" in warning
    assert "1 applied (redriven copies)" in warning


async def test_a_set_crossing_the_tombstone_ttl_while_its_region_is_away_is_dead_lettered():
    """The batch waits in hand while the region's memcached is away: its sets grow older, and
    one the tombstone TTL passes meanwhile is not applied when the region is back."""
    stage, _, cache, producer, clock = writer(5, lags=LAGS)
    now = clock.now_ms()
    batch = records(
        cache_envelope("set", "k0", b"v", owt_ms=now - 115_000, token="t0"),  # 5 s to go
        cache_envelope("set", "k1", b"v", owt_ms=now, token="t1"),
    )
    await stage.handle({TP: batch})  # waits 0.1 + 0.2 + 3 x 2 s
    assert clock.now_ms() - now == 6_300
    assert cache.calls == [2, 2, 2, 2, 2, 1]
    assert [headers["wal-error"] for _, _, headers in producer.sent] == [
        b"older_than_tombstone_ttl"
    ]
    assert stage.outcomes == {"applied": 1, "dlq": 1}
    assert stage.over_tombstone_ttl == {"dlq": 1}
