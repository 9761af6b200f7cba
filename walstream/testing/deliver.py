"""The deliverer's collaborators in memory (emitter, log, pool, targets) and the worker's loop
over a ``Deliverer`` (``DeliveryHarness``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from walstream.agents.attempts import Attempts, MemoryAttempts
from walstream.agents.deliver import Deliverer
from walstream.agents.ordering import KeyOrder
from walstream.agents.outcomes import DeliverySettings, Emitter, LogReading, Outcome, Source
from walstream.clock import FakeClock
from walstream.core.breaker import BreakerPolicy, CircuitBreaker
from walstream.core.delay import parse_delay_headers
from walstream.core.outbox.markers import marker_kind
from walstream.errors import TargetRejectedError
from walstream.kafka.log_reader import LoggedRecord, RecordGoneError
from walstream.metrics import WalMetrics
from walstream.namespaces.config import NamespaceConfig
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope, decode_envelope, encode_envelope
from walstream.settings import Settings
from walstream.targets.base import Target
from walstream.targets.memory import MemoryTarget
from walstream.targets.pool import TargetLeasing
from walstream.testing.records import NOW_MS, Headers
from walstream.worker import build_deliverer

# -- the emitter -----------------------------------------------------------------------------


@dataclass
class Emitted:
    """One record the emitter was given."""

    topic: str
    value: bytes | None
    key: bytes | None
    partition: int | None
    headers: Headers
    timestamp_ms: int | None


@dataclass
class RecordingEmitter:
    """An ``Emitter`` that keeps every record, acknowledged at once."""

    emitted: list[Emitted] = field(default_factory=list)

    async def emit(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        self.emitted.append(
            Emitted(topic, value, key, partition, list(headers or []), timestamp_ms)
        )

    def to(self, topic: str) -> list[Emitted]:
        """What was emitted to ``topic``, in order."""
        return [e for e in self.emitted if e.topic == topic]


# -- the log ---------------------------------------------------------------------------------


@dataclass
class MemoryLog:
    """A ``LogReading``: topics as offset-addressed lists; offsets in ``gone`` were removed."""

    records: dict[tuple[str, int], list[LoggedRecord]] = field(default_factory=dict)
    gone: set[tuple[str, int, int]] = field(default_factory=set)

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> int:
        """Appends a record; returns its offset."""
        part = self.records.setdefault((topic, partition), [])
        part.append(LoggedRecord(key, value))
        return len(part) - 1

    async def read(self, topic: str, partition: int, offset: int) -> LoggedRecord:
        if (topic, partition, offset) in self.gone:
            raise RecordGoneError(f"{topic}[{partition}]@{offset}")
        return self.records[(topic, partition)][offset]


# -- targets and the pool --------------------------------------------------------------------


class ScriptedTarget(MemoryTarget):
    """Fails the attempts scripted for a record id, in turn; delivers the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.script: dict[str, list[Exception]] = {}

    def fail(self, record_id: str, *errors: Exception) -> None:
        self.script.setdefault(record_id, []).extend(errors)

    async def deliver(self, envelope: Envelope) -> None:
        planned = self.script.get(envelope.id)
        if planned:
            self.calls.append(envelope)
            raise planned.pop(0)
        await super().deliver(envelope)


class FakePool:
    """A ``TargetLeasing``: ``target`` for every spec (endpoint ``ep``) but type ``nope`` (no
    deliverer for it), a breaker per endpoint opening after ``threshold`` failures."""

    def __init__(self, target: Target, threshold: int = 100) -> None:
        self.settings = Settings(breaker_base_open_ms=1_000)
        self.target_obj = target
        self.breakers: dict[str, CircuitBreaker] = {}
        self.threshold = threshold

    async def target(
        self, spec: Mapping[str, Any], ns: NamespaceConfig | None = None
    ) -> tuple[Target, str]:
        if spec.get("type") == "nope":
            raise TargetRejectedError("no deliverer", error_class="unknown_target")
        return self.target_obj, "ep"

    @contextlib.asynccontextmanager
    async def lease(
        self, spec: Mapping[str, Any], ns: NamespaceConfig | None = None
    ) -> AsyncIterator[tuple[Target, str]]:
        yield await self.target(spec, ns)

    def breaker(self, endpoint: str) -> CircuitBreaker:
        policy = BreakerPolicy(threshold=self.threshold)
        return self.breakers.setdefault(endpoint, CircuitBreaker(policy))


def fake_deliverer(
    registry: NamespaceRegistry,
    target: Target | None,
    emitter: Emitter,
    clock: FakeClock,
    attempts: Attempts | MemoryAttempts | None = None,
    pool: TargetLeasing | None = None,
    *,
    order: KeyOrder | None = None,
    reader: LogReading | None = None,
    metrics: WalMetrics | None = None,
    **settings: Any,
) -> Deliverer:
    """A ``Deliverer`` over fakes: ``FakePool(target)`` unless ``pool``, ``MemoryAttempts``
    unless ``attempts``, no jitter (``rand`` 0.5), 4 delay partitions; ``settings`` are the
    ``DeliverySettings`` to change (``drain_max=10``)."""
    if pool is None:
        pool = FakePool(target if target is not None else MemoryTarget())
    return build_deliverer(
        registry=registry,
        pool=pool,  # type: ignore[arg-type]  # Deliverer names TargetPool, not TargetLeasing
        # MemoryAttempts is a dict: its get() is typed Optional (walstream.agents.attempts)
        attempts=attempts if attempts is not None else MemoryAttempts(),  # type: ignore[arg-type]
        emitter=emitter,
        clock=clock,
        rand=lambda: 0.5,
        settings=DeliverySettings(**{"delay_partitions": 4, **settings}),
        order=order,
        reader=reader,
        metrics=metrics,
    )


# -- the worker's loop -----------------------------------------------------------------------


class DeliveryHarness:
    """Writes records to a namespace log and runs everything the handler emits back through it
    (retry copies after their backoff, delay hops at their due time, markers) like the worker."""

    def __init__(
        self,
        deliverer: Deliverer,
        emitter: RecordingEmitter,
        log: MemoryLog,
        clock: FakeClock,
        partition: int = 2,
    ) -> None:
        self.deliverer = deliverer
        self.emitter = emitter
        self.log = log
        self.clock = clock
        self.partition = partition
        self.seen = 0
        self.outcomes: list[Outcome] = []

    @classmethod
    def build(
        cls,
        registry: NamespaceRegistry,
        target: Target,
        order: KeyOrder,
        *,
        emitter: RecordingEmitter | None = None,
        reader: LogReading | None = None,
        drain_max: int = 0,
        now_ms: int = NOW_MS,
    ) -> DeliveryHarness:
        """A harness over ``fake_deliverer`` with ``order``, reading parked records from its log
        (or ``reader``)."""
        emitter, log, clock = emitter or RecordingEmitter(), MemoryLog(), FakeClock(now_ms)
        extra: dict[str, Any] = {"drain_max": drain_max} if drain_max else {}
        deliverer = fake_deliverer(
            registry, target, emitter, clock, order=order, reader=reader or log, **extra
        )
        return cls(deliverer, emitter, log, clock)

    async def write(self, env: Envelope, ns: str = "seq") -> Outcome:
        topic = f"wal.{ns}.log"
        key = env.key.encode() if env.key else None
        value = encode_envelope(env)
        offset = self.log.append(topic, self.partition, key, value)
        outcome = await self.deliverer.handle(value, key, Source(topic, self.partition, offset))
        self.outcomes.append(outcome)
        return outcome

    async def run_emitted(self, *, limit: int = 200) -> None:
        """Feed back what was emitted (retry topic, delay tiers) until nothing new is."""
        for _ in range(limit):
            if self.seen == len(self.emitter.emitted):
                return
            sent = self.emitter.emitted[self.seen]
            self.seen += 1
            topic, headers = sent.topic, list(sent.headers)
            delay = parse_delay_headers(headers) if topic.startswith("walstream.delay") else None
            if delay is not None:  # the delay stage: to its destination once due
                self.clock.advance(max(0, delay.due_ms - self.clock.now_ms()))
                topic, headers = delay.dest_topic, []
            if not topic.endswith(".retry"):
                continue  # DLQ entries and deliveries elsewhere stay where they are
            if marker_kind(headers) is None:
                due = decode_envelope(sent.value).due_ms
                self.clock.advance(max(0, due - self.clock.now_ms()))
            if sent.partition is None:
                raise AssertionError(f"a copy to {topic} names no partition")
            offset = self.log.append(topic, sent.partition, sent.key, sent.value)
            outcome = await self.deliverer.handle(
                sent.value, sent.key, Source(topic, sent.partition, offset), headers
            )
            self.outcomes.append(outcome)
        raise AssertionError("emitted records did not settle")


def _checks() -> None:  # pragma: no cover - never run: mypy checks the fakes fit the Protocols
    _emitter: Emitter = RecordingEmitter()
    _reader: LogReading = MemoryLog()
    _pool: TargetLeasing = FakePool(MemoryTarget())
    _target: Target = ScriptedTarget()
