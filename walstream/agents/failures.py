"""Failure routing: where a record goes when it is not delivered now (retry, defer, wait, DLQ).

* not yet due (a delay, or a retry's backoff) -> the delay tiers, addressed back to the
  namespace's retry topic, same partition (``wait``);
* a transient failure -> retried: the record goes back through the delay tiers (or, due within
  the hand-over lead, straight to the retry topic) with attempt + 1 and its not-before time; its
  count is written once the copy is acknowledged, never before (``failed``);
* the target's circuit breaker open -> deferred until the breaker probes again, no attempt spent
  (``defer``);
* a permanent failure, attempts or time budget exhausted, a copy the broker refuses, or bytes
  that are not a record -> the namespace's DLQ, with its whole history (``dead``, ``dead_raw``);
* a namespace this worker does not know -> kept, looked at again later (``park``);
* a bug in the deliverer -> the record as it was to the DLQ, its count forgotten and its key's
  turn passed (``internal_error``).

Before a copy of a record is sent to wait, its key's turn is held (``OrderingGate.hold``): the
caller's ``Turn`` is passed in, the gate does the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from walstream.agents.attempts import Attempts
from walstream.agents.ordering_gate import OrderingGate, Turn
from walstream.agents.outcomes import (
    DeliverySettings,
    Emitter,
    Outcome,
    Source,
    Stage,
    count_key,
    send,
)
from walstream.clock import Clock
from walstream.core import outbox
from walstream.core.retry import (
    DeadLetter,
    Failure,
    RetryPolicy,
    bound_history,
    decide,
    history_entry,
    may_defer,
)
from walstream.errors import EmitRefusedError, NamespaceNotFoundError, PoisonRecordError
from walstream.metrics import WalMetrics
from walstream.namespaces.config import NamespaceConfig
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope, decode_envelope, encode_envelope

__all__ = ["UNKNOWN_NAMESPACE_RECHECK_MS", "FailureRouter", "namespace_for", "retry_policy"]

logger = logging.getLogger(__name__)

#: How long a record of a namespace this worker no longer knows waits before it is looked at again.
UNKNOWN_NAMESPACE_RECHECK_MS = 60_000


def retry_policy(ns: NamespaceConfig) -> RetryPolicy:
    """A namespace's retry rules."""
    return RetryPolicy(
        backoff=ns.backoff,
        max_attempts=ns.max_attempts,
        non_retryable=ns.non_retryable,
        budget_ms=ns.retry_budget_ms,
    )


class FailureRouter:
    """Sends a record that is not delivered now where it waits or ends (see the module doc)."""

    def __init__(
        self,
        *,
        registry: NamespaceRegistry,
        attempts: Attempts,
        emitter: Emitter,
        clock: Clock,
        rand: Callable[[], float],
        gate: OrderingGate,
        settings: DeliverySettings,
        metrics: WalMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.attempts = attempts
        self.emitter = emitter
        self.clock = clock
        self.rand = rand
        self.gate = gate
        #: the delay tiers' addressing, the hand-over lead, the history bound
        self.settings = settings
        self.metrics = metrics

    async def delay(
        self,
        turn: Turn,
        env: Envelope,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        now: int,
    ) -> Outcome:
        """Not due yet: wait in the delay tiers, back to the retry topic when due."""
        await self.gate.hold(turn, env.id)  # ordering: the key waits on it, first
        await self.wait(value, key, env.due_ms, turn.ns.topics.retry, source, now)
        return Outcome.DELAYED

    async def defer(
        self, turn: Turn, env: Envelope, key: bytes | None, source: Source, now: int, until: int
    ) -> Outcome:
        """The target's breaker is open until ``until``: no attempt is spent, but time is (the
        retry budget and attempt limit still hold)."""
        ns = turn.ns
        first = env.first_attempt_ms or now
        verdict = may_defer(
            retry_policy(ns), attempt=env.attempt, until_ms=until, first_attempt_ms=first
        )
        if verdict is not None:
            return await self.dead(
                turn, env, source, reason=verdict.reason, error_class="circuit_open"
            )
        deferred = env._replace(not_before_ms=until, first_attempt_ms=first)
        await self.gate.hold(turn, env.id)  # ordering: the key waits on it, first
        await self.wait(
            encode_envelope(deferred), key, deferred.due_ms, ns.topics.retry, source, now
        )
        return Outcome.DEFERRED

    async def failed(
        self,
        turn: Turn,
        env: Envelope,
        key: bytes | None,
        source: Source,
        now: int,
        failure: Failure,
        *,
        started: int | None = None,
    ) -> Outcome:
        """Attempt ``env.attempt``, begun at ``started`` (default ``now``), failed."""
        ns = turn.ns
        first = env.first_attempt_ms or (now if started is None else started)
        decision = decide(
            retry_policy(ns),
            attempt=env.attempt,
            failure=failure,
            now_ms=now,
            first_attempt_ms=first,
            rand=self.rand(),
        )
        history = bound_history(
            (*env.history, history_entry(now, env.attempt, failure)),
            self.settings.history_max_bytes,
        )
        failed = env._replace(attempt=env.attempt + 1, history=history, first_attempt_ms=first)
        if isinstance(decision, DeadLetter):
            return await self.dead(
                turn, failed, source, reason=decision.reason, error_class=failure.error_class
            )
        retry = failed._replace(attempt=decision.attempt, not_before_ms=decision.not_before_ms)
        raw = encode_envelope(retry)
        await self.gate.hold(turn, env.id)  # ordering: the key waits on it, first
        try:
            if retry.due_ms - now > self.settings.handoff_lead_ms:
                await self.wait(raw, key, retry.due_ms, ns.topics.retry, source, now)
            else:
                # Due within the hand-over lead: straight to the retry topic, held until due.
                copy = outbox.retry_copy(
                    raw,
                    key,
                    retry_topic=ns.topics.retry,
                    partition=source.partition,
                    due_ms=retry.due_ms,
                    origin=source.first_read(),
                )
                await send(self.emitter, copy)
        except EmitRefusedError as exc:
            reason = f"retry refused by the broker ({exc}) after {failure.error_class}"
            return await self.dead(turn, failed, source, reason=reason, error_class="EmitRefused")
        await self.attempts.record(count_key(env), decision.attempt)  # once the retry is safe
        return Outcome.RETRY

    async def dead(
        self, turn: Turn, env: Envelope, source: Source, *, reason: str, error_class: str
    ) -> Outcome:
        """Dead-letter ``env`` (as it should be kept: its attempts and history) and forget its
        count. The caller passes its key's turn (``OrderingGate.after``, for a DEAD outcome).

        An entry the broker refuses (too large even with a bounded history: a record written to
        the log by someone else than the API) goes without the record: reason and source
        coordinates only, the record stays where it was read."""
        ns = turn.ns
        now = self.clock.now_ms()
        behind = self.gate.behind(turn, env.id)
        value: bytes | None = encode_envelope(env)
        for last_resort in (False, True):
            try:
                entry = outbox.dlq_entry(
                    value,
                    dlq_topic=ns.topics.dlq,
                    partition=source.partition,
                    record_id=env.id,
                    namespace=ns.name,
                    reason=reason,
                    error_class=error_class,
                    source=source.coordinates(),
                    attempts=env.attempt,
                    dead_at_ms=now,
                    origin=source.first_read(),
                    behind=behind,
                    key=env.key,  # without the record, it still names the key it holds
                )
                await send(self.emitter, entry)
                break
            except EmitRefusedError as exc:
                if last_resort:
                    logger.critical(
                        "DLQ entry of %s at %s refused even without the record (%s); "
                        "it stays at its source",
                        env.id,
                        source.coordinates(),
                        exc,
                    )
                    break
                logger.error("DLQ copy of %s refused (%s): entry without it", env.id, exc)
                value = None
                reason = (
                    f"{reason} [the DLQ refused the record ({exc.reason}): not copied, it "
                    f"stays at {source.coordinates()}]"
                )
        if self.metrics is not None:
            self.metrics.dlq_records_written.labels(ns.name, error_class).inc()
        await self.attempts.forget(count_key(env))
        return Outcome.DEAD

    async def wait(
        self,
        value: bytes | None,
        key: bytes | None,
        due_ms: int,
        dest_topic: str,
        source: Source,
        now: int,
    ) -> None:
        """Hand a record to the delay tiers, addressed to come back to ``dest_topic`` (same
        partition as ``source``), with ``wal-origin`` (where it was first read)."""
        waiting = outbox.wait(
            value,
            key,
            due_ms=due_ms,
            now_ms=now,
            dest_topic=dest_topic,
            dest_partition=source.partition,
            app_id=self.settings.app_id,
            tier_partitions=self.settings.delay_partitions,
            origin=source.first_read(),
            tiers=self.settings.tiers,
        )
        await send(self.emitter, waiting)

    async def park(
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
        await self.wait(value, key, now + UNKNOWN_NAMESPACE_RECHECK_MS, source.topic, source, now)
        return Outcome.PARKED

    async def dead_raw(
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
        now = self.clock.now_ms()
        if ns is None:
            # No DLQ to own it (yet): keep it, and look again once the namespace may be known.
            logger.error(
                "cannot dead-letter %s (no namespace), parked: %s", source.coordinates(), reason
            )
            try:
                await self.wait(
                    value, key, now + UNKNOWN_NAMESPACE_RECHECK_MS, source.topic, source, now
                )
            except EmitRefusedError as exc:
                logger.critical(
                    "%s not parked (%s): it stays at its source", source.coordinates(), exc
                )
            return Outcome.PARKED
        record_id = outbox.poison_id(source.topic, source.partition, source.offset)
        for last_resort in (False, True):
            try:
                entry = outbox.dlq_entry(
                    value,
                    dlq_topic=ns.topics.dlq,
                    partition=source.partition,
                    record_id=record_id,
                    namespace=ns.name,
                    reason=reason,
                    error_class=error_class,
                    source=source.coordinates(),
                    attempts=0,
                    dead_at_ms=now,
                    origin=source.first_read(),
                )
                await send(self.emitter, entry)
                break
            except EmitRefusedError as exc:
                if last_resort:
                    logger.critical("DLQ refused %s even without it: %s", record_id, exc)
                    break
                value = None
                reason = f"{reason} [not copied ({exc.reason}): it stays at {source.coordinates()}]"
        if self.metrics is not None:
            self.metrics.dlq_records_written.labels(ns.name, error_class).inc()
        return Outcome.DEAD

    async def internal_error(
        self,
        exc: Exception,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        *,
        marker: bool,
    ) -> tuple[Outcome, str, Stage]:
        """The deliverer's catch-all (a bug while handling): dead-letter the record as it was
        (and settle it as every way to the DLQ does); failing that too, say where it is, loudly."""
        reason = f"internal error: {type(exc).__name__}: {exc}"
        ns_name = self.registry.namespace_of(source.topic) or "-"
        try:
            outcome = await self.dead_raw(value, key, source, reason, "InternalError")
            if outcome is Outcome.DEAD and not marker:
                await self._settle_dead(value, key, source)
        except Exception:  # nothing left to try
            logger.exception("deliver %s: not dead-lettered either", source.coordinates())
            outcome = Outcome.PARKED
        return outcome, ns_name, Stage.ERROR

    async def _settle_dead(self, value: bytes | None, key: bytes | None, source: Source) -> None:
        """After the catch-all dead-lettered a record as it was: forget its count and pass its
        key's turn, as every way to the DLQ does (else a redrive is a "duplicate" and the key
        waits forever)."""
        try:
            env = decode_envelope(value)
        except PoisonRecordError:
            return
        ns = namespace_for(self.registry, self.registry.namespace_of(source.topic), env.namespace)
        if ns is None:
            return
        try:
            # under the key's lock, as the record was handled (released when it raised)
            async with self.gate.locked(key, source, env):
                await self.attempts.forget(count_key(env))
                turn = await self.gate.open(ns, env)
                await self.gate.after(turn, env.id, Outcome.DEAD, key, source.partition)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("dead record %s at %s not settled", env.id, source.coordinates())


def namespace_for(
    registry: NamespaceRegistry, topic_ns: str | None, name: str | None
) -> NamespaceConfig | None:
    """The namespace owning the topic, else (a topic no namespace has now) the record's."""
    for candidate in (topic_ns, name):
        if candidate is not None:
            try:
                return registry.get(candidate)
            except NamespaceNotFoundError:
                continue
    return None
