"""Deliver stage: one handler for every record of a namespace's log and retry topics. Never raises.

Faust acks (and so loses) a record whose agent raised, so ``Deliverer.handle`` routes every
outcome itself. The deliverer orchestrates; each concern is a module of its own:

* per-key ordering (``ordering = "key"``) is a gate consulted before and after the attempt
  (``walstream.agents.ordering_gate``): ``admit`` (go, or wait parked behind the key's head),
  ``hold`` (before a copy is sent to wait), ``after(outcome)`` (hand the key on), and the
  release and settle markers that pass a key's turn;
* what is not delivered now goes where it waits or ends (``walstream.agents.failures``): not
  due yet -> the delay tiers; a transient failure -> retried with attempt + 1; the breaker open
  -> deferred (no attempt spent); permanent, exhausted, undecodable or a bug -> the DLQ;
* one attempt at the target (``walstream.agents.target_call``): its endpoint, its breaker, the
  call under a lease of its pool; it says what happened (delivered, failed, breaker open) and
  the deliverer routes on that;
* post-delivery stages registered with ``register`` see every outcome (``PostDelivery``): a new
  stage is an addition, not an edit of this module.

Attempt counts live in a table keyed by record id (a Faust table in the worker). A record
copy carrying a lower attempt than the table holds is stale: a crash replayed a source record
whose retry chain had already moved on. It is skipped, so a crash continues a retry sequence
rather than starting it again. The table entry is written after the retry record is acked,
never before: a crash in between replays the source record rather than losing it. Once the
target acknowledged a record its count becomes a delivered mark (``Attempts.delivered``): a
copy of it read again is a DUPLICATE, not delivered twice (and passes its key's turn if it still
heads it).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from aiokafka.errors import KafkaError

from walstream.agents.attempts import Attempts, mark_delivered
from walstream.agents.failures import FailureRouter, namespace_for
from walstream.agents.key_locks import KeyTurns
from walstream.agents.ordering import KeyOrder
from walstream.agents.ordering_gate import (
    Drain,
    MarkerDone,
    OrderingGate,
    Release,
    Turn,
)
from walstream.agents.outcomes import (
    Emitter,
    Handled,
    Outcome,
    PostDelivery,
    Source,
    Stage,
    count_key,
)
from walstream.agents.target_call import BreakerOpen, Delivered, TargetCall
from walstream.clock import Clock
from walstream.core.ordering import Overflow, RecordRef
from walstream.core.origin import origin_of
from walstream.core.outbox.markers import marker_kind
from walstream.errors import (
    EmitRefusedError,
    PoisonRecordError,
)
from walstream.kafka.log_reader import RecordGoneError
from walstream.metrics import WalMetrics
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope, decode_envelope
from walstream.targets.pool import TargetPool

__all__ = ["Deliverer"]

logger = logging.getLogger(__name__)


class Deliverer:
    """The deliver/retry handler: orchestrates its parts (``build_deliverer`` makes them)."""

    def __init__(
        self,
        *,
        registry: NamespaceRegistry,
        attempts: Attempts,
        clock: Clock,
        gate: OrderingGate,
        failures: FailureRouter,
        target: TargetCall,
        metrics: WalMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.attempts = attempts
        self.clock = clock
        #: per-key ordering: the table (``order``), the key locks, the markers
        self.gate = gate
        #: where a record not delivered now goes: the delay tiers, the retry topic, the DLQ
        self.failures = failures
        #: one attempt at a record's target (endpoint, breaker, leased call)
        self.target = target
        self.metrics = metrics
        self._stages: list[PostDelivery] = []

    def register(self, stage: PostDelivery) -> None:
        """Run ``stage`` after each record of a known namespace is handled, in registration
        order (after its key's turn passed on)."""
        self._stages.append(stage)

    @property
    def order(self) -> KeyOrder:
        """The ordering table (per-key heads and parked records)."""
        return self.gate.order

    @property
    def turns(self) -> KeyTurns:
        """The ordering keys being handled now (one record at a time each)."""
        return self.gate.locks.turns

    @property
    def pool(self) -> TargetPool:
        """The target pool the attempts lease from."""
        return self.target.pool

    @property
    def emitter(self) -> Emitter:
        """Where the records the deliverer writes go."""
        return self.failures.emitter

    @property
    def handoff_lead_ms(self) -> int:
        """A retry due within this goes straight to the retry topic (held there until due)."""
        return self.failures.settings.handoff_lead_ms

    @handoff_lead_ms.setter
    def handoff_lead_ms(self, value: int) -> None:
        self.failures.settings = replace(self.failures.settings, handoff_lead_ms=value)

    async def handle(
        self,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Outcome:
        """Route one record to its outcome. Never raises (but for cancellation)."""
        origin = origin_of(headers)
        if origin is not None:  # a copy: its later copies name where it was first read
            source = replace(source, origin=origin)
        kind = marker_kind(headers)
        try:
            if kind is not None:
                async with self.gate.locked(key, source):
                    outcome, ns_name, stage = await self._marker(kind, value, key, source)
            else:
                record = _decoded(value)  # locked by its envelope's ordering key, if it is one
                env = record if isinstance(record, Envelope) else None
                async with self.gate.locked(key, source, env):
                    outcome, ns_name, stage = await self._handle(record, value, key, source)
        except Exception as exc:  # a bug: the record must still land somewhere it can be found
            logger.exception("deliver %s: unexpected error", source.coordinates())
            outcome, ns_name, stage = await self.failures.internal_error(
                exc, value, key, source, marker=kind is not None
            )
        self._count(ns_name, stage, outcome)
        return outcome

    # -- a record ---------------------------------------------------------------------------

    async def _handle(
        self,
        record: Envelope | PoisonRecordError,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        *,
        released: bool = False,
        drain: Drain | None = None,
    ) -> tuple[Outcome, str, Stage]:
        """One record (``value`` decoded, or why not): ``released`` when it heads its key
        already (handed on by a marker, whose handler is ``drain``)."""
        topic_ns = self.registry.namespace_of(source.topic)
        if isinstance(record, PoisonRecordError):
            outcome = await self.failures.dead_raw(
                value, key, source, record.reason, "PoisonRecordError"
            )
            return outcome, topic_ns or "-", Stage.POISON
        env = record
        # The namespace whose topic it was read from decides (its policy, its retry and DLQ
        # topics): a record naming another namespace may not borrow that one's target.
        ns = namespace_for(self.registry, topic_ns, env.namespace)
        if ns is None:
            return await self.failures.park(env, value, key, source), env.namespace, Stage.PARKED
        stage = Stage.LOG if source.topic == ns.topics.log else Stage.RETRY
        turn = await self.gate.open(ns, env)
        outcome = await self._gated(turn, env, value, key, source, released=released, drain=drain)
        await self._after(Handled(ns, env, source, stage, outcome))
        return outcome, ns.name, stage

    async def _gated(
        self,
        turn: Turn,
        env: Envelope,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        *,
        released: bool,
        drain: Drain | None,
    ) -> Outcome:
        """A decoded record of a known namespace, past its key's gate and back."""
        if self.attempts.was_delivered(count_key(env)):
            # The target acknowledged it already: a copy read again (a crash, the delay stage
            # sending again, a stale retry) is not delivered twice. Its key goes on if it still
            # names it (the crash came between the delivery and the hand-on).
            await self.gate.after(
                turn, env.id, Outcome.DELIVERED, key, source.partition, drain=drain
            )
            return Outcome.DUPLICATE
        if env.attempt < self.attempts.get(count_key(env), 0):
            await self.gate.hold(turn, env.id)  # its retry chain is live: the key waits on it
            return Outcome.DUPLICATE
        if not released:
            verdict = await self.gate.admit(turn, env, source)
            if isinstance(verdict, Overflow):
                return await self._overflow(turn, env, source)
            if verdict is not None:
                return verdict
        outcome = await self._deliver(turn, env, value, key, source)
        await self.gate.after(turn, env.id, outcome, key, source.partition, drain=drain)
        return outcome

    async def _overflow(self, turn: Turn, env: Envelope, source: Source) -> Outcome:
        """``max_parked`` wait behind the key's head: dead-lettered with a reason naming that
        head (redriven later, it is ordered again from then)."""
        reason = self.gate.overflow_reason(turn)
        logger.error("%s at %s: %s", env.id, source.coordinates(), reason)
        outcome = await self.failures.dead(
            turn, env, source, reason=reason, error_class="OrderingOverflow"
        )
        await self.gate.overflowed(turn, env, source)
        return outcome

    async def _deliver(
        self, turn: Turn, env: Envelope, value: bytes | None, key: bytes | None, source: Source
    ) -> Outcome:
        """Due: attempt it; not yet: send it to wait. A bug or a refused copy: the DLQ (and
        the key goes on: the caller passes its turn)."""
        now = self.clock.now_ms()
        try:
            if env.due_ms > now:
                return await self.failures.delay(turn, env, value, key, source, now)
            if self.metrics is not None:
                self.metrics.delivery_lateness.labels(turn.ns.name).observe(
                    (now - env.due_ms) / 1000
                )
            return await self._attempt(turn, env, key, source, now)
        except EmitRefusedError as exc:  # could not be sent on to wait: the DLQ
            reason = f"refused by the broker on its way to {exc}"
            return await self.failures.dead(
                turn, env, source, reason=reason, error_class="EmitRefused"
            )
        except Exception as exc:  # a bug: the DLQ, and the key goes on
            logger.exception("deliver %s: unexpected error", source.coordinates())
            reason = f"internal error: {type(exc).__name__}: {exc}"
            return await self.failures.dead(
                turn, env, source, reason=reason, error_class="InternalError"
            )

    async def _attempt(
        self, turn: Turn, env: Envelope, key: bytes | None, source: Source, now: int
    ) -> Outcome:
        """One attempt at the target, and where its result leads."""
        result = await self.target.attempt(env, turn.ns, now)
        if isinstance(result, Delivered):
            # after the target's acknowledgement, never before: lost in a crash, the record is
            # delivered again (a duplicate), never skipped
            await mark_delivered(self.attempts, env, self.clock.now_ms(), source)
            return Outcome.DELIVERED
        if isinstance(result, BreakerOpen):
            return await self.failures.defer(turn, env, key, source, now, result.until_ms)
        return await self.failures.failed(
            turn, env, key, source, result.at_ms, result.failure, started=now
        )

    async def _after(self, handled: Handled) -> None:
        """The registered post-delivery stages, in turn; one failing changes nothing else."""
        for stage in self._stages:
            try:
                await stage.after(handled)
            except Exception:
                logger.exception("post-delivery stage %r failed on %s", stage, handled.env.id)

    # -- ordering markers -------------------------------------------------------------------

    async def _marker(
        self, kind: bytes, value: bytes | None, key: bytes | None, source: Source
    ) -> tuple[Outcome, str, Stage]:
        """An ordering marker: deliver the released record (and the records parked after it,
        while they go, up to the gate's ``drain_max`` of them), or settle a held head."""
        step = await self.gate.on_marker(kind, value, key, source)
        if isinstance(step, MarkerDone):
            return step.outcome, step.namespace, Stage.ORDER
        ref, tries, drain = step.ref, step.tries, step.drain
        while True:
            released = await self._released(step, ref, source, tries)
            if released is None:  # not readable now: the marker comes back later
                return Outcome.RETRY, step.ns.name, Stage.ORDER
            outcome, ns_name = released
            if drain.next is None:
                return outcome, ns_name, Stage.ORDER
            self._count(ns_name, Stage.ORDER, outcome)  # handed on inline: counted here
            ref, drain.next, tries = drain.next, None, 0

    async def _released(
        self, release: Release, ref: RecordRef, source: Source, tries: int
    ) -> tuple[Outcome, str] | None:
        """Deliver the parked record ``ref``, read back from the log; None: not readable now."""
        ns, drain = release.ns, release.drain
        try:
            record = await self.gate.read(ref)
        except RecordGoneError as exc:
            logger.error("parked record %s of key %r is gone: %s", ref.id, release.order_key, exc)
            reason = f"parked record {ref.id} is no longer on the log: {exc}"
            gone = Source(ref.topic, ref.partition, ref.offset)
            await self.failures.dead_raw(None, release.key, gone, reason, "RecordGoneError")
            await self.gate.settle(
                ns, release.order_key, ref.id, release.key, source.partition, drain=drain
            )
            return Outcome.DEAD, ns.name
        except (TimeoutError, OSError, KafkaError) as exc:
            await self.gate.read_later(release, ref, source, tries + 1, exc)
            return None
        at = Source(ref.topic, ref.partition, ref.offset)
        outcome, ns_name, stage = await self._handle(
            _decoded(record.value), record.value, record.key, at, released=True, drain=drain
        )
        if stage is Stage.POISON:  # dead-lettered as it was, without its key's turn
            await self.gate.settle(
                ns, release.order_key, ref.id, release.key, source.partition, drain=drain
            )
        return outcome, ns_name

    # -- helpers ----------------------------------------------------------------------------

    def _count(self, ns_name: str, stage: Stage, outcome: Outcome) -> None:
        if self.metrics is not None:
            self.metrics.deliveries.labels(ns_name, stage.value, outcome.value).inc()


def _decoded(value: bytes | None) -> Envelope | PoisonRecordError:
    """The record ``value`` holds, or why it holds none."""
    try:
        return decode_envelope(value)
    except PoisonRecordError as exc:
        return exc
