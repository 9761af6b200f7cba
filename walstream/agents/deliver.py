"""Deliver stage: one handler for every record of a namespace's log and retry topics. Never raises.

Faust acks (and so loses) a record whose agent raised, so ``Deliverer.handle`` routes every
outcome itself:

* not yet due (a delay, or a retry's backoff) -> the delay tiers, addressed back to the
  namespace's retry topic, same partition;
* due -> the target. Success ends it. A transient failure is retried: the record goes back
  through the delay tiers with attempt + 1 and its not-before time. A permanent failure, or
  attempts or time budget exhausted, dead-letters it with its whole history;
* target's circuit breaker open -> deferred until the breaker probes again (no attempt spent);
* undecodable, unknown version, unknown target type, or a bug here -> the DLQ, with a reason.

Attempt counts live in a table keyed by record id (a Faust table in the worker). A record
copy carrying a lower attempt than the table holds is stale: a crash replayed a source record
whose retry chain had already moved on. It is skipped, so a crash continues a retry sequence
rather than starting it again. The table entry is written after the retry record is acked,
never before: a crash in between replays the source record rather than losing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from walstream.clock import Clock
from walstream.core.delay import (
    HANDOFF_LEAD_MS,
    TIERS_MS,
    Deliver,
    delay_headers,
    due_header,
    next_stop,
    tier_of,
)
from walstream.core.dlq import entry_headers
from walstream.core.retry import DeadLetter, Failure, RetryPolicy, decide
from walstream.errors import NamespaceNotFoundError, PoisonRecordError, TargetError
from walstream.metrics import WalMetrics
from walstream.namespaces.config import NamespaceConfig
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import AttemptError, Envelope, decode_envelope, encode_envelope
from walstream.targets.pool import TargetPool
from walstream.topology import delay_topic

__all__ = ["Deliverer", "Emitter", "Outcome", "Source", "retry_policy"]

logger = logging.getLogger(__name__)

#: History kept on a record: its last attempts, each message cut to this many characters.
HISTORY_MAX = 200
MESSAGE_MAX = 500
#: How long a record of a namespace this worker no longer knows waits before it is looked at again.
UNKNOWN_NAMESPACE_RECHECK_MS = 60_000


class Emitter(Protocol):
    """Writes a record and returns once the broker acknowledged it (retrying until it does)."""

    async def emit(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record was read from."""

    topic: str
    partition: int
    offset: int

    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    DELAYED = "delayed"
    DEFERRED = "deferred"
    DUPLICATE = "duplicate"
    PARKED = "parked"


def retry_policy(ns: NamespaceConfig) -> RetryPolicy:
    """A namespace's retry rules."""
    return RetryPolicy(
        backoff=ns.backoff,
        max_attempts=ns.max_attempts,
        non_retryable=ns.non_retryable,
        budget_ms=ns.retry_budget_ms,
    )


class Deliverer:
    """The deliver/retry handler, over injected collaborators (tests pass fakes)."""

    def __init__(
        self,
        *,
        registry: NamespaceRegistry,
        pool: TargetPool,
        attempts: MutableMapping[str, int],
        emitter: Emitter,
        clock: Clock,
        rand: Callable[[], float],
        delay_partitions: int,
        app_id: str = "walstream",
        metrics: WalMetrics | None = None,
        tiers: tuple[int, ...] = TIERS_MS,
        handoff_lead_ms: int = HANDOFF_LEAD_MS,
    ) -> None:
        self.registry = registry
        self.pool = pool
        self.attempts = attempts
        self.emitter = emitter
        self.clock = clock
        self.rand = rand
        self.delay_partitions = delay_partitions
        self.app_id = app_id
        self.metrics = metrics
        self.tiers = tiers
        #: A retry due within this goes straight to the retry topic (its due time in a header:
        #: the retry agent holds it until then) instead of through the delay stage.
        self.handoff_lead_ms = handoff_lead_ms

    async def handle(self, value: bytes | None, key: bytes | None, source: Source) -> Outcome:
        """Route one record to its outcome. Never raises (but for cancellation)."""
        try:
            outcome, ns_name, stage = await self._handle(value, key, source)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: the record must still land somewhere it can be found
            logger.exception("deliver %s: unexpected error", source.coordinates())
            reason = f"internal error: {type(exc).__name__}: {exc}"
            outcome = await self._dead_raw(value, key, source, reason, "InternalError")
            ns_name, stage = self.registry.namespace_of(source.topic) or "-", "error"
        if self.metrics is not None:
            self.metrics.deliveries.labels(ns_name, stage, outcome.value).inc()
        return outcome

    async def _handle(
        self, value: bytes | None, key: bytes | None, source: Source
    ) -> tuple[Outcome, str, str]:
        topic_ns = self.registry.namespace_of(source.topic)
        try:
            env = decode_envelope(value)
        except PoisonRecordError as exc:
            outcome = await self._dead_raw(value, key, source, exc.reason, "PoisonRecordError")
            return outcome, topic_ns or "-", "poison"
        ns = self._namespace(env.namespace, topic_ns)
        if ns is None:
            return await self._park(env, value, key, source), env.namespace, "parked"
        stage = "log" if source.topic == ns.topics.log else "retry"
        if env.attempt < self.attempts.get(env.id, 0):
            return Outcome.DUPLICATE, ns.name, stage
        now = self.clock.now_ms()
        if env.due_ms > now:
            await self._wait(value, key, env.due_ms, ns.topics.retry, source.partition, now)
            return Outcome.DELAYED, ns.name, stage
        if self.metrics is not None:
            self.metrics.delivery_lateness.labels(ns.name).observe((now - env.due_ms) / 1000)
        return await self._attempt(env, key, ns, source, now), ns.name, stage

    def _namespace(self, name: str, topic_ns: str | None) -> NamespaceConfig | None:
        for candidate in (name, topic_ns):
            if candidate is not None:
                try:
                    return self.registry.get(candidate)
                except NamespaceNotFoundError:
                    continue
        return None

    async def _attempt(
        self, env: Envelope, key: bytes | None, ns: NamespaceConfig, source: Source, now: int
    ) -> Outcome:
        try:
            target, endpoint = await self.pool.target(env.target)
        except TargetError as exc:
            failure = Failure(error_class=exc.error_class, message=str(exc), retriable=False)
            return await self._failed(env, key, ns, source, now, failure)
        breaker = self.pool.breaker(endpoint)
        if not breaker.allow(now):
            # The target is down: wait for the breaker's next probe; no attempt is spent.
            spread = int(self.rand() * self.pool.settings.breaker_base_open_ms)
            deferred = env._replace(not_before_ms=breaker.retry_at_ms(now) + spread)
            await self._wait(
                encode_envelope(deferred),
                key,
                deferred.due_ms,
                ns.topics.retry,
                source.partition,
                now,
            )
            return Outcome.DEFERRED
        try:
            await target.deliver(env)
        except TargetError as exc:
            failure = Failure(
                error_class=exc.error_class, message=str(exc), retriable=exc.retriable
            )
        except Exception as exc:  # noqa: BLE001 - unclassified by the target: assume it may pass
            logger.warning("target %s raised %r unclassified", endpoint, exc)
            failure = Failure(error_class=type(exc).__name__, message=str(exc), retriable=True)
        else:
            breaker.record_success()
            if env.id in self.attempts:
                del self.attempts[env.id]
            return Outcome.DELIVERED
        if failure.retriable:
            breaker.record_failure(self.clock.now_ms())
        else:
            breaker.record_success()  # the target answered: it is up
        return await self._failed(env, key, ns, source, self.clock.now_ms(), failure)

    async def _failed(
        self,
        env: Envelope,
        key: bytes | None,
        ns: NamespaceConfig,
        source: Source,
        now: int,
        failure: Failure,
    ) -> Outcome:
        decision = decide(
            retry_policy(ns),
            attempt=env.attempt,
            failure=failure,
            now_ms=now,
            first_attempt_ms=env.history[0].at_ms if env.history else now,
            rand=self.rand(),
        )
        history = (
            *env.history,
            AttemptError(now, env.attempt, failure.error_class, failure.message[:MESSAGE_MAX]),
        )[-HISTORY_MAX:]
        if isinstance(decision, DeadLetter):
            dead = env._replace(attempt=env.attempt + 1, history=history)
            await self.emitter.emit(
                ns.topics.dlq,
                encode_envelope(dead),
                key=env.id.encode(),
                partition=source.partition,
                headers=entry_headers(
                    namespace=ns.name,
                    reason=decision.reason,
                    error_class=failure.error_class,
                    source=source.coordinates(),
                    attempts=dead.attempt,
                    dead_at_ms=now,
                ),
            )
            if self.metrics is not None:
                self.metrics.dlq_records_written.labels(ns.name, failure.error_class).inc()
            if env.id in self.attempts:
                del self.attempts[env.id]
            return Outcome.DEAD
        retry = env._replace(
            attempt=decision.attempt, history=history, not_before_ms=decision.not_before_ms
        )
        raw = encode_envelope(retry)
        if retry.due_ms - now > self.handoff_lead_ms:
            await self._wait(raw, key, retry.due_ms, ns.topics.retry, source.partition, now)
        else:
            # Due within the hand-over lead: straight to the retry topic, held there until due.
            await self.emitter.emit(
                ns.topics.retry,
                raw,
                key=key,
                partition=source.partition,
                headers=due_header(retry.due_ms),
            )
        self.attempts[env.id] = decision.attempt  # only once the retry record is safe
        return Outcome.RETRY

    async def _wait(
        self,
        value: bytes | None,
        key: bytes | None,
        due_ms: int,
        dest_topic: str,
        dest_partition: int,
        now: int,
    ) -> None:
        """Hand a record to the delay tiers, addressed to come back to ``dest_topic``."""
        stop = next_stop(due_ms, now, self.tiers)
        if isinstance(stop, Deliver):  # due after all: straight to its destination
            await self.emitter.emit(dest_topic, value, key=key, partition=dest_partition)
            return
        await self.emitter.emit(
            delay_topic(self.app_id, tier_of(stop)),
            value,
            key=key,
            partition=dest_partition % self.delay_partitions,
            headers=delay_headers(due_ms, dest_topic, dest_partition),
            timestamp_ms=now,
        )

    async def _park(
        self, env: Envelope, value: bytes | None, key: bytes | None, source: Source
    ) -> Outcome:
        """A record of a namespace no longer defined: keep it, look again later (not the DLQ:
        there is no namespace to own the entry, and the namespace may come back)."""
        logger.warning(
            "namespace %s of record %s at %s is not defined; parked",
            env.namespace,
            env.id,
            source.coordinates(),
        )
        now = self.clock.now_ms()
        await self._wait(
            value,
            key,
            now + UNKNOWN_NAMESPACE_RECHECK_MS,
            source.topic,
            source.partition,
            now,
        )
        return Outcome.PARKED

    async def _dead_raw(
        self,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        reason: str,
        error_class: str,
    ) -> Outcome:
        """Dead-letter bytes that are not (or not usable as) a record, as they were."""
        ns_name = self.registry.namespace_of(source.topic)
        try:
            ns = self.registry.get(ns_name) if ns_name is not None else None
        except NamespaceNotFoundError:
            ns = None
        if ns is None:
            logger.error("cannot dead-letter %s (no namespace): %s", source.coordinates(), reason)
            return Outcome.PARKED
        record_id = f"poison-{source.topic}-{source.partition}-{source.offset}"
        await self.emitter.emit(
            ns.topics.dlq,
            value,
            key=record_id.encode(),
            partition=source.partition,
            headers=entry_headers(
                namespace=ns.name,
                reason=reason,
                error_class=error_class,
                source=source.coordinates(),
                attempts=0,
                dead_at_ms=self.clock.now_ms(),
            ),
        )
        if self.metrics is not None:
            self.metrics.dlq_records_written.labels(ns.name, error_class).inc()
        return Outcome.DEAD
