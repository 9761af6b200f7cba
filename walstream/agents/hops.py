"""The delay stage's sends: hops batched per tier partition, hand-overs and dead letters, each
sent again until the broker takes it. A record's offset stays pending in its partition's ledger
until its send is acknowledged, so the stage never commits past a record not yet safely on.

* Hops into a tier partition go in record batches (one future per batch, not per record: a crowd
  leaving a tier together costs a fraction of sending each), on the hop producer; hand-overs and
  dead letters go one by one on the due producer, so records due now never queue behind hops.
* A send that fails is sent again after a backoff (``resend_delay_ms``), for as long as the
  failure is transient. A hand-over its destination refuses as nonexistent for
  ``delay_dest_grace_ms`` (a deleted namespace) is dead-lettered instead; a dead letter its DLQ
  refuses as nonexistent goes to the deployment's poison topic.
* What the records are (topic, partition, headers) the outbox says (``walstream.core.outbox``);
  ``walstream.agents.outgoing`` holds them as sent (``Out``) and batched (``HopBatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from walstream.agents.outgoing import PERMANENT, HopBatch, Out
from walstream.clock import Clock
from walstream.core import outbox
from walstream.core.delay import (
    DEST_GONE_ERROR,
    DelayHeaders,
    GiveUp,
    after_send_failure,
    parse_delay_headers,
    resend_delay_ms,
)
from walstream.core.offsets import PartitionLedger
from walstream.core.origin import origin_of
from walstream.errors import NamespaceNotFoundError, PoisonRecordError
from walstream.metrics import WalMetrics
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import decode_envelope

__all__ = ["HopSender"]

logger = logging.getLogger(__name__)


def _failed(done: asyncio.Future[Any]) -> bool:
    return done.cancelled() or done.exception() is not None


def _why(done: asyncio.Future[Any]) -> object:
    return "cancelled" if done.cancelled() else done.exception()


class HopSender:
    """Sends the delay stage's records and routes every failed send (never raises from a
    callback; ``send`` and ``flush`` raise a transient refusal for the caller's loop to back
    off, the record being sent again meanwhile).

    Every send keeps the ledger its offset was tracked in, through its resends: it acks only
    that ledger, and only while it is still its partition's (a partition revoked and assigned
    again gets a fresh ledger, which starts from the offset committed at the revoke; a send of
    the old one, and its resends, never touch it: the stage reads those records again). A
    resend never tracks its offset again: it is pending already, and tracking it would raise
    the ledger's highest offset handed over.
    """

    def __init__(
        self,
        parts: Mapping[TopicPartition, PartitionLedger],
        *,
        spawn: Callable[[Awaitable[None]], object],
        stopping: Callable[[], bool],
        clock: Clock,
        dest_grace_ms: int,
        poison_topic: str,
        registry: NamespaceRegistry | None = None,
        metrics: WalMetrics | None = None,
    ) -> None:
        #: The stage's assigned partitions: a send's offset is pending in its partition's ledger.
        self.parts = parts
        self.spawn = spawn
        self.stopping = stopping
        self.clock = clock
        self.dest_grace_ms = dest_grace_ms
        self.poison_topic = poison_topic
        #: Where a dead letter goes: the DLQ of the namespace a record names, when known.
        self.registry = registry
        self.metrics = metrics
        #: The hop producer (batches) and the due producer (forwards and dead letters).
        self.producer: Any = None
        self.due_producer: Any = None
        self.in_flight = 0
        self._hops: dict[tuple[str, int], HopBatch] = {}
        #: (topic, partition) -> when a forward there first failed permanently; cleared when
        #: one there succeeds.
        self._gone: dict[tuple[str, int | None], int] = {}

    # -- sending --------------------------------------------------------------------------------

    async def send(self, part: PartitionLedger, out: Out) -> None:
        """Produce one record: a hop (``timestamp_ms`` set: its write time into the tier) on the
        hop producer, or a forward or dead letter on the due producer.

        Raises:
            Exception: the producer refused it for a transient reason (the record is sent again
            shortly; the caller's loop backs off meanwhile).
        """
        part.track(out.record.offset)
        await self._send(part, out)

    async def _send(self, part: PartitionLedger, out: Out) -> None:
        """``send`` of a record already pending in ``part`` (a resend: never tracked again)."""
        self.in_flight += 1
        producer = self.producer if out.hop else self.due_producer
        if not out.hop:
            parts = producer.client.cluster.partitions_for_topic(out.topic)
            if parts is None:
                # aiokafka waits up to request_timeout_ms for an unknown topic's metadata: not
                # here, where every record coming due would wait behind it.
                self.spawn(self._send_unknown(producer, part, out))
                return
            if out.dead_key is not None and out.partition not in parts:
                out = out._replace(partition=None)  # a DLQ with fewer partitions: any one
            elif out.partition is not None and out.partition not in parts:
                self.in_flight -= 1
                missing = f"{out.topic} has no partition {out.partition} ({len(parts)} partitions)"
                self._failed(part, out, UnknownTopicOrPartitionError(missing))
                return
        try:
            future = await self._enqueue(producer, out)
        except Exception as exc:
            self.in_flight -= 1
            # Pending, so never committed past; sent again shortly, while the loop backs off.
            self._failed(part, out, exc)
            if isinstance(exc, PERMANENT):
                return
            raise
        future.add_done_callback(lambda done: self._sent(done, part, out))

    async def _enqueue(self, producer: Any, out: Out) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await producer.send(
            out.topic,
            out.record.value,
            key=out.key,
            partition=out.partition,
            timestamp_ms=out.timestamp_ms,
            headers=out.headers,
        )
        return future

    async def _send_unknown(self, producer: Any, part: PartitionLedger, out: Out) -> None:
        try:
            future = await self._enqueue(producer, out)
        except Exception as exc:  # noqa: BLE001 - every failure is routed by _failed
            self.in_flight -= 1
            self._failed(part, out, exc)
            return
        future.add_done_callback(lambda done: self._sent(done, part, out))

    def gone_for_good(self, out: Out) -> GiveUp | None:
        """A forward to a destination already known to be missing past the grace: give up at
        once (not one more metadata wait); None: send it."""
        since = self._gone.get((out.topic, out.partition))
        if since is None:
            return None
        parts = self.due_producer.client.cluster.partitions_for_topic(out.topic)
        if parts is not None and (out.partition is None or out.partition in parts):
            return None
        decision = after_send_failure(
            permanent=True,
            tries=1,
            failing_since_ms=since,
            now_ms=self.clock.now_ms(),
            grace_ms=self.dest_grace_ms,
            error=f"{out.topic}[{out.partition}] does not exist",
        )
        return decision if isinstance(decision, GiveUp) else None

    async def add_hop(self, part: PartitionLedger, out: Out) -> None:
        """Queue a hop into a record batch for its tier partition."""
        part.track(out.record.offset)  # first: a failing flush below must not commit past it
        self.in_flight += 1
        key = (out.topic, out.partition or 0)
        hops = self._hops.get(key)
        if hops is None:
            hops = self._hops[key] = HopBatch(self.producer.create_batch())
        if not hops.add(part, out):
            try:
                await self.flush(key)
            except Exception as exc:
                # The full batch was refused: this hop, in no batch yet, is sent again with
                # its members (pending meanwhile, so never committed past).
                self.in_flight -= 1
                self._failed(part, out, exc)
                raise
            hops = self._hops[key] = HopBatch(self.producer.create_batch())
            if not hops.add(part, out):  # larger than a batch: on its own
                self.in_flight -= 1  # counted again by _send
                await self._send(part, out)

    async def flush(self, only: tuple[str, int] | None = None) -> None:
        """Hand the queued hop batches (or the one of ``only``) to the producer."""
        keys = [only] if only is not None else list(self._hops)
        for key in keys:
            hops = self._hops.pop(key, None)
            if hops is None or not hops.members:
                continue
            topic, partition = key
            try:
                future = await self.producer.send_batch(hops.batch, topic, partition=partition)
            except Exception as exc:
                self.in_flight -= len(hops.members)
                # Pending, so never committed past; sent again shortly, while the loop backs off.
                for part, out in hops.members:
                    self._failed(part, out, exc)
                raise
            future.add_done_callback(lambda done, hops=hops: self._hops_sent(done, hops))

    # -- acknowledgements and failures ----------------------------------------------------------

    def _hops_sent(self, done: asyncio.Future[Any], hops: HopBatch) -> None:
        self.in_flight -= len(hops.members)
        if _failed(done):
            if not self.stopping():
                _, first = hops.members[0]
                logger.warning("delay hops to %s[%d] failed (%s); resending",
                               first.topic, first.partition, _why(done))  # fmt: skip
                for part, out in hops.members:
                    self._failed(part, out, _why(done))
            return
        for part, out in hops.members:
            self._ack(part, out)

    def _sent(self, done: asyncio.Future[Any], part: PartitionLedger, out: Out) -> None:
        self.in_flight -= 1
        if _failed(done):
            if out.tp in self.parts and not self.stopping():
                logger.warning("delay send to %s failed (%s); resending", out.topic, _why(done))
                self._failed(part, out, _why(done))
            return  # revoked or stopping: the offset was not committed past; re-read later
        if not out.hop:
            self._gone.pop((out.topic, out.partition), None)
        self._ack(part, out)

    def _ack(self, part: PartitionLedger, out: Out) -> None:
        """``out`` is safely on: its offset leaves ``part``, if that is still its partition's
        ledger (else revoked since: whoever reads the partition now re-reads it)."""
        if self.parts.get(out.tp) is part:
            part.ack(out.record.offset)

    def _failed(self, part: PartitionLedger, out: Out, error: object) -> None:
        """Route a send that failed: again after a backoff, or (a forward its destination has
        refused as nonexistent for the grace period) a dead letter; a dead letter its DLQ
        refuses so goes to the poison topic. Its offset stays pending meanwhile in ``part``, the
        ledger it was tracked in (a stale one if its partition was revoked and assigned again
        since: the resend is then a duplicate, and no ledger of the new assignment moves)."""
        if out.tp not in self.parts or self.stopping():
            return  # revoked or stopping: not committed past; re-read later
        now = self.clock.now_ms()
        permanent = isinstance(error, PERMANENT)
        since = out.failing_since_ms if out.failing_since_ms is not None else now
        if permanent and not out.hop:
            since = min(since, self._gone.setdefault((out.topic, out.partition), now))
        out = out._replace(tries=out.tries + 1, failing_since_ms=since)
        if out.hop or (out.dead_key is not None and not permanent):
            # Into the stage's own tiers, or a DLQ that exists: for as long as it takes.
            self.spawn(self._resend(part, out, resend_delay_ms(out.tries)))
            return
        if out.dead_key is not None:
            if out.topic != self.poison_topic:
                logger.error("dead letter refused by %s (%s): to %s instead",
                             out.topic, error, self.poison_topic)  # fmt: skip
                poison = out._replace(
                    topic=self.poison_topic, partition=None, tries=0, failing_since_ms=None
                )
                self.spawn(self._resend(part, poison, 0))
            else:  # the deployment's own topic, made at start: a refusal cannot last
                self.spawn(self._resend(part, out, resend_delay_ms(out.tries)))
            return
        decision = after_send_failure(
            permanent=permanent,
            tries=out.tries,
            failing_since_ms=since,
            now_ms=now,
            grace_ms=self.dest_grace_ms,
            error=f"{out.topic}[{out.partition}]: {error!r}",
        )
        if isinstance(decision, GiveUp):
            dead = self.gave_up(out, decision.reason)
            self._note_dead(dead)
            self.spawn(self._resend(part, dead, 0))
        else:
            self.spawn(self._resend(part, out, decision.after_ms))

    async def _resend(self, part: PartitionLedger, out: Out, after_ms: int) -> None:
        await asyncio.sleep(after_ms / 1000)
        if out.tp not in self.parts or self.stopping():
            return  # revoked meanwhile (the new owner re-reads it), or stopping
        if out.failing_since_ms is not None and (out.topic, out.partition) in self._gone:
            # The destination was missing: let the metadata catch up before the next try.
            with contextlib.suppress(KafkaError):
                await self.due_producer.client.force_metadata_update()
        with contextlib.suppress(Exception):  # a failure is routed again by _send
            await self._send(part, out)  # pending in part already: not tracked again

    # -- dead letters -----------------------------------------------------------------------------

    def dead_out(
        self,
        tp: TopicPartition,
        record: Any,
        reason: str,
        error_class: str,
        headers: DelayHeaders | None,
    ) -> Out:
        """A DLQ entry of ``record`` as it was read: in the DLQ of the namespace its value names
        (or its destination belongs to) when the registry knows it, else in the poison topic."""
        namespace, attempts = "", 0
        record_id = outbox.poison_id(tp.topic, tp.partition, record.offset)
        try:
            env = decode_envelope(record.value)
        except PoisonRecordError:
            if headers is not None and self.registry is not None:
                namespace = self.registry.namespace_of(headers.dest_topic) or ""
        else:
            namespace, attempts, record_id = env.namespace, env.attempt, env.id
        topic = self.poison_topic
        if namespace and self.registry is not None:
            with contextlib.suppress(NamespaceNotFoundError):  # deleted: the poison topic
                topic = self.registry.get(namespace).topics.dlq
        entry = outbox.dlq_entry(
            record.value,
            dlq_topic=topic,
            # A DLQ has its log's partitions: the entry goes where the record would have been.
            partition=headers.dest_partition if headers is not None else tp.partition,
            record_id=record_id,
            namespace=namespace,
            reason=reason,
            error_class=error_class,
            source=f"{tp.topic}[{tp.partition}]@{record.offset}",
            attempts=attempts,
            dead_at_ms=self.clock.now_ms(),
            origin=origin_of(record.headers),
        )
        return Out.of(tp, record, entry, dead=True)

    def gave_up(self, out: Out, reason: str) -> Out:
        """The dead letter of a forward whose destination is gone."""
        headers = parse_delay_headers(out.record.headers or ())
        return self.dead_out(out.tp, out.record, reason, DEST_GONE_ERROR, headers)

    async def dead_letter(self, part: PartitionLedger, out: Out) -> None:
        """Send a dead letter; its record's offset is committed past once it is acknowledged."""
        self._note_dead(out)
        await self.send(part, out)

    def _note_dead(self, out: Out) -> None:
        fields = dict(out.headers or ())
        logger.error("delay record %s[%d]@%d dead-lettered to %s: %s", out.tp.topic,
                     out.tp.partition, out.record.offset, out.topic,
                     fields.get("wal-error", b"").decode())  # fmt: skip
        if self.metrics is not None:
            self.metrics.dlq_records_written.labels(
                fields.get("wal-namespace", b"").decode(),
                fields.get("wal-error-class", b"").decode(),
            ).inc()
            self.metrics.delay_hops.labels("dlq").inc()
