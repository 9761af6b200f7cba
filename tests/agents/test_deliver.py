"""The deliver/retry handler over in-memory collaborators: every outcome; it never raises."""

from __future__ import annotations

import orjson
import pytest

from walstream.agents.attempts import MemoryAttempts
from walstream.agents.outcomes import Outcome, Source
from walstream.clock import FakeClock
from walstream.core.delay import parse_delay_headers
from walstream.core.dlq import DlqEntry, parse_dlq_record
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import encode_event
from walstream.records import Lifecycle, decode_envelope, encode_envelope
from walstream.targets.memory import MemoryTarget
from walstream.testing import (
    RecordingEmitter,
    envelope,
    fake_deliverer,
    namespace_definition,
    registry_of,
)

NOW = 1_800_000_000_000
LOG = Source("wal.orders.log", 2, 41)


@pytest.fixture
def registry():
    return registry_of(namespace_definition("orders", non_retryable=["http_409"]))


@pytest.fixture
def target():
    return MemoryTarget()


@pytest.fixture
def emitter():
    return RecordingEmitter()


@pytest.fixture
def clock():
    return FakeClock(NOW)


@pytest.fixture
def attempts():
    return MemoryAttempts()


@pytest.fixture
def deliverer(registry, target, emitter, clock, attempts):
    return fake_deliverer(registry, target, emitter, clock, attempts)


def record(**changes):
    return envelope(1, now_ms=NOW)._replace(**changes)


async def test_a_due_record_is_delivered_and_nothing_else_is_written(deliverer, target, emitter):
    assert await deliverer.handle(encode_envelope(record()), b"k1", LOG) is Outcome.DELIVERED
    assert [e.id for e in target.delivered] == ["id-1"]
    assert emitter.emitted == []


async def test_a_transient_failure_schedules_the_next_attempt_through_the_delay_tiers(
    deliverer, target, emitter, attempts
):
    target.fail_next(TargetUnavailableError("down", error_class="http_503"))
    assert await deliverer.handle(encode_envelope(record()), b"k1", LOG) is Outcome.RETRY
    [hop] = emitter.emitted
    assert hop.topic == "walstream.delay.timer"  # a 2 s backoff: the stage holds it to the end
    headers = parse_delay_headers(hop.headers)
    assert headers is not None
    assert (headers.dest_topic, headers.dest_partition) == ("wal.orders.retry", 2)
    assert headers.due_ms == NOW + 2_000
    retry = decode_envelope(hop.value)
    assert retry.attempt == 1
    assert retry.not_before_ms == NOW + 2_000
    assert [(h.attempt, h.error_class) for h in retry.history] == [(0, "http_503")]
    assert attempts == {"id-1": 1}


async def test_an_early_record_waits_and_is_not_attempted(deliverer, target, emitter, clock):
    early = record(lifecycle=Lifecycle(NOW + 300, NOW, 300))
    assert await deliverer.handle(encode_envelope(early), b"k1", LOG) is Outcome.DELAYED
    assert target.calls == []
    [hop] = emitter.emitted
    assert hop.topic == "walstream.delay.timer"
    assert hop.value == encode_envelope(early)  # waits as it was written
    assert hop.timestamp_ms == NOW


async def test_exhausted_attempts_go_to_the_dlq_with_the_whole_history(
    deliverer, target, emitter, attempts
):
    target.always = TargetUnavailableError("down", error_class="http_503")
    env = record()
    for _ in range(3):
        outcome = await deliverer.handle(encode_envelope(env), b"k1", LOG)
        if outcome is Outcome.RETRY:
            env = decode_envelope(emitter.emitted[-1].value)._replace(not_before_ms=0)
    assert outcome is Outcome.DEAD
    [dead] = emitter.to("wal.orders.dlq")
    parsed = parse_dlq_record(dead.key, dead.value, dead.headers, partition=2, offset=0)
    assert isinstance(parsed, DlqEntry)
    assert parsed.attempts == 3
    assert parsed.source == "wal.orders.log[2]@41"
    assert "gave up after 3 attempts" in parsed.reason
    assert [h.attempt for h in decode_envelope(dead.value).history] == [0, 1, 2]
    assert attempts == {}


async def test_permanent_and_non_retryable_failures_dead_letter_at_once(deliverer, target, emitter):
    target.fail_next(TargetRejectedError("HTTP 404", error_class="http_404"))
    assert await deliverer.handle(encode_envelope(record()), b"k1", LOG) is Outcome.DEAD
    target.fail_next(TargetUnavailableError("HTTP 409", error_class="http_409"))
    assert await deliverer.handle(encode_envelope(record(id="id-2")), b"k1", LOG) is Outcome.DEAD
    assert [e.key for e in emitter.to("wal.orders.dlq")] == [b"id-1", b"id-2"]


async def test_poison_goes_to_the_dlq_as_it_was_and_the_stream_goes_on(deliverer, target, emitter):
    assert await deliverer.handle(b"\xff not json", None, LOG) is Outcome.DEAD
    [dead] = emitter.to("wal.orders.dlq")
    assert dead.value == b"\xff not json"
    parsed = parse_dlq_record(dead.key, dead.value, dead.headers, partition=2, offset=41)
    assert isinstance(parsed, DlqEntry)
    assert parsed.error_class == "PoisonRecordError"
    assert "undecodable" in parsed.reason
    wrong_version = orjson.dumps({"v": 9})
    assert await deliverer.handle(wrong_version, None, LOG) is Outcome.DEAD
    unknown_type = encode_envelope(record(target={"type": "nope"}))
    assert await deliverer.handle(unknown_type, None, LOG) is Outcome.DEAD
    assert await deliverer.handle(encode_envelope(record(id="ok")), b"k1", LOG) is Outcome.DELIVERED
    assert [e.id for e in target.delivered] == ["ok"]


async def test_a_stale_copy_of_a_record_whose_chain_moved_on_is_skipped(
    deliverer, target, attempts
):
    attempts["id-1"] = 2  # a retry chain reached attempt 2; the log record is replayed
    assert await deliverer.handle(encode_envelope(record()), b"k1", LOG) is Outcome.DUPLICATE
    assert target.calls == []


async def test_an_open_breaker_defers_without_spending_an_attempt(deliverer, target, emitter):
    deliverer.pool.threshold = 2
    target.always = TargetUnavailableError("down", error_class="connection")
    await deliverer.handle(encode_envelope(record(id="a")), b"k", LOG)
    await deliverer.handle(encode_envelope(record(id="b")), b"k", LOG)  # threshold 2: opens
    calls = len(target.calls)
    outcome = await deliverer.handle(encode_envelope(record(id="c")), b"k", LOG)
    assert outcome is Outcome.DEFERRED
    assert len(target.calls) == calls  # the target was not called
    deferred = decode_envelope(emitter.emitted[-1].value)
    assert deferred.attempt == 0
    assert deferred.not_before_ms >= NOW + 1_000


async def test_a_bug_in_a_target_never_escapes(deliverer, target):
    class Broken:
        async def deliver(self, env):
            raise KeyError("surprise")

    deliverer.pool.target_obj = Broken()
    outcome = await deliverer.handle(encode_envelope(record()), b"k1", LOG)
    assert outcome is Outcome.RETRY  # unclassified errors are assumed transient


async def test_a_record_of_a_deleted_namespace_is_parked_not_lost(deliverer, emitter):
    gone = record(namespace="deleted")
    outcome = await deliverer.handle(encode_envelope(gone), None, Source("wal.deleted.log", 0, 1))
    assert outcome is Outcome.PARKED
    [hop] = emitter.emitted
    headers = parse_delay_headers(hop.headers)
    assert headers is not None
    assert headers.dest_topic == "wal.deleted.log"


async def test_a_retry_due_at_once_skips_the_delay_tiers(deliverer, target, emitter, registry):
    quick = parse_namespace(
        {
            "name": "orders",
            "backoff": {"base_ms": 1, "multiplier": 1.0, "cap_ms": 1, "jitter": 0.0},
            "target": {"type": "kafka", "topic": "out"},
        }
    )
    registry.apply(*encode_event(quick, 2))
    target.fail_next(TargetUnavailableError("down"))
    assert await deliverer.handle(encode_envelope(record()), b"k1", LOG) is Outcome.RETRY
    [hop] = emitter.emitted
    assert (hop.topic, hop.partition) == ("wal.orders.retry", 2)
    again = decode_envelope(hop.value)
    assert again.not_before_ms == NOW + 1
    # read back before it is due, it waits in the timer tier rather than going out early
    assert await deliverer.handle(hop.value, b"k1", Source("wal.orders.retry", 2, 0)) is (
        Outcome.DELAYED
    )
    assert emitter.emitted[-1].topic == "walstream.delay.timer"
