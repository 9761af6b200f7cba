"""The mutation agents (issue 18): operations into the ``mutations`` table, markers into commits.

The design is ``walstream.core.mutations``' docstring; the decisions are its functions. Here:

* ``MutationStage.handle_op`` (agent ``mutation_ops`` over every enabled namespace's
  ``wal.<ns>.mutations``): decodes a chunk, ``commit.on_chunk``; a stored chunk's row and the
  new state are written (a transaction's first record first sends its deadline wake).
* ``MutationStage.handle_marker`` (agent ``mutation_commit`` over ``wal.<ns>.markers``): a
  ``Forget`` drops its tombstone (``commit.on_forget``); a marker goes through
  ``commit.on_marker``: ``Apply`` applies the operations from the first unapplied seq to the kv
  target in batches (``deliver_many``: one database transaction each), the progress written to
  the table (acked by the broker) after each; a failure goes through ``commit.after_failure``.
  Once all are applied (``commit.committed``): the ``Forget`` is sent, the tombstone written, the
  chunk rows and the state deleted.
* Wakes and ``Forget`` records wait in the delay tiers (``outbox.wait``) to come back to the
  markers topic, on the partition they were read from. DLQ entries: a transaction's (its marker,
  ``txn.<id>``) or a single bad record's (its own bytes), header ``wal-mutation``.
* ``MutationUpkeep`` (``walstream.agents.mutation_upkeep``): the open-transaction index, the
  gauges, the status read, and the rows of namespaces that left (deleted, or their mutations
  block removed) dropped in one pass over this worker's table partitions, at the registry change
  and after each table recovery (``walstream.worker.Delivery``): the worker stops reading their
  markers topics, so the wakes and ``Forget`` records that would drop them never come.

Order of writes: what another record must find (a wake, a ``Forget``, a DLQ entry) is sent
before the state naming it is written, and the source record is acked after both; a crash in
between repeats the send, which the decisions recognise (a superseded wake is ignored, a second
``Forget`` names another commit time). A transaction's records are handled one at a time, across
both agents (a lock per transaction).

A record is never acked and dropped while it cannot be handled yet: one of a namespace that is
unavailable (its latest control event unreadable), or whose handling failed on the broker (a row,
a wake or the progress not written: ``TRANSIENT``), is parked: sent back through the delay tiers
to its own topic and partition, due in ``PARK_MS``, as a record read again after a crash (which
the decisions take: the marker being handled still drives). Only when parking fails too does the
handler raise: the record is then not acked (the agent loop) and is read again after a restart.
Any other error is a bug or a bad record: logged and the record dead-lettered as it is.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from walstream.agents.failures import retry_policy
from walstream.agents.key_locks import KeyTurns
from walstream.agents.mutation_out import TRANSIENT, MutationOut
from walstream.agents.mutation_rows import OpenIndex, Rows, TxnRows
from walstream.agents.mutation_upkeep import MutationUpkeep
from walstream.agents.outcomes import Emitter, Source
from walstream.clock import Clock
from walstream.core.mutations import (
    AlreadyCommitted,
    Apply,
    CommitPolicy,
    Conflict,
    DeadLetter,
    Forget,
    Marker,
    Operation,
    Refused,
    Reject,
    Requeue,
    Stored,
    Tombstone,
    TxnState,
    after_failure,
    chunk_key,
    committed,
    decode_marker,
    decode_op_chunk,
    encode_marker,
    encode_tombstone,
    expired,
    expiry,
    kv_envelope,
    kv_target,
    on_chunk,
    on_complete,
    on_forget,
    on_marker,
    reassemble,
    tombstone_key,
)
from walstream.core.placement import key_partition
from walstream.core.retry import Failure
from walstream.errors import (
    NamespaceUnavailableError,
    PoisonRecordError,
    TargetError,
    WalError,
)
from walstream.metrics import WalMetrics
from walstream.namespaces.config import NamespaceConfig
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope
from walstream.settings import Settings
from walstream.targets.pool import TargetLeasing
from walstream.topology import mutation_topics

__all__ = ["BATCH_BYTES", "BATCH_OPS", "MutationStage"]

logger = logging.getLogger(__name__)

#: The most operations, and value bytes, applied in one database transaction.
BATCH_OPS = 200
BATCH_BYTES = 4 * 1024 * 1024

#: What parks a record: ``TRANSIENT``, and its namespace unavailable for now.
_PARKED: tuple[type[Exception], ...] = (NamespaceUnavailableError, *TRANSIENT)


class MutationStage:
    """The mutation agents' handlers over the table's rows (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: NamespaceRegistry,
        rows: Rows,
        pool: TargetLeasing,
        emitter: Emitter,
        clock: Clock,
        rand: Callable[[], float] = random.random,
        metrics: WalMetrics | None = None,
        batch_ops: int = BATCH_OPS,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.rows = rows
        self.pool = pool
        self.emitter = emitter
        self.clock = clock
        self.rand = rand
        self.metrics = metrics
        self.batch_ops = batch_ops
        self.batch_bytes = batch_bytes
        self.turns = KeyTurns()
        self.open = OpenIndex()
        self.txns = TxnRows(rows, self.open)
        self.out = MutationOut(
            settings=settings, registry=registry, emitter=emitter, clock=clock, metrics=metrics
        )
        #: the table's upkeep, as the worker and the status page call it
        self.upkeep = MutationUpkeep(
            rows=rows, turns=self.turns, open=self.open, registry=registry, clock=clock,
            metrics=metrics,
        )  # fmt: skip
        self.reindex = self.upkeep.reindex
        self.status = self.upkeep.status
        self.report = self.upkeep.report
        self.namespaces_changed = self.upkeep.namespaces_changed
        self.purge_gone = self.upkeep.purge_gone

    # -- the agents' entry points: never raise ------------------------------------------------

    async def handle_op(
        self, value: bytes | None, key: bytes | None, source: Source, headers: Any = None
    ) -> None:
        """An operation's chunk read from ``source`` (a namespace's mutations topic; its
        headers are not read)."""
        try:
            await self._op(value, key, source)
        except _PARKED as exc:  # not now: parked
            await self.out.park(value, key, source, "op", exc)
        except Exception as exc:  # noqa: BLE001 - a handler never raises: the record goes on
            await self.out.unexpected(value, key, source, "op", exc)

    async def handle_marker(
        self, value: bytes | None, key: bytes | None, source: Source, headers: Any = None
    ) -> None:
        """A marker or a forget record read from ``source`` (a namespace's markers topic; its
        headers are not read: a hand-over's due time is the agent loop's)."""
        try:
            await self._marker(value, key, source)
        except _PARKED as exc:  # not now: parked
            await self.out.park(value, key, source, "marker", exc)
        except Exception as exc:  # noqa: BLE001 - a handler never raises: the record goes on
            await self.out.unexpected(value, key, source, "marker", exc)

    # -- operations ---------------------------------------------------------------------------

    async def _op(self, value: bytes | None, key: bytes | None, source: Source) -> None:
        try:
            chunk = decode_op_chunk(value)
            ns, _ = self._placed(chunk.namespace, chunk.txn_id, key, source, "mutations")
        except PoisonRecordError as exc:
            await self.out.dead_record(value, source, "op", "mutation_poison", str(exc))
            return
        if ns is None:
            return  # nothing is kept of a namespace taking no mutations
        name, txn = ns.name, chunk.txn_id
        async with self.turns.hold((name, txn)):
            state, tomb = await self.txns.rows_of(name, txn)
            new, outcome, deadline = on_chunk(
                state, tomb, chunk, self._policy(ns), now_ms=self.clock.now_ms()
            )
            if isinstance(outcome, Stored):
                assert new is not None  # noqa: S101 - a stored chunk has a state
                if deadline is not None:
                    await self.out.wake(ns, new, deadline, source)
                elif state is not None:
                    new, now = on_complete(state, new)  # its marker waits: wake it now
                    if now is not None:
                        await self.out.wake(ns, new, now, source)
                await self.rows.put(chunk_key(name, txn, chunk.seq, chunk.chunk), value)
                await self.txns.put_state(new)
            elif isinstance(outcome, (Conflict, Refused)):
                error_class = (
                    "mutation_conflict" if isinstance(outcome, Conflict) else "mutation_refused"
                )
                await self.out.dead_record(value, source, "op", error_class, outcome.reason, ns)

    # -- markers ------------------------------------------------------------------------------

    async def _marker(self, value: bytes | None, key: bytes | None, source: Source) -> None:
        try:
            marker = decode_marker(value)
            ns, gone = self._placed(marker.namespace, marker.txn_id, key, source, "markers")
        except PoisonRecordError as exc:
            await self.out.dead_record(value, source, "marker", "mutation_poison", str(exc))
            return
        name, txn = marker.namespace, marker.txn_id
        async with self.turns.hold((name, txn)):
            if ns is None:
                if gone:  # its wakes and Forgets still come: what it left goes with them
                    await self.txns.purge(name, txn)
                return
            state, tomb = await self.txns.rows_of(name, txn)
            if isinstance(marker, Forget):
                if on_forget(tomb, marker):
                    await self.rows.put(tombstone_key(name, txn), None)
                return
            await self._drive(ns, state, tomb, marker, value, source)

    async def _drive(
        self,
        ns: NamespaceConfig,
        state: TxnState | None,
        tomb: Tombstone | None,
        marker: Marker,
        value: bytes | None,
        source: Source,
    ) -> None:
        policy = self._policy(ns)
        if state is not None and expired(state, marker):  # dead-lettered, never redriven
            logger.info("mutation %s/%s: dead-lettered rows expired", ns.name, marker.txn_id)
            await self.txns.clear(state)
            return
        new, decision = on_marker(
            state, tomb, marker, policy, now_ms=self.clock.now_ms(), rand=self.rand()
        )
        if isinstance(decision, Reject):
            await self.out.dead_record(
                value, source, "marker", "mutation_rejected", decision.reason, ns
            )
            return
        if isinstance(decision, AlreadyCommitted) or new is None:
            return
        if isinstance(decision, Requeue):
            await self.out.wake(ns, new, decision, source)
        elif isinstance(decision, DeadLetter):
            new = await self._dead(ns, new, decision, "mutation_incomplete", policy, source)
        if new is not state:
            await self.txns.put_state(new)
        if isinstance(decision, Apply):
            await self._apply(ns, new, policy, source)

    async def _apply(
        self, ns: NamespaceConfig, state: TxnState, policy: CommitPolicy, source: Source
    ) -> None:
        """Apply from the first unapplied seq in batches, the progress written after each;
        commit once all are applied (see the module docstring)."""
        while not state.done():
            batch, broken = self._batch(state)
            failure = None
            if batch:
                try:
                    await self._deliver(ns, state, batch)
                except Exception as exc:  # noqa: BLE001 - every failure goes to after_failure
                    failure = _failure(exc)
                else:
                    for seq, _ in batch:
                        state = state.applied(seq)
                    await self.txns.put_state(state, durable=True)
                    if self.metrics is not None:
                        self.metrics.mutation_operations_applied.labels(ns.name).inc(len(batch))
            if failure is None and broken is not None and state.next_seq == broken[0]:
                failure = Failure(
                    error_class="mutation_unreadable", message=broken[1], retriable=False
                )
            if failure is not None:
                now = self.clock.now_ms()
                failed, decision = after_failure(
                    state, failure, policy, now_ms=now, rand=self.rand()
                )
                if isinstance(decision, Requeue):
                    await self.out.wake(ns, failed, decision, source)
                else:
                    failed = await self._dead(
                        ns, failed, decision, "mutation_apply_failed", policy, source
                    )
                await self.txns.put_state(failed)
                return
        await self._commit(ns, state, policy, source)

    async def _dead(
        self,
        ns: NamespaceConfig,
        state: TxnState,
        dead: DeadLetter,
        error_class: str,
        policy: CommitPolicy,
        source: Source,
    ) -> TxnState:
        """The transaction's DLQ entry and its expiry wake sent; the state to write."""
        await self.out.dead_txn(ns, state, dead, error_class, source)
        state, expire = expiry(state, policy.limits)
        await self.out.wake(ns, state, expire, source)
        return state

    def _batch(self, state: TxnState) -> tuple[list[tuple[int, Operation]], tuple[int, str] | None]:
        """The operations to apply next, in seq order, within the batch bounds; and the seq whose
        chunks do not reassemble (with why), which ends the batch before it."""
        assert state.count is not None  # noqa: S101 - only a complete state is applied
        batch: list[tuple[int, Operation]] = []
        size = 0
        for seq in range(state.next_seq, state.count):
            if len(batch) >= self.batch_ops or (batch and size >= self.batch_bytes):
                break
            try:
                op = self._operation(state, seq)
            except PoisonRecordError as exc:
                return batch, (seq, str(exc))
            batch.append((seq, op))
            size += op.weight
        return batch, None

    def _operation(self, state: TxnState, seq: int) -> Operation:
        slot = state.slots[seq]
        chunks = []
        for index in range(slot.chunks):
            raw = self.rows.get(chunk_key(state.namespace, state.txn_id, seq, index))
            if raw is None:
                raise PoisonRecordError(f"seq {seq}: chunk {index} row missing")
            chunks.append(decode_op_chunk(raw))
        return reassemble(chunks)

    async def _deliver(
        self, ns: NamespaceConfig, state: TxnState, batch: Sequence[tuple[int, Operation]]
    ) -> None:
        now = self.clock.now_ms()
        envelopes: list[Envelope] = []
        target: Any = None
        for seq, op in batch:
            target, _ = await self.pool.target(kv_target(op), ns)  # the namespace's policy
            envelopes.append(kv_envelope(state, seq, op, now_ms=now))
        many = getattr(target, "deliver_many", None)
        if many is not None:
            await many(envelopes)
        else:
            for env in envelopes:
                await target.deliver(env)

    async def _commit(
        self, ns: NamespaceConfig, state: TxnState, policy: CommitPolicy, source: Source
    ) -> None:
        now = self.clock.now_ms()
        tomb, forget, due = committed(state, policy.limits, now_ms=now)
        await self.out.send_waiting(ns, encode_marker(forget), state.txn_id, due, source)
        name, txn = state.namespace, state.txn_id
        await self.rows.put(tombstone_key(name, txn), encode_tombstone(tomb))
        await self.txns.clear(state, durable=True)
        if self.metrics is not None:
            self.metrics.mutation_commits.labels(name).inc()

    # -- records sent -------------------------------------------------------------------------

    def _policy(self, ns: NamespaceConfig) -> CommitPolicy:
        return CommitPolicy(limits=self.settings.mutation_limits(ns), retry=retry_policy(ns))

    def _placed(
        self, namespace: str, txn_id: str, key: bytes | None, source: Source, role: str
    ) -> tuple[NamespaceConfig | None, bool]:
        """The record's namespace, once its topic, key and partition are its own (else poison:
        its rows would sit on another changelog partition than its transaction's); None and
        True when the namespace is gone (deleted or taking no mutations).

        Raises:
            NamespaceUnavailableError: its config is unreadable for now (the record is parked).
        """
        topics = mutation_topics(namespace)
        if source.topic != getattr(topics, role):
            raise PoisonRecordError(f"mutation record of {namespace} read on {source.topic}")
        if key is None or key != txn_id.encode():
            raise PoisonRecordError(f"mutation record of txn {txn_id} keyed {key!r}")
        home = key_partition(key, self.settings.default_partitions)
        if source.partition != home:
            raise PoisonRecordError(
                f"mutation record of txn {txn_id} read on partition {source.partition}: its key "
                f"is partition {home}'s (written with another partitioner?)"
            )
        try:
            ns = self.registry.get(namespace)
        except NamespaceUnavailableError:
            raise
        except WalError as exc:
            logger.info("mutation record at %s: %s", source.coordinates(), exc)
            return None, True
        return (ns, False) if ns.mutations is not None else (None, True)


def _failure(exc: Exception) -> Failure:
    """A failed apply as ``commit.after_failure`` takes it."""
    if isinstance(exc, TargetError):
        return Failure(error_class=exc.error_class, message=str(exc), retriable=exc.retriable)
    return Failure(error_class=type(exc).__name__, message=str(exc), retriable=True)
