"""Per-key ordering as a gate the deliverer consults before and after an attempt.

A namespace with ``ordering = "key"`` delivers a key's records one at a time, in log order. The
deliverer opens a record's ``Turn`` (the key's state, read once for the whole record) and asks:

* ``admit`` before the attempt: go, or wait parked behind the key's head (a reference, acked at
  once); past ``max_parked`` behind one key the record is dead-lettered (``Overflow``: the
  caller writes the entry, ``overflowed`` notes it in the head so a re-read does not do it twice);
* ``hold`` before a copy of the record is sent to wait (retry, delay, breaker deferral): its key
  waits on it, acknowledged first (a crash or a quick retry can then neither let a later record
  pass it nor block the key behind a record already delivered); a stale copy read again
  re-asserts that block;
* ``after(outcome)``: delivered or dead-lettered, the record hands its key to the next parked
  record with a release marker, whose handler delivers up to ``drain_max`` parked records in
  turn (``Drain``) before writing the next marker.

Release and settle markers are read back here (``on_marker``): a stale one is dropped, a settle
ends a head held in the DLQ, a release names the record to deliver next. The deliver and retry
agents run side by side, so a key's records take a lock per (namespace, key) while handled
(``locked``): the transitions above are never interleaved. The decisions are
``walstream.core.ordering``'s (and ``core.outbox.markers.marker_step`` for a marker read back);
the table is ``walstream.agents.ordering``'s (``KeyOrder``), the locks
``walstream.agents.key_locks``'s.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from walstream.agents.key_locks import KeyLocks
from walstream.agents.ordering import KeyOrder
from walstream.agents.outcomes import Emitter, LogReading, Outcome, Source, send
from walstream.clock import Clock
from walstream.core import outbox
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
from walstream.core.outbox.markers import Settle, decode_marker, marker_step
from walstream.errors import NamespaceNotFoundError, PoisonRecordError
from walstream.kafka.log_reader import LoggedRecord
from walstream.namespaces.config import NamespaceConfig, Ordering
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope

__all__ = [
    "BEHIND_MAX",
    "DRAIN_MAX",
    "Drain",
    "MarkerDone",
    "OrderingGate",
    "Release",
    "Turn",
]

logger = logging.getLogger(__name__)

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
#: What an outcome does to its key's turn: passed on (dead-lettered: True), or nothing (absent).
_PASSES = {Outcome.DELIVERED: False, Outcome.DEAD: True}


@dataclass(slots=True)
class Drain:
    """A release marker's handler at work: who it was for, and the next record it hands on."""

    via: str
    budget: int
    next: RecordRef | None = None


@dataclass(slots=True)
class Turn:
    """One record's turn at its key: the key's head, read once when the turn opens and kept as
    the gate writes it. ``order_key`` None: the record is not ordered (every step a no-op)."""

    ns: NamespaceConfig
    order_key: str | None
    head: KeyHead | None = None


@dataclass(frozen=True, slots=True)
class MarkerDone:
    """A marker handled in full (stale, dropped, or a settle)."""

    outcome: Outcome
    namespace: str


@dataclass(frozen=True, slots=True)
class Release:
    """A release marker to follow: deliver ``ref`` (then the records ``drain`` hands on)."""

    ns: NamespaceConfig
    order_key: str
    key: bytes
    ref: RecordRef
    drain: Drain
    #: times ``ref`` could not be read back yet (the marker backs off)
    tries: int


class OrderingGate:
    """The ordering table, the per-key locks and the markers, behind admit / hold / after."""

    def __init__(
        self,
        *,
        registry: NamespaceRegistry,
        order: KeyOrder,
        emitter: Emitter,
        clock: Clock,
        reader: LogReading | None = None,
        drain_max: int = 0,
    ) -> None:
        self.registry = registry
        #: reads a parked record back by its reference
        self.reader = reader
        self.order = order
        self.emitter = emitter
        self.clock = clock
        #: records a release marker's handler delivers inline (0: one marker per record)
        self.drain_max = drain_max
        #: ordering keys being handled (one record at a time each, across both agents)
        self.locks = KeyLocks(registry, order)

    def locked(
        self, key: bytes | None, source: Source, env: Envelope | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """The lock a record of ``source`` (``env``, if it is one) takes while handled
        (``KeyLocks.locked``: by its envelope's ordering key, else its record key)."""
        return self.locks.locked(key, source, env)

    # -- one record: open, admit, hold, after ----------------------------------------------

    async def open(self, ns: NamespaceConfig, env: Envelope) -> Turn:
        """The record's turn. A namespace switched from ``key`` to ``none`` keeps ordering the
        keys still blocked until they drain: their parked records must still be released."""
        order_key = None
        if env.key is not None and (
            ns.ordering is Ordering.KEY or self.order.blocked(ns.name, env.key)
        ):
            order_key = env.key
        return await self._open(ns, order_key)

    async def _open(self, ns: NamespaceConfig, order_key: str | None) -> Turn:
        head = None if order_key is None else await self.order.load(ns.name, order_key)
        return Turn(ns, order_key, head)

    async def admit(self, turn: Turn, env: Envelope, source: Source) -> Outcome | Overflow | None:
        """None: the record goes now. ``WAITING``: parked behind its key's head (or parked
        already, read again). ``Overflow``: ``max_parked`` wait there already: the caller
        dead-letters it (``overflow_reason``), then calls ``overflowed``."""
        if turn.order_key is None:
            return None
        ref = RecordRef(env.id, source.topic, source.partition, source.offset)
        verdict = admit(turn.head, ref, max_parked=self.order.max_parked)
        if isinstance(verdict, Go):
            return None
        if isinstance(verdict, ParkAt):
            await self.order.park(turn.ns.name, turn.order_key, verdict, ref)
            turn.head = verdict.head
            return Outcome.WAITING
        if isinstance(verdict, AlreadyParked) or turn.head is None:
            return Outcome.WAITING
        return verdict

    def overflow_reason(self, turn: Turn) -> str:
        """The DLQ reason of a record past ``max_parked`` (it names the head to wait for)."""
        head = turn.head
        assert head is not None  # noqa: S101 - an overflow has a head
        return (
            f"ordering: key {turn.order_key!r} has {head.parked} records waiting behind "
            f"{head.head} (at most {self.order.max_parked}, "
            f"WALSTREAM_ORDERING_MAX_PARKED_PER_KEY): not parked; redrive it once {head.head} "
            f"is delivered or discarded"
        )

    async def overflowed(self, turn: Turn, env: Envelope, source: Source) -> None:
        """The overflowing record is dead-lettered: noted in the head, read again (it may have
        moved meanwhile, as for a record whose key bytes differ from its lock's), so a copy
        read again is not dead-lettered twice."""
        if turn.order_key is None or turn.head is None:
            return
        ref = RecordRef(env.id, source.topic, source.partition, source.offset)
        current = await self.order.load(turn.ns.name, turn.order_key)
        again = admit(current, ref, max_parked=turn.head.parked)
        if isinstance(again, Overflow):
            await self.order.save(turn.ns.name, turn.order_key, again.head)
            turn.head = again.head

    async def hold(self, turn: Turn, record_id: str) -> None:
        """A copy of ``record_id`` is about to be sent to wait (retry, delay, breaker deferral):
        its key waits on it from now, acknowledged before the copy goes.

        Written after it, a crash in between let the key's later records pass it, and a quick
        retry could be delivered before the write and then leave its key blocked behind a
        record already delivered. A stale copy read again re-asserts the block the same way."""
        if turn.order_key is None:
            return
        blocked = hold(turn.head, record_id, self.clock.now_ms())
        if blocked is not turn.head:
            await self.order.save(turn.ns.name, turn.order_key, blocked, durable=True)
            turn.head = blocked

    async def after(
        self,
        turn: Turn,
        record_id: str,
        outcome: Outcome,
        key: bytes | None,
        partition: int,
        *,
        drain: Drain | None = None,
    ) -> None:
        """What ``outcome`` means for the key: delivered or dead-lettered, it goes on to the next
        record. Waiting in retry or delay changes nothing here: ``hold`` blocked the key before
        the record's copy was sent (now, a quick retry may be delivered already)."""
        dead = _PASSES.get(outcome)
        if turn.order_key is None or dead is None:
            return
        await self._hand_on(turn, key, partition, record_id, dead=dead, drain=drain)

    def behind(self, turn: Turn, record_id: str) -> tuple[str, ...]:
        """Ids of the records waiting behind ``record_id`` (its DLQ entry names them)."""
        if turn.order_key is None:
            return ()
        return self.order.behind(turn.ns.name, turn.order_key, record_id, BEHIND_MAX)

    async def settle(
        self,
        ns: NamespaceConfig,
        order_key: str,
        record_id: str,
        key: bytes | None,
        partition: int,
        *,
        drain: Drain | None = None,
    ) -> None:
        """``record_id`` (read back for a marker: gone, or dead-lettered as it was) is settled."""
        turn = await self._open(ns, order_key)
        await self._hand_on(turn, key, partition, record_id, dead=False, drain=drain)

    async def _hand_on(
        self,
        turn: Turn,
        key: bytes | None,
        partition: int,
        record_id: str,
        *,
        dead: bool,
        drain: Drain | None = None,
    ) -> None:
        """The record is settled (or dead-lettered): the next parked record heads the key.

        Its release marker is acknowledged before the table names it: a crash in between leaves
        the old head in the table, whose source record is read again. Inside a release marker's
        handler (``drain``, budget left) no marker is written: the head record names that marker
        (``via``) and where the new head is on the log, and the handler delivers it next; the
        marker read again after a crash resumes there."""
        ns, order_key, head = turn.ns, turn.order_key, turn.head
        assert order_key is not None  # noqa: S101 - only an ordered record hands on
        if key is None or key.decode(errors="replace") != order_key:
            # Its record key differs from its envelope's: the deliverer locks it by the latter,
            # but a caller that did not may hand on from a moved head. Read it again.
            head = turn.head = await self.order.load(ns.name, order_key)
        now = self.clock.now_ms()
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
            await self._save(turn, step)
            return
        if isinstance(step, Free) or head is None or ref is None:
            await self._save(turn, None)
            return
        if drain is not None and drain.budget > 0:
            drain.budget -= 1
            await self._save(turn, hand_to(head, step.seq, ref, now, via=drain.via))
            await self.order.drop(ns.name, order_key, step.seq)
            drain.next = ref
            return
        # Keyed by the ordering key, as a settle marker is (not this record's key, which may
        # differ or be absent): read back, it opens that key's turn under that key's lock.
        marker = outbox.release_marker(ns.topics.retry, ns.name, ref, order_key.encode(), partition)
        await send(self.emitter, marker)
        # Checked again once the marker is out: another copy of the head may have been settled
        # meanwhile (one whose record key, and so its lock, differs from this one's).
        current = turn.head = await self.order.load(ns.name, order_key)
        if current is None or current.head != record_id or current.first > step.seq:
            return
        await self._save(turn, hand_to(current, step.seq, ref, now))
        await self.order.drop(ns.name, order_key, step.seq)

    async def _save(self, turn: Turn, head: KeyHead | None) -> None:
        assert turn.order_key is not None  # noqa: S101 - only an ordered record writes
        await self.order.save(turn.ns.name, turn.order_key, head)
        turn.head = head

    # -- markers ----------------------------------------------------------------------------

    async def on_marker(
        self, kind: bytes, value: bytes | None, key: bytes | None, source: Source
    ) -> MarkerDone | Release:
        """An ordering marker: stale or unreadable (dropped), a settle (the held head ends), or
        a release to follow (the record it names, or the one its handler was handing on when it
        stopped)."""
        try:
            marker = decode_marker(kind, value)
        except PoisonRecordError as exc:
            logger.error("ordering marker at %s dropped: %s", source.coordinates(), exc.reason)
            return MarkerDone(Outcome.STALE, "-")
        ns = self._namespace(marker.namespace)
        if ns is None or key is None:
            return MarkerDone(Outcome.STALE, marker.namespace)
        turn = await self._open(ns, key.decode())
        step = marker_step(marker, turn.head)
        if isinstance(step, Settle):
            await self._hand_on(turn, key, source.partition, marker.record_id, dead=False)
            return MarkerDone(Outcome.DELIVERED, ns.name)
        if step is None:  # handled already (a marker read again), or redriven (live)
            return MarkerDone(Outcome.STALE, ns.name)
        ref, tries = step.ref, step.tries
        if ref is None or self.reader is None:
            logger.error("release marker at %s cannot be followed", source.coordinates())
            return MarkerDone(Outcome.STALE, ns.name)
        drain = Drain(via=marker.record_id, budget=self.drain_max)
        return Release(ns, key.decode(), key, ref, drain, tries)

    async def read(self, ref: RecordRef) -> LoggedRecord:
        """The parked record ``ref`` read back from the log (raises as the reader does)."""
        assert self.reader is not None  # noqa: S101 - a Release is made only with a reader
        return await self.reader.read(ref.topic, ref.partition, ref.offset)

    async def read_later(
        self, release: Release, ref: RecordRef, source: Source, tries: int, exc: Exception
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
        marker = outbox.release_marker(
            source.topic,
            release.ns.name,
            ref,
            release.key,
            source.partition,
            tries=tries,
            due_ms=self.clock.now_ms() + delay,
        )
        await send(self.emitter, marker)

    def _namespace(self, name: str) -> NamespaceConfig | None:
        try:
            return self.registry.get(name)
        except NamespaceNotFoundError:
            return None
