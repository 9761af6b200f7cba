"""Every copy the deliverer writes of a record names where it was first read (``wal-origin``):
its retry copies, through the tiers or straight to the retry topic, and its DLQ entry, whose
``wal-source`` names the retry topic the last copy was read from."""

from __future__ import annotations

import pytest

from walstream.agents.deliver import Deliverer
from walstream.agents.outcomes import Outcome, Source
from walstream.clock import FakeClock
from walstream.core.delay import H_DEST, H_DUE
from walstream.core.dlq import DlqEntry, parse_dlq_record
from walstream.core.origin import H_ORIGIN, carried_origin, origin_headers, origin_of
from walstream.errors import TargetUnavailableError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.records import decode_envelope, encode_envelope
from walstream.targets.memory import MemoryTarget
from walstream.testing import Emitted, FakePool, RecordingEmitter, fake_deliverer
from walstream.testing import envelope as one_envelope

NOW = 1_800_000_000_000
LOG = Source("wal.orders.log", 2, 41)
FIRST = "wal.orders.log[2]@41"


def make_deliverer(
    emitter: RecordingEmitter, target: MemoryTarget, base_ms: int, threshold: int = 100
) -> Deliverer:
    registry = NamespaceRegistry()
    config = parse_namespace(
        {
            "name": "orders",
            "max_attempts": 3,
            "backoff": {"base_ms": base_ms, "multiplier": 1.0, "cap_ms": 60_000, "jitter": 0.0},
            "target": {"type": "kafka", "topic": "out"},
        }
    )
    registry.apply(*encode_event(config, 1))
    return fake_deliverer(
        registry, target, emitter, FakeClock(NOW), pool=FakePool(target, threshold)
    )


def envelope() -> bytes:
    return encode_envelope(one_envelope(1, now_ms=NOW))


def headers_of(emitted: Emitted) -> dict[str, bytes]:
    return dict(emitted.headers)


@pytest.mark.parametrize(("base_ms", "first_stop"), [(2_000, "walstream.delay.timer"), (100, None)])
async def test_retry_copies_and_the_dlq_entry_name_the_first_log_position(base_ms, first_stop):
    """2 s backoffs go through the timer tier, 100 ms ones straight to the retry topic (due
    within the hand-over lead): either way every copy names the log offset first read."""
    emitter, target = RecordingEmitter(), MemoryTarget()
    target.always = TargetUnavailableError("down", error_class="http_503")
    deliverer = make_deliverer(emitter, target, base_ms)

    assert await deliverer.handle(envelope(), b"k1", LOG) is Outcome.RETRY
    [first] = emitter.emitted
    assert first.topic == (first_stop or "wal.orders.retry")
    assert H_DUE in headers_of(first)
    assert (H_DEST in headers_of(first)) == (first_stop is not None)
    assert headers_of(first)[H_ORIGIN] == FIRST.encode()

    # The copy comes back on the retry topic (the delay stage carries wal-origin on) and fails
    # again, twice: the next copy and the entry still name the log offset, not the retry one.
    value, headers, offset = first.value, [(H_DUE, b"0"), *carried_origin(first.headers)], 7
    while True:
        source = Source("wal.orders.retry", 2, offset)
        deliverer.clock.advance(base_ms)  # type: ignore[attr-defined]
        outcome = await deliverer.handle(value, b"k1", source, headers)
        last = emitter.emitted[-1]
        assert headers_of(last)[H_ORIGIN] == FIRST.encode()
        if outcome is Outcome.DEAD:
            break
        assert outcome is Outcome.RETRY
        value, headers, offset = last.value, [(H_DUE, b"0"), *carried_origin(last.headers)], 9
    entry = parse_dlq_record(last.key, last.value, last.headers, partition=2, offset=0)
    assert isinstance(entry, DlqEntry)
    assert entry.source == "wal.orders.retry[2]@9"  # where the last copy was read
    assert entry.origin == FIRST  # what the DLQ listing shows as "origin"
    assert entry.attempts == 3
    assert decode_envelope(entry.value).attempt == 3
    assert [e.topic for e in emitter.emitted].count("wal.orders.dlq") == 1


async def test_a_copy_the_open_breaker_defers_names_the_first_log_position():
    emitter, target = RecordingEmitter(), MemoryTarget()
    target.always = TargetUnavailableError("down", error_class="http_503")
    deliverer = make_deliverer(emitter, target, 100, threshold=1)
    assert await deliverer.handle(envelope(), b"k1", LOG) is Outcome.RETRY  # the breaker opens
    [first] = emitter.emitted
    again = [(H_DUE, b"0"), *carried_origin(first.headers)]
    deliverer.clock.advance(100)  # type: ignore[attr-defined]
    retried = Source("wal.orders.retry", 2, 3)
    assert await deliverer.handle(first.value, b"k1", retried, again) is Outcome.DEFERRED
    deferred = emitter.emitted[-1]
    assert headers_of(deferred)[H_ORIGIN] == FIRST.encode()
    assert decode_envelope(deferred.value).attempt == 1  # no attempt spent


async def test_a_record_dead_at_its_first_read_names_its_own_position():
    emitter, target = RecordingEmitter(), MemoryTarget()
    deliverer = make_deliverer(emitter, target, 100)
    assert await deliverer.handle(b"not json", b"k1", LOG) is Outcome.DEAD
    [entry] = emitter.emitted
    assert headers_of(entry)[H_ORIGIN] == FIRST.encode()
    assert headers_of(entry)["wal-source"] == FIRST.encode()


def test_origin_headers_round_trip_and_ignore_what_is_not_one():
    assert origin_of(origin_headers(FIRST)) == FIRST
    assert origin_of(None) is None
    assert origin_of([("wal-due", b"1")]) is None
    assert origin_of([(H_ORIGIN, b"\xff")]) is None
    assert origin_headers(None) == []
    assert carried_origin([("wal-due", b"1"), (H_ORIGIN, b"t[0]@1")]) == [(H_ORIGIN, b"t[0]@1")]
