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

A namespace with ``ordering = "key"`` first asks its key's state (``walstream.agents.ordering``):
a record whose key waits on another record is parked there (a reference, acked at once) instead
of delivered; past ``max_parked`` behind one key it is dead-lettered (``OrderingOverflow``, the
reason naming the head; redrive it once the key moves). Before a copy of a record is sent to
wait (retry, delay, breaker deferral) its key is blocked on it, acknowledged first
(``_hold_turn``: a crash or a quick retry can then neither let a later record pass it nor block
the key behind a record already delivered); a stale copy read again re-asserts that block.
Delivered or dead-lettered, a record hands its key to the next parked record with a release
marker, whose handler delivers up to ``drain_max`` parked records in turn before writing the
next marker. A parked record the log cannot return now is tried again after a backoff. The
deliver and retry agents run side by side, so a key's records take a lock per (namespace, key)
while handled (``_KeyTurns``): the transitions above are never interleaved.

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

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Protocol

from aiokafka.errors import KafkaError

from walstream.agents.attempts import Attempts
from walstream.agents.ordering import (
    KeyOrder,
    MarkerKind,
    decode_marker,
    marker_headers,
    marker_kind,
    marker_value,
)
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
from walstream.core.ordering import (
    AlreadyParked,
    Free,
    Go,
    KeyHead,
    Overflow,
    ParkAt,
    RecordRef,
    ReleaseNext,
    admit,
    dead_lettered_head,
    hand_to,
    hold,
    settled_head,
    skip_first,
)
from walstream.core.origin import origin_headers, origin_of
from walstream.core.retry import (
    HISTORY_MAX_BYTES,
    DeadLetter,
    Failure,
    RetryPolicy,
    bound_history,
    decide,
    history_entry,
    may_defer,
)
from walstream.core.validate import original_write_time_problem
from walstream.errors import (
    EmitRefusedError,
    NamespaceNotFoundError,
    PoisonRecordError,
    TargetError,
    TargetRejectedError,
)
from walstream.kafka.log_reader import LoggedRecord, RecordGoneError
from walstream.metrics import WalMetrics
from walstream.namespaces.config import NamespaceConfig, Ordering
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope, decode_envelope, encode_envelope
from walstream.targets.pool import TargetPool
from walstream.topology import delay_topic

__all__ = ["Deliverer", "Emitter", "LogReading", "Outcome", "Source", "retry_policy"]

logger = logging.getLogger(__name__)

#: How long a record of a namespace this worker no longer knows waits before it is looked at again.
UNKNOWN_NAMESPACE_RECHECK_MS = 60_000
#: A DLQ entry names at most this many of the records that waited behind it.
BEHIND_MAX = 1_000
#: Parked records one release marker's handler hands on and delivers itself, one after the
#: other, before it leaves the rest to a new marker (the worker's ``drain_max``). One marker per
#: record costs a produce and a fetch each, ~30 ms on the embedded broker: measured, 5,000 parked
#: behind one key drained in ~170 s that way, in ~15 s with this.
DRAIN_MAX = 200
#: Backoff of a release marker whose record could not be read from the log: doubling from the
#: first to the last, held by the retry agent until due (within its hold limit, no slot taken).
UNREADABLE_BACKOFF_MS = (50, 1_000)


class _KeyTurns:
    """One handler at a time per ordering key, across the deliver and retry agents.

    Each agent's dispatcher runs a key's records one at a time, but the two agents run side by
    side: a key's log record and a copy on its retry topic (a retry, a release marker, a stale
    copy a crash sent again) could interleave at every await. The ordering decisions assume a
    key's transitions do not: a record admitted with its key free, failing while a stale copy
    of an earlier record had meanwhile failed and become the head, was not made the head
    itself, and the key's next records went ahead of its retry (chaos test, seed 13013). A lock
    per key, held while one of its records is handled; the entry goes once nobody holds or
    waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable | None) -> AsyncIterator[None]:
        if key is None:
            yield
            return
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


@dataclass(slots=True)
class _Drain:
    """A release marker's handler at work: who it was for, and the next record it hands on."""

    via: str
    budget: int
    next: RecordRef | None = None


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


class LogReading(Protocol):
    """Reads a parked record back by its reference (``walstream.kafka.log_reader.LogReader``)."""

    async def read(self, topic: str, partition: int, offset: int) -> LoggedRecord: ...


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record was read from."""

    topic: str
    partition: int
    offset: int
    #: ``wal-origin`` of a copy: where the record was first read (walstream.core.origin)
    origin: str | None = None

    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def first_read(self) -> str:
        """Where the record was first read: its origin, else here."""
        return self.origin or self.coordinates()


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    DELAYED = "delayed"
    DEFERRED = "deferred"
    DUPLICATE = "duplicate"
    PARKED = "parked"
    #: parked behind the record its key waits on (ordering = key)
    WAITING = "waiting"
    #: an ordering marker whose turn had passed already
    STALE = "stale"


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
        attempts: Attempts,
        emitter: Emitter,
        clock: Clock,
        rand: Callable[[], float],
        delay_partitions: int,
        app_id: str = "walstream",
        metrics: WalMetrics | None = None,
        tiers: tuple[int, ...] = TIERS_MS,
        handoff_lead_ms: int = HANDOFF_LEAD_MS,
        order: KeyOrder | None = None,
        reader: LogReading | None = None,
        drain_max: int = 0,
        history_max_bytes: int = HISTORY_MAX_BYTES,
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
        #: per-key ordering state and the reader of parked records (ordering = key)
        self.order = order if order is not None else KeyOrder({})
        self.reader = reader
        #: records a release marker's handler delivers inline (0: one marker per record)
        self.drain_max = drain_max
        #: a record's history is kept within this many encoded bytes (WALSTREAM_HISTORY_MAX_BYTES)
        self.history_max_bytes = history_max_bytes
        #: ordering keys being handled (one record at a time each, across both agents)
        self.turns = _KeyTurns()

    async def handle(
        self,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Outcome:
        """Route one record to its outcome. Never raises (but for cancellation)."""
        kind = None
        origin = origin_of(headers)
        if origin is not None:  # a copy: its later copies name where it was first read
            source = replace(source, origin=origin)
        try:
            kind = marker_kind(headers)
            async with self.turns.hold(self._turn_key(key, source)):
                if kind is not None:
                    outcome, ns_name, stage = await self._marker(kind, value, key, source)
                else:
                    outcome, ns_name, stage = await self._handle(value, key, source)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: the record must still land somewhere it can be found
            logger.exception("deliver %s: unexpected error", source.coordinates())
            reason = f"internal error: {type(exc).__name__}: {exc}"
            ns_name, stage = self.registry.namespace_of(source.topic) or "-", "error"
            try:
                outcome = await self._dead_raw(value, key, source, reason, "InternalError")
                if outcome is Outcome.DEAD and kind is None:
                    await self._settle_dead(value, key, source)
            except asyncio.CancelledError:
                raise
            except Exception:  # nothing left to try: say where the record is, loudly
                logger.exception("deliver %s: not dead-lettered either", source.coordinates())
                outcome = Outcome.PARKED
        if self.metrics is not None:
            self.metrics.deliveries.labels(ns_name, stage, outcome.value).inc()
        return outcome

    async def _handle(
        self,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        *,
        released: bool = False,
        drain: _Drain | None = None,
    ) -> tuple[Outcome, str, str]:
        """One record: ``released`` when it heads its key already (handed on by a marker, whose
        handler is ``drain``)."""
        topic_ns = self.registry.namespace_of(source.topic)
        try:
            env = decode_envelope(value)
        except PoisonRecordError as exc:
            outcome = await self._dead_raw(value, key, source, exc.reason, "PoisonRecordError")
            return outcome, topic_ns or "-", "poison"
        # The namespace whose topic it was read from decides (its policy, its retry and DLQ
        # topics): a record naming another namespace may not borrow that one's target.
        ns = self._namespace(topic_ns, env.namespace)
        if ns is None:
            return await self._park(env, value, key, source), env.namespace, "parked"
        stage = "log" if source.topic == ns.topics.log else "retry"
        order_key = self._order_key(ns, env)
        if self.attempts.was_delivered(_count_key(env)):
            # The target acknowledged it already: a copy read again (a crash, the delay stage
            # sending again, a stale retry) is not delivered twice. Its key goes on if it still
            # names it (the crash came between the delivery and the hand-on).
            if order_key is not None:
                await self._pass_turn(ns, env, key, source, Outcome.DELIVERED, drain=drain)
            return Outcome.DUPLICATE, ns.name, stage
        if env.attempt < self.attempts.get(_count_key(env), 0):
            if order_key is not None:  # its retry chain is live: the key waits on it
                await self._hold_turn(ns, env)
            return Outcome.DUPLICATE, ns.name, stage
        if order_key is not None and not released:
            waits = await self._admit(ns, order_key, env, source)
            if waits is not None:
                return waits, ns.name, stage
        outcome = await self._deliver(env, value, key, ns, source)
        if order_key is not None:
            await self._pass_turn(ns, env, key, source, outcome, drain=drain)
        return outcome, ns.name, stage

    async def _deliver(
        self,
        env: Envelope,
        value: bytes | None,
        key: bytes | None,
        ns: NamespaceConfig,
        source: Source,
    ) -> Outcome:
        now = self.clock.now_ms()
        try:
            if env.due_ms > now:
                await self._hold_turn(ns, env)  # ordering: the key waits on it, first
                await self._wait(
                    value,
                    key,
                    env.due_ms,
                    ns.topics.retry,
                    source.partition,
                    now,
                    origin=source.first_read(),
                )
                return Outcome.DELAYED
            if self.metrics is not None:
                self.metrics.delivery_lateness.labels(ns.name).observe((now - env.due_ms) / 1000)
            return await self._attempt(env, key, ns, source, now)
        except asyncio.CancelledError:
            raise
        except EmitRefusedError as exc:  # could not be sent on to wait: the DLQ
            reason = f"refused by the broker on its way to {exc}"
            return await self._dead(env, ns, source, reason=reason, error_class="EmitRefused")
        except Exception as exc:  # a bug: the DLQ, and the key goes on (_handle passes its turn)
            logger.exception("deliver %s: unexpected error", source.coordinates())
            reason = f"internal error: {type(exc).__name__}: {exc}"
            return await self._dead(env, ns, source, reason=reason, error_class="InternalError")

    # -- per-key ordering ------------------------------------------------------------------

    def _turn_key(self, key: bytes | None, source: Source) -> tuple[str, bytes] | None:
        """The lock a record of ``source`` takes (``_KeyTurns``): its namespace and record key
        (a key-ordered namespace's ordering key, on its log and retry topics and in markers),
        None when it is not ordered. Decided without decoding the record."""
        if key is None:
            return None
        name = self.registry.namespace_of(source.topic)
        if name is None:
            return None
        try:
            ns = self.registry.get(name)
        except NamespaceNotFoundError:
            return None
        if ns.ordering is Ordering.KEY or self.order.blocked(ns.name, key.decode(errors="replace")):
            return (ns.name, key)
        return None

    def _order_key(self, ns: NamespaceConfig, env: Envelope) -> str | None:
        """The key ``env`` is ordered by, or None (no key, or an unordered namespace).

        A namespace switched from ``key`` to ``none`` keeps ordering the keys still blocked
        until they drain: their parked records must still be released, in turn."""
        if env.key is None:
            return None
        if ns.ordering is Ordering.KEY or self.order.blocked(ns.name, env.key):
            return env.key
        return None

    async def _hold_turn(self, ns: NamespaceConfig, env: Envelope) -> None:
        """A copy of ``env`` is about to be sent to wait (retry, delay, breaker deferral): its
        key waits on it from now, acknowledged before the copy goes.

        Written after it, a crash in between let the key's later records pass it, and a quick
        retry could be delivered before the write and then leave its key blocked behind a
        record already delivered. A stale copy read again re-asserts the block the same way."""
        order_key = self._order_key(ns, env)
        if order_key is None:
            return
        head = await self.order.load(ns.name, order_key)
        blocked = hold(head, env.id, self.clock.now_ms())
        if blocked is not head:
            await self.order.save(ns.name, order_key, blocked, durable=True)

    async def _admit(
        self, ns: NamespaceConfig, order_key: str, env: Envelope, source: Source
    ) -> Outcome | None:
        """None: the record goes now. Else it waits behind its key's head (parked: a reference,
        acked at once), or, with ``max_parked`` waiting there already, is dead-lettered with a
        reason naming that head (redriven later, it is ordered again from then)."""
        head = await self.order.load(ns.name, order_key)
        ref = RecordRef(env.id, source.topic, source.partition, source.offset)
        verdict = admit(head, ref, max_parked=self.order.max_parked)
        if isinstance(verdict, Go):
            return None
        if isinstance(verdict, ParkAt):
            await self.order.park(ns.name, order_key, verdict, ref)
            return Outcome.WAITING
        if isinstance(verdict, AlreadyParked) or head is None:
            return Outcome.WAITING
        reason = (
            f"ordering: key {order_key!r} has {head.parked} records waiting behind {head.head} "
            f"(at most {self.order.max_parked}, WALSTREAM_ORDERING_MAX_PARKED_PER_KEY): not "
            f"parked; redrive it once {head.head} is delivered or discarded"
        )
        logger.error("%s at %s: %s", env.id, source.coordinates(), reason)
        outcome = await self._dead(env, ns, source, reason=reason, error_class="OrderingOverflow")
        # noted in the head (as it is now: it may have moved meanwhile), read again: not twice
        again = admit(await self.order.load(ns.name, order_key), ref, max_parked=head.parked)
        if isinstance(again, Overflow):
            await self.order.save(ns.name, order_key, again.head)
        return outcome

    async def _pass_turn(
        self,
        ns: NamespaceConfig,
        env: Envelope,
        key: bytes | None,
        source: Source,
        outcome: Outcome,
        *,
        drain: _Drain | None = None,
    ) -> None:
        """What ``outcome`` means for the key: delivered or dead-lettered, it goes on to the next
        record. Waiting in retry or delay changes nothing here: ``_hold_turn`` blocked the key
        before the record's copy was sent (now, a quick retry may be delivered already)."""
        order_key = self._order_key(ns, env)
        if order_key is None:
            return
        now = self.clock.now_ms()
        if outcome is Outcome.DELIVERED:
            await self._hand_on(
                ns, order_key, key, source.partition, env.id, now, dead=False, drain=drain
            )
        elif outcome is Outcome.DEAD:
            await self._hand_on(
                ns, order_key, key, source.partition, env.id, now, dead=True, drain=drain
            )

    async def _hand_on(
        self,
        ns: NamespaceConfig,
        order_key: str,
        key: bytes | None,
        partition: int,
        record_id: str,
        now: int,
        *,
        dead: bool,
        drain: _Drain | None = None,
    ) -> None:
        """The record is settled (or dead-lettered): the next parked record heads the key.

        Its release marker is acknowledged before the table names it: a crash in between leaves
        the old head in the table, whose source record is read again. Inside a release marker's
        handler (``drain``, budget left) no marker is written: the head record names that marker
        (``via``) and where the new head is on the log, and the handler delivers it next; the
        marker read again after a crash resumes there."""
        head = await self.order.load(ns.name, order_key)
        step = (
            dead_lettered_head(head, record_id, ns.on_dlq, now)
            if dead
            else settled_head(head, record_id)
        )
        ref = None
        while isinstance(step, ReleaseNext) and head is not None:
            ref = self.order.entry(ns.name, order_key, step.seq)
            if ref is not None:
                break
            logger.error("ordering: entry %d of %s/%r missing: skipped", step.seq, ns.name, key)
            head = skip_first(head)
            step = settled_head(head, record_id)
        if step is None:
            return
        if isinstance(step, KeyHead):  # held in the DLQ
            await self.order.save(ns.name, order_key, step)
            return
        if isinstance(step, Free) or head is None or ref is None:
            await self.order.save(ns.name, order_key, None)
            return
        if drain is not None and drain.budget > 0:
            drain.budget -= 1
            after = hand_to(head, step.seq, ref, now, via=drain.via)
            await self.order.save(ns.name, order_key, after)
            await self.order.drop(ns.name, order_key, step.seq)
            drain.next = ref
            return
        await self.emitter.emit(
            ns.topics.retry,
            marker_value(ns.name, ref.id, ref),
            key=key,
            partition=partition,
            headers=marker_headers(MarkerKind.RELEASE),
        )
        current = await self.order.load(ns.name, order_key)  # records may have parked meanwhile
        if current is None or current.head != record_id or current.first > step.seq:
            return  # handed on meanwhile (another copy of the head was settled too)
        await self.order.save(ns.name, order_key, hand_to(current, step.seq, ref, now))
        await self.order.drop(ns.name, order_key, step.seq)

    def _behind(self, ns: NamespaceConfig, env: Envelope) -> tuple[str, ...]:
        """Ids of the records waiting behind ``env`` (its DLQ entry names them)."""
        order_key = self._order_key(ns, env)
        if order_key is None:
            return ()
        return self.order.behind(ns.name, order_key, env.id, BEHIND_MAX)

    async def _marker(
        self, kind: bytes, value: bytes | None, key: bytes | None, source: Source
    ) -> tuple[Outcome, str, str]:
        """An ordering marker: deliver the released record (and the records parked after it,
        while they go, up to DRAIN_MAX of them), or settle a held head."""
        try:
            marker = decode_marker(kind, value)
        except PoisonRecordError as exc:
            logger.error("ordering marker at %s dropped: %s", source.coordinates(), exc.reason)
            return Outcome.STALE, "-", "order"
        ns = self._namespace(marker.namespace, None)
        if ns is None or key is None:
            return Outcome.STALE, marker.namespace, "order"
        order_key = key.decode()
        head = await self.order.load(ns.name, order_key)
        now = self.clock.now_ms()
        if kind == MarkerKind.SETTLE:
            if head is None or head.head != marker.record_id or not head.held:
                return Outcome.STALE, ns.name, "order"  # handled already, or redriven (live)
            await self._hand_on(
                ns, order_key, key, source.partition, marker.record_id, now, dead=False
            )
            return Outcome.DELIVERED, ns.name, "order"
        ref = marker.ref
        if head is not None and head.head != marker.record_id and head.via == marker.record_id:
            ref = head.ref  # this marker's handler was handing the key on when it stopped
        elif head is None or head.head != marker.record_id:
            return Outcome.STALE, ns.name, "order"  # handled already (a marker read again)
        if ref is None or self.reader is None:
            logger.error("release marker at %s cannot be followed", source.coordinates())
            return Outcome.STALE, ns.name, "order"
        drain = _Drain(via=marker.record_id, budget=self.drain_max)
        tries = marker.tries if ref.id == marker.record_id else 0
        while True:
            try:
                record = await self.reader.read(ref.topic, ref.partition, ref.offset)
            except RecordGoneError as exc:
                logger.error("parked record %s of key %r is gone: %s", ref.id, order_key, exc)
                reason = f"parked record {ref.id} is no longer on the log: {exc}"
                gone = Source(ref.topic, ref.partition, ref.offset)
                await self._dead_raw(None, key, gone, reason, "RecordGoneError")
                await self._hand_on(
                    ns, order_key, key, source.partition, ref.id, now, dead=False, drain=drain
                )
                outcome, ns_name = Outcome.DEAD, ns.name
            except (TimeoutError, OSError, KafkaError) as exc:
                await self._read_later(ns, key, source, ref, tries + 1, exc)
                return Outcome.RETRY, ns.name, "order"
            else:
                outcome, ns_name, stage = await self._handle(
                    record.value,
                    record.key,
                    Source(ref.topic, ref.partition, ref.offset),
                    released=True,
                    drain=drain,
                )
                if stage == "poison":  # dead-lettered as it was, without its key's turn
                    await self._hand_on(
                        ns, order_key, key, source.partition, ref.id, now, dead=False, drain=drain
                    )
            if drain.next is None:
                return outcome, ns_name, "order"
            if self.metrics is not None:  # handed on inline: counted here (the last by handle)
                self.metrics.deliveries.labels(ns_name, "order", outcome.value).inc()
            ref, drain.next, tries = drain.next, None, 0
            now = self.clock.now_ms()

    async def _read_later(
        self,
        ns: NamespaceConfig,
        key: bytes | None,
        source: Source,
        ref: RecordRef,
        tries: int,
        exc: Exception,
    ) -> None:
        """The log could not be read now: the marker goes back, due after a backoff doubling
        with each try (the retry agent holds it until then), not at once in a busy loop."""
        low, high = UNREADABLE_BACKOFF_MS
        delay = min(high, low << min(tries - 1, 16))
        if tries & (tries - 1) == 0:  # the 1st, 2nd, 4th, 8th ... try: the log stays readable
            logger.warning(
                "parked record %s not read (%r, try %d): released again in %d ms",
                ref.id,
                exc,
                tries,
                delay,
            )
        await self.emitter.emit(
            source.topic,
            marker_value(ns.name, ref.id, ref, tries=tries),
            key=key,
            partition=source.partition,
            headers=[
                *marker_headers(MarkerKind.RELEASE),
                *due_header(self.clock.now_ms() + delay),
            ],
        )

    def _namespace(self, topic_ns: str | None, name: str | None) -> NamespaceConfig | None:
        """The namespace owning the topic, else (a topic no namespace has now) the record's."""
        for candidate in (topic_ns, name):
            if candidate is not None:
                try:
                    return self.registry.get(candidate)
                except NamespaceNotFoundError:
                    continue
        return None

    async def _attempt(
        self, env: Envelope, key: bytes | None, ns: NamespaceConfig, source: Source, now: int
    ) -> Outcome:
        owt_problem = original_write_time_problem(env.lifecycle.original_write_time_ms, now)
        try:
            if owt_problem is not None:  # not from the API (produced into a log): its bounds hold
                raise TargetRejectedError(
                    f"original_write_time {owt_problem}", error_class="bad_write_time"
                )
            _, endpoint = await self.pool.target(env.target, ns)  # checked, started: its breaker
        except TargetError as exc:  # refused (unknown type, not allowed) or unreachable cluster
            failure = Failure(
                error_class=exc.error_class, message=str(exc), retriable=exc.retriable
            )
            return await self._failed(env, key, ns, source, now, failure)
        except Exception as exc:  # noqa: BLE001 - e.g. a cluster unreachable: its producer can't start
            # Not the record's fault: retried like a connection error at delivery (the README).
            logger.warning("target %s for %s not made: %r", env.target.get("type"), env.id, exc)
            failure = Failure(error_class="connection", message=repr(exc), retriable=True)
            return await self._failed(env, key, ns, source, now, failure)
        breaker = self.pool.breaker(endpoint)
        if not breaker.allow(now):
            # The target is down: wait for the breaker's next probe; no attempt is spent, but
            # time is: the retry budget and attempt limit still hold.
            spread = int(self.rand() * self.pool.settings.breaker_base_open_ms)
            until = breaker.retry_at_ms(now) + spread
            first = env.first_attempt_ms or now
            verdict = may_defer(
                retry_policy(ns), attempt=env.attempt, until_ms=until, first_attempt_ms=first
            )
            if verdict is not None:
                return await self._dead(
                    env, ns, source, reason=verdict.reason, error_class="circuit_open"
                )
            deferred = env._replace(not_before_ms=until, first_attempt_ms=first)
            await self._hold_turn(ns, env)  # ordering: the key waits on it, first
            await self._wait(
                encode_envelope(deferred),
                key,
                deferred.due_ms,
                ns.topics.retry,
                source.partition,
                now,
                origin=source.first_read(),
            )
            return Outcome.DEFERRED
        try:
            # leased: an evicted cluster's producer is not closed under the send
            async with self.pool.lease(env.target, ns) as (target, _):
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
            # after the target's acknowledgement, never before: lost in a crash, the record is
            # delivered again (a duplicate), never skipped
            await self.attempts.delivered(_count_key(env), self.clock.now_ms())
            return Outcome.DELIVERED
        if failure.retriable:
            breaker.record_failure(self.clock.now_ms())
        else:
            breaker.record_success()  # the target answered: it is up
        return await self._failed(env, key, ns, source, self.clock.now_ms(), failure, started=now)

    async def _failed(
        self,
        env: Envelope,
        key: bytes | None,
        ns: NamespaceConfig,
        source: Source,
        now: int,
        failure: Failure,
        *,
        started: int | None = None,
    ) -> Outcome:
        """Attempt ``env.attempt``, begun at ``started`` (default ``now``), failed."""
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
            (*env.history, history_entry(now, env.attempt, failure)), self.history_max_bytes
        )
        failed = env._replace(attempt=env.attempt + 1, history=history, first_attempt_ms=first)
        if isinstance(decision, DeadLetter):
            return await self._dead(
                failed, ns, source, reason=decision.reason, error_class=failure.error_class
            )
        retry = failed._replace(attempt=decision.attempt, not_before_ms=decision.not_before_ms)
        raw = encode_envelope(retry)
        await self._hold_turn(ns, env)  # ordering: the key waits on it, first
        try:
            if retry.due_ms - now > self.handoff_lead_ms:
                await self._wait(
                    raw,
                    key,
                    retry.due_ms,
                    ns.topics.retry,
                    source.partition,
                    now,
                    origin=source.first_read(),
                )
            else:
                # Due within the hand-over lead: straight to the retry topic, held until due.
                await self.emitter.emit(
                    ns.topics.retry,
                    raw,
                    key=key,
                    partition=source.partition,
                    headers=[*due_header(retry.due_ms), *origin_headers(source.first_read())],
                )
        except EmitRefusedError as exc:
            reason = f"retry refused by the broker ({exc}) after {failure.error_class}"
            return await self._dead(failed, ns, source, reason=reason, error_class="EmitRefused")
        await self.attempts.record(_count_key(env), decision.attempt)  # once the retry is safe
        return Outcome.RETRY

    async def _dead(
        self,
        env: Envelope,
        ns: NamespaceConfig,
        source: Source,
        *,
        reason: str,
        error_class: str,
    ) -> Outcome:
        """Dead-letter ``env`` (as it should be kept: its attempts and history) and forget its
        count. The caller passes its key's turn (``_handle`` does, for a DEAD outcome).

        An entry the broker refuses (too large even with a bounded history: a record written to
        the log by someone else than the API) goes without the record: reason and source
        coordinates only, the record stays where it was read."""
        now = self.clock.now_ms()
        behind = self._behind(ns, env)
        value: bytes | None = encode_envelope(env)
        for last_resort in (False, True):
            try:
                await self.emitter.emit(
                    ns.topics.dlq,
                    value,
                    key=env.id.encode(),
                    partition=source.partition,
                    headers=entry_headers(
                        namespace=ns.name,
                        reason=reason,
                        error_class=error_class,
                        source=source.coordinates(),
                        attempts=env.attempt,
                        dead_at_ms=now,
                        behind=behind,
                        key=env.key,  # without the record, it still names the key it holds
                    )
                    + origin_headers(source.first_read()),
                )
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
        await self.attempts.forget(_count_key(env))
        return Outcome.DEAD

    async def _wait(
        self,
        value: bytes | None,
        key: bytes | None,
        due_ms: int,
        dest_topic: str,
        dest_partition: int,
        now: int,
        *,
        origin: str | None = None,
    ) -> None:
        """Hand a record to the delay tiers, addressed to come back to ``dest_topic``; ``origin``:
        where it was first read (``wal-origin``, carried by every copy)."""
        stop = next_stop(due_ms, now, self.tiers)
        if isinstance(stop, Deliver):  # due after all: straight to its destination
            await self.emitter.emit(
                dest_topic,
                value,
                key=key,
                partition=dest_partition,
                headers=origin_headers(origin) or None,
            )
            return
        await self.emitter.emit(
            delay_topic(self.app_id, tier_of(stop)),
            value,
            key=key,
            partition=dest_partition % self.delay_partitions,
            headers=[*delay_headers(due_ms, dest_topic, dest_partition), *origin_headers(origin)],
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
            origin=source.first_read(),
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
        now = self.clock.now_ms()
        if ns is None:
            # No DLQ to own it (yet): keep it, and look again once the namespace may be known.
            logger.error(
                "cannot dead-letter %s (no namespace), parked: %s", source.coordinates(), reason
            )
            try:
                await self._wait(
                    value,
                    key,
                    now + UNKNOWN_NAMESPACE_RECHECK_MS,
                    source.topic,
                    source.partition,
                    now,
                    origin=source.first_read(),
                )
            except EmitRefusedError as exc:
                logger.critical(
                    "%s not parked (%s): it stays at its source", source.coordinates(), exc
                )
            return Outcome.PARKED
        record_id = f"poison-{source.topic}-{source.partition}-{source.offset}"
        for last_resort in (False, True):
            try:
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
                        dead_at_ms=now,
                    )
                    + origin_headers(source.first_read()),
                )
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

    async def _settle_dead(self, value: bytes | None, key: bytes | None, source: Source) -> None:
        """After the catch-all dead-lettered a record as it was: forget its count and pass its
        key's turn, as every way to the DLQ does (else a redrive is a "duplicate" and the key
        waits forever)."""
        try:
            env = decode_envelope(value)
        except PoisonRecordError:
            return
        ns = self._namespace(self.registry.namespace_of(source.topic), env.namespace)
        if ns is None:
            return
        try:
            await self.attempts.forget(_count_key(env))
            await self._pass_turn(ns, env, key, source, Outcome.DEAD)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("dead record %s at %s not settled", env.id, source.coordinates())


def _count_key(env: Envelope) -> str:
    """The attempts table's key for ``env``: one count per redrive of a record."""
    return env.id if not env.redrive else f"{env.id}~r{env.redrive}"
