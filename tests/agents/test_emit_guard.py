"""The deliver stage's own writes that can never succeed are given up, not retried forever
(pinning the key and the partition's commit): a permanent refusal (authorization, policy,
invalid timestamp) dead-letters the record at once; a destination topic missing past
WALSTREAM_EMIT_DEST_GRACE_MS (and confirmed missing by the cluster's metadata) too. The DLQ
write itself, the last resort, is never given up: retried loudly, with a gauge.

Real Deliverer and FaustEmitter; Faust's producer faked (errors as aiokafka raises them, wrapped
in ProducerSendError when raised at send time, raw when they come back on the ack)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import (
    InvalidTimestampError,
    KafkaConnectionError,
    KafkaTimeoutError,
    PolicyViolationError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from faust.exceptions import ProducerSendError
from prometheus_client import CollectorRegistry

from walstream.agents.emit import EmitGuard, FaustEmitter
from walstream.agents.outcomes import Outcome, Source
from walstream.clock import FakeClock
from walstream.core.dlq import DlqEntry, parse_dlq_record
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.metrics import WalMetrics
from walstream.records import decode_envelope, encode_envelope
from walstream.targets.memory import MemoryTarget
from walstream.testing import (
    FakeFaustApp,
    envelope,
    fake_deliverer,
    namespace_definition,
    registry_of,
)

GRACE_MS = 60_000
DOWN = TargetUnavailableError("down", error_class="http_503")
DLQ = "wal.orders.dlq"
NOW = 1_800_000_000_000
LOG = Source("wal.orders.log", 2, 41)


def record(**changes):
    return envelope(1, now_ms=NOW)._replace(**changes)


def wrapped(cause: Exception) -> ProducerSendError:
    try:
        raise cause
    except Exception as exc:  # noqa: BLE001 - as Faust wraps it
        try:
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        except ProducerSendError as outer:
            return outer


class ScriptedProducer:
    """Faust's producer: each send to a topic fails with what its script says (in turn, then
    the last one for good), each failure taking ``cost_ms`` of the clock (a send timing out)."""

    def __init__(self, clock: FakeClock, cost_ms: int = 10_000) -> None:
        self.clock = clock
        self.cost_ms = cost_ms
        self.script: dict[str, list[Exception | None]] = {}
        self.sent: list[tuple[str, bytes | None, bytes | None, list]] = []
        self.tries: dict[str, int] = {}

    def fail(self, topic_prefix: str, *errors: Exception | None) -> None:
        self.script[topic_prefix] = list(errors)

    async def send_and_wait(self, topic, key, value, partition, timestamp, headers):
        self.tries[topic] = self.tries.get(topic, 0) + 1
        for prefix, errors in self.script.items():
            if topic.startswith(prefix) and errors:
                error = errors.pop(0) if len(errors) > 1 else errors[0]
                if error is not None:
                    self.clock.advance(self.cost_ms)
                    raise error
        self.sent.append((topic, key, value, headers or []))

    def to(self, topic: str):
        return [s for s in self.sent if s[0] == topic]


class Probe:
    """The cluster's metadata: the topic is missing (True), there (False), or no answer (None);
    ``clock``: advanced ``step_ms`` a probe (time passing between tries, when none is sent)."""

    def __init__(
        self, missing: bool | None, known: bool = True, clock: FakeClock | None = None
    ) -> None:
        self.answer = missing
        self.is_known = known
        self.clock = clock
        self.calls: list[tuple[str, int | None]] = []

    def known(self, topic: str) -> bool:
        return self.is_known

    async def __call__(self, topic: str, partition: int | None) -> bool | None:
        self.calls.append((topic, partition))
        if self.clock is not None:
            self.clock.advance(10_000)
        return self.answer


def setup(probe: Probe | None = None, target: MemoryTarget | None = None):
    clock = probe.clock if probe is not None and probe.clock is not None else FakeClock(NOW)
    producer = ScriptedProducer(clock)
    metrics = WalMetrics.create(CollectorRegistry())
    guard = EmitGuard(
        grace_ms=GRACE_MS,
        clock=clock,
        last_resort=lambda topic: topic.endswith(".dlq"),
        probe=probe,
        metrics=metrics,
    )
    emitter = FaustEmitter(FakeFaustApp(producer), max_backoff_s=0.001, guard=guard)
    target = target or MemoryTarget()
    deliverer = fake_deliverer(
        registry_of(namespace_definition()), target, emitter, clock, metrics=metrics
    )
    return deliverer, producer, target, metrics, clock


def dlq_entry(producer: ScriptedProducer) -> DlqEntry:
    [(_, key, value, headers)] = producer.to(DLQ)
    entry = parse_dlq_record(key, value, headers, partition=2, offset=0)
    assert isinstance(entry, DlqEntry)
    return entry


def refused(metrics: WalMetrics, error_class: str) -> float:
    return metrics.emit_refused.labels(error_class)._value.get()


@pytest.mark.parametrize(
    "error",
    [
        wrapped(TopicAuthorizationFailedError()),  # at send time: Faust wraps it
        TopicAuthorizationFailedError(),  # on the ack
        PolicyViolationError(),
        InvalidTimestampError(),
    ],
    ids=["authorization-wrapped", "authorization", "policy", "timestamp"],
)
async def test_a_permanently_refused_retry_dead_letters_the_record_at_once(error):
    deliverer, producer, target, metrics, _ = setup()
    target.fail_next(DOWN)
    producer.fail("walstream.delay", error)  # where the retry copy goes first
    outcome = await asyncio.wait_for(
        deliverer.handle(encode_envelope(record()), b"k1", LOG), 10
    )  # before: retried forever
    assert outcome is Outcome.DEAD
    assert sum(producer.tries.values()) == 2  # the refused retry copy, then the DLQ entry
    entry = dlq_entry(producer)
    assert entry.value is not None
    assert decode_envelope(entry.value).id == "id-1"  # the record, in the DLQ
    cause = type(error.__cause__ or error).__name__
    assert cause in entry.reason
    assert entry.error_class == "EmitRefused"
    assert refused(metrics, cause) == 1
    assert deliverer.attempts == {}


async def test_a_missing_retry_topic_dead_letters_the_record_after_the_grace():
    probe = Probe(missing=True)
    deliverer, producer, target, metrics, clock = setup(probe)
    target.fail_next(DOWN)
    producer.fail("walstream.delay", KafkaTimeoutError())  # deleted, no auto-create
    outcome = await asyncio.wait_for(deliverer.handle(encode_envelope(record()), b"k1", LOG), 10)
    assert outcome is Outcome.DEAD
    tries = producer.tries["walstream.delay.timer"]
    assert tries == GRACE_MS // producer.cost_ms + 1  # tried for the grace, no longer
    assert clock.now_ms() - NOW == tries * producer.cost_ms
    entry = dlq_entry(producer)
    assert "the topic does not exist" in entry.reason
    assert refused(metrics, "KafkaTimeoutError") == 1
    # The next record to that destination is refused without waiting for a send to time out.
    target.fail_next(DOWN)
    second = record(id="id-2", idempotency_token="tok-2")
    assert await deliverer.handle(encode_envelope(second), b"k2", LOG) is Outcome.DEAD
    assert producer.tries["walstream.delay.timer"] == tries  # not sent again


async def test_a_destination_the_producer_does_not_know_is_not_sent_to_while_missing():
    """aiokafka would wait its whole request timeout (Faust's: 20 min) for an unknown topic."""
    probe = Probe(missing=True, known=False, clock=FakeClock(NOW))
    deliverer, producer, target, _, _ = setup(probe)
    target.fail_next(DOWN)
    outcome = await asyncio.wait_for(deliverer.handle(encode_envelope(record()), b"k1", LOG), 10)
    assert outcome is Outcome.DEAD  # after the grace (10 s between probes)
    assert "walstream.delay.timer" not in producer.tries  # never sent: nothing waited on it
    assert len(probe.calls) == GRACE_MS // 10_000 + 2  # one probe a try, one past the grace
    assert "the topic does not exist" in dlq_entry(producer).reason


@pytest.mark.parametrize("answer", [False, None], ids=["topic-exists", "cluster-silent"])
async def test_timeouts_to_a_destination_that_is_not_known_missing_are_retried(answer):
    """An outage (no answer) or a topic that exists: the write waits, as long as it takes."""
    probe = Probe(missing=answer)
    deliverer, producer, target, _, _ = setup(probe)
    target.fail_next(DOWN)
    producer.fail("walstream.delay", *[KafkaTimeoutError()] * 30, None)  # 300 s, then back
    outcome = await asyncio.wait_for(deliverer.handle(encode_envelope(record()), b"k1", LOG), 10)
    assert outcome is Outcome.RETRY
    assert producer.tries["walstream.delay.timer"] == 31
    assert producer.to(DLQ) == []


async def test_a_dlq_write_is_never_given_up_and_is_reported(caplog):
    probe = Probe(missing=True)
    target = MemoryTarget()
    target.fail_next(TargetRejectedError("bad", error_class="http_400"))
    deliverer, producer, _, metrics, _ = setup(probe, target)
    gauge = metrics.dlq_write_failing.labels(DLQ)
    seen: list[float] = []
    failures = [KafkaTimeoutError() for _ in range(20)]  # 200 s: past the grace
    producer.fail(DLQ, *failures, KafkaConnectionError(), UnknownTopicOrPartitionError(), None)
    real_send = producer.send_and_wait

    async def watching(*args):
        seen.append(gauge._value.get())
        return await real_send(*args)

    producer.send_and_wait = watching
    with caplog.at_level(logging.ERROR, logger="walstream.agents.emit"):
        outcome = await asyncio.wait_for(
            deliverer.handle(encode_envelope(record()), b"k1", LOG), 10
        )
    assert outcome is Outcome.DEAD
    assert producer.tries[DLQ] == 23
    assert dlq_entry(producer).value is not None  # written in the end, with the record
    assert max(seen) >= 200  # seconds the DLQ write had been failing
    assert gauge._value.get() == 0  # it went through
    assert any(r.levelno == logging.CRITICAL and DLQ in r.getMessage() for r in caplog.records)
    assert probe.calls == []  # a DLQ is never probed to be given up
