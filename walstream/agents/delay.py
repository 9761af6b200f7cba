"""Delay stage: hold records in the tier topics until they are (almost) due.

See walstream.core.delay for the tier design. This service is the tiers' reader: a consumer group
over every tier topic (``<app-id>-delay``), with its own producer.

* A tier partition's head leaves the tier at its write time + the tier's delay. Until then the
  partition is paused and its fetched records wait in a small buffer (one fetch at most), so
  memory does not grow with the backlog.
* A leaving record goes where ``next_stop`` says: a smaller tier, the timer heap (due within the
  smallest tier + its lead), or its destination (the namespace topic and partition it names).
* A record goes to its destination ``HANDOFF_LEAD_MS`` before it is due, with a ``wal-due``
  header: the way there overlaps the last stretch of waiting. The destination's agent holds it
  until its due time and the deliverer checks that time again, so nothing is delivered early.
* The timer topic's records go straight to the heap. The heap is bounded: at capacity, the
  stage stops taking records until some come due.
* Offsets are committed up to the first record whose forward is not yet acknowledged, so a crash
  re-reads, and re-forwards, at most what was in flight (at least once; never lost).
* Nothing is dropped. A record without valid delay headers, and a forward its destination keeps
  refusing as nonexistent for ``delay_dest_grace_ms`` (a deleted namespace), are dead-lettered:
  to the DLQ of the namespace the record's value names when the registry knows it, else to the
  deployment's poison topic (``topology.poison_topic``); the offset is committed past only once
  that entry is acknowledged. Transient send failures are retried for as long as they last.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from walstream.clock import Clock, SystemClock
from walstream.core.delay import (
    DEST_GONE_ERROR,
    HANDOFF_LEAD_MS,
    HEADERS_ERROR,
    TIERS_MS,
    DelayHeaders,
    Deliver,
    GiveUp,
    Timer,
    after_send_failure,
    due_header,
    next_stop,
    parse_delay_headers,
    resend_delay_ms,
    tier_of,
)
from walstream.core.dlq import entry_headers
from walstream.core.origin import carried_origin
from walstream.errors import NamespaceNotFoundError, PoisonRecordError
from walstream.kafka.admin import ensure_topics
from walstream.kafka.clients import stop_consumer
from walstream.metrics import WalMetrics
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import decode_envelope
from walstream.settings import Settings
from walstream.topology import delay_topic, delay_topic_specs, poison_topic, poison_topic_spec

__all__ = ["DelayStage"]

logger = logging.getLogger(__name__)

_COMMIT_EVERY_MS = 1_000
_ENDS_EVERY_MS = 5_000
_MAX_SLEEP_MS = 100
_MAX_IN_FLIGHT = 20_000
#: Records routed between two looks at the timers (and two chances for other tasks to run).
_YIELD_EVERY = 100
#: The cluster says the destination does not exist or will never take the record. (aiokafka
#: asserts a partition it does not know: ``assert partition in ... "Unrecognized partition"``.)
_PERMANENT = (
    UnknownTopicOrPartitionError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    AssertionError,
)


@dataclass
class _Partition:
    tier_ms: int
    buffer: deque[Any] = field(default_factory=deque)
    #: Offset after the last record taken out of the buffer.
    next_offset: int | None = None
    #: Offsets taken but not yet safely forwarded (producing, or in the timer heap).
    pending: set[int] = field(default_factory=set)
    wake_ms: int | None = None
    committed: int | None = None

    def safe_offset(self) -> int | None:
        return min(self.pending) if self.pending else self.next_offset


class _Out(NamedTuple):
    """One record the stage produces: a hop into a tier, a forward to its destination, or a
    dead letter (a DLQ entry of the record as it was read)."""

    tp: TopicPartition  #: where it was read (its offset stays pending until this is acked)
    record: Any
    topic: str
    partition: int | None  #: None: the producer picks by key (a dead letter only)
    headers: list[tuple[str, bytes]] | None
    #: a hop's write time into the tier; None for a forward or a dead letter
    timestamp_ms: int | None = None
    #: a dead letter's key (the record's id); None for a hop or a forward
    dead_key: bytes | None = None
    #: sends of it that failed so far, and since when its destination fails permanently
    tries: int = 0
    failing_since_ms: int | None = None

    @property
    def key(self) -> bytes | None:
        return self.dead_key if self.dead_key is not None else self.record.key

    @property
    def hop(self) -> bool:
        return self.timestamp_ms is not None


@dataclass
class _Hops:
    """A record batch of hops into one tier partition, and what it holds."""

    batch: Any
    members: list[_Out] = field(default_factory=list)

    def add(self, out: _Out) -> bool:
        """Append ``out``; False when the batch is full."""
        record = out.record
        appended = self.batch.append(
            key=record.key, value=record.value, timestamp=out.timestamp_ms, headers=out.headers
        )
        if appended is None:
            return False
        self.members.append(out)
        return True


def _failed(done: asyncio.Future[Any]) -> bool:
    return done.cancelled() or done.exception() is not None


def _why(done: asyncio.Future[Any]) -> object:
    return "cancelled" if done.cancelled() else done.exception()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, stage: DelayStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.stage._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.stage._on_assigned(set(assigned))


class DelayStage(mode.Service):
    """Reads the delay tiers and forwards each record when it is due."""

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str,
        clock: Clock | None = None,
        metrics: WalMetrics | None = None,
        tiers: tuple[int, ...] = TIERS_MS,
        handoff_lead_ms: int = HANDOFF_LEAD_MS,
        registry: NamespaceRegistry | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        #: Where a dead letter goes: the DLQ of the namespace a record names, when known.
        self.registry = registry
        self.poison_topic = poison_topic(settings.app_id)
        #: (topic, partition) -> when a forward there first failed permanently; cleared when
        #: one there succeeds.
        self._gone: dict[tuple[str, int | None], int] = {}
        self.handoff_lead_ms = handoff_lead_ms
        self.group_id = group_id
        self.clock = clock or SystemClock()
        self.metrics = metrics
        self.tiers = tiers
        self._tier_of_topic = {delay_topic(settings.app_id, t): t for t in (0, *tiers)}
        self._parts: dict[TopicPartition, _Partition] = {}
        self._paused: set[TopicPartition] = set()
        self._timers: list[tuple[int, int, TopicPartition, int, Any, DelayHeaders]] = []
        self._seq = 0
        self._in_flight = 0
        self._consumer: Any = None
        self._producer: Any = None
        self._due_producer: Any = None
        self._last_commit_ms = 0
        self._last_ends_ms = 0
        self._unread: dict[TopicPartition, int] = {}
        self._hops: dict[tuple[str, int], _Hops] = {}
        self.forwarded = 0

    async def on_start(self) -> None:
        servers = self.settings.bootstrap_list
        await ensure_topics(
            servers,
            [
                *delay_topic_specs(
                    self.settings.app_id,
                    (0, *self.tiers),
                    self.settings.default_partitions,
                    self.settings.delay_grace_ms,
                    self.settings.replication_factor,
                    min_insync_replicas=self.settings.min_insync_replicas,
                ),
                poison_topic_spec(
                    self.settings.app_id,
                    self.settings.default_partitions,
                    self.settings.replication_factor,
                    min_insync_replicas=self.settings.min_insync_replicas,
                ),
            ],
        )
        # Two producers: records due now must never queue behind a crowd of hops (a burst written
        # together leaves a tier together, thousands of records at once).
        self._producer = AIOKafkaProducer(
            bootstrap_servers=servers, acks="all", linger_ms=2, client_id=f"{self.group_id}-hops"
        )
        await self._producer.start()
        self._due_producer = AIOKafkaProducer(
            bootstrap_servers=servers, acks="all", linger_ms=0, client_id=f"{self.group_id}-due"
        )
        await self._due_producer.start()
        session_ms = int(self.settings.broker_session_timeout_s * 1000)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            group_id=self.group_id,
            client_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=256 * 1024,
            fetch_max_wait_ms=self.settings.consumer_fetch_max_wait_ms,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=int(self.settings.broker_heartbeat_interval_s * 1000),
            rebalance_timeout_ms=max(session_ms, 10_000),
        )
        await self._consumer.start()
        self._consumer.subscribe(sorted(self._tier_of_topic), listener=_Listener(self))

    async def on_stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._commit(consumer, force=True)
            await stop_consumer(consumer)
        for producer in (self._producer, self._due_producer):
            if producer is not None:
                await stop_consumer(producer)
        self._producer = self._due_producer = None

    # -- the loop -------------------------------------------------------------------------------

    @mode.Service.task
    async def _run(self) -> None:
        backoff = 0.1
        while not self.should_stop:
            consumer = self._consumer
            if consumer is None:
                await asyncio.sleep(0.05)
                continue
            try:
                await self._step(consumer)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                logger.warning("delay stage: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # the stage must outlive surprises: records wait safely in Kafka
                logger.exception("delay stage failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _step(self, consumer: Any) -> None:
        batches = await consumer.getmany(timeout_ms=self._sleep_ms(), max_records=5_000)
        for tp, records in batches.items():
            part = self._parts.get(tp)
            if part is not None:
                part.buffer.extend(records)
        now = self.clock.now_ms()
        await self._fire_timers(now)
        for tp, part in list(self._parts.items()):
            await self._drain(tp, part, now)
        await self._fire_timers(self.clock.now_ms())
        await self._flush_hops()
        self._flow(consumer)
        if now - self._last_commit_ms >= _COMMIT_EVERY_MS:
            await self._commit(consumer)
            if now - self._last_ends_ms >= _ENDS_EVERY_MS:
                self._last_ends_ms = now
                await self._refresh_ends(consumer)
            self._report()

    def _sleep_ms(self) -> int:
        now = self.clock.now_ms()
        wakes = [p.wake_ms for p in self._parts.values() if p.wake_ms is not None]
        if self._timers:
            wakes.append(self._timers[0][0] - self.handoff_lead_ms)
        if not wakes:
            return _MAX_SLEEP_MS
        return max(0, min(_MAX_SLEEP_MS, min(wakes) - now))

    def _flow(self, consumer: Any) -> None:
        """Fetch only for partitions with nothing buffered, and nothing at all when full."""
        full = len(self._timers) >= self.settings.delay_timer_capacity
        full = full or self._in_flight >= _MAX_IN_FLIGHT
        want_paused = {tp for tp, p in self._parts.items() if full or p.buffer}
        if to_pause := want_paused - self._paused:
            consumer.pause(*to_pause)
        if to_resume := self._paused - want_paused:
            consumer.resume(*to_resume)
        self._paused = want_paused

    async def _drain(self, tp: TopicPartition, part: _Partition, now: int) -> None:
        part.wake_ms = None
        routed = 0
        while part.buffer:
            routed += 1
            if routed % _YIELD_EVERY == 0:
                # A burst of hops must not hold up what is due meanwhile, here or in the agents.
                await self._flush_hops()
                await asyncio.sleep(0)
                now = self.clock.now_ms()
                await self._fire_timers(now)
            if len(self._timers) >= self.settings.delay_timer_capacity:
                return
            if self._in_flight >= _MAX_IN_FLIGHT:
                return
            record = part.buffer[0]
            if part.tier_ms and record.timestamp + part.tier_ms > now:
                part.wake_ms = record.timestamp + part.tier_ms
                return
            part.buffer.popleft()
            part.next_offset = record.offset + 1
            await self._route(tp, part, record, now)

    async def _route(self, tp: TopicPartition, part: _Partition, record: Any, now: int) -> None:
        headers = parse_delay_headers(record.headers or ())
        if headers is None:
            reason = "no valid delay headers (wal-due, wal-dest, wal-dest-partition)"
            await self._dead_letter(part, self._dead_out(tp, record, reason, HEADERS_ERROR, None))
            return
        stop = next_stop(headers.due_ms, now, self.tiers)
        if isinstance(stop, (Deliver, Timer)):
            # Through the heap even when due already: records read together leave in due order.
            part.pending.add(record.offset)
            self._seq += 1
            heapq.heappush(
                self._timers, (headers.due_ms, self._seq, tp, record.offset, record, headers)
            )
            self._hop("timer")
        else:
            await self._add_hop(
                tp,
                part,
                record,
                delay_topic(self.settings.app_id, tier_of(stop)),
                tp.partition,
                now,
            )
            self._hop(f"tier_{stop.delay_ms}")

    async def _fire_timers(self, now: int) -> None:
        while self._timers and self._timers[0][0] - self.handoff_lead_ms <= now:
            _, _, tp, offset, record, headers = heapq.heappop(self._timers)
            part = self._parts.get(tp)
            if part is None:  # revoked meanwhile: the new owner re-reads it
                continue
            part.pending.discard(offset)
            await self._forward(tp, part, record, headers)

    async def _forward(
        self, tp: TopicPartition, part: _Partition, record: Any, headers: DelayHeaders
    ) -> None:
        # Handed over up to handoff_lead_ms early, due time attached: the agent holds it till then.
        # A retry copy keeps its wal-origin (where the record was first read).
        forward = [*due_header(headers.due_ms), *carried_origin(record.headers)]
        out = _Out(tp, record, headers.dest_topic, headers.dest_partition, forward)
        since = self._gone.get((out.topic, out.partition))
        if since is not None and not self._exists(self._due_producer, out.topic, out.partition):
            decision = after_send_failure(
                permanent=True,
                tries=1,
                failing_since_ms=since,
                now_ms=self.clock.now_ms(),
                grace_ms=self.settings.delay_dest_grace_ms,
                error=f"{out.topic}[{out.partition}] does not exist",
            )
            if isinstance(decision, GiveUp):  # gone for good: not one more metadata wait
                await self._dead_letter(part, self._gave_up(out, decision.reason))
                return
        await self._send(part, out)
        self.forwarded += 1
        self._hop("due")

    # -- dead letters -------------------------------------------------------------------------

    def _dead_out(
        self,
        tp: TopicPartition,
        record: Any,
        reason: str,
        error_class: str,
        headers: DelayHeaders | None,
    ) -> _Out:
        """A DLQ entry of ``record`` as it was read: in the DLQ of the namespace its value names
        (or its destination belongs to) when the registry knows it, else in the poison topic."""
        namespace, attempts = "", 0
        record_id = f"poison-{tp.topic}-{tp.partition}-{record.offset}"
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
        # A DLQ has its log's partitions: the entry goes where the record would have been.
        partition = headers.dest_partition if headers is not None else tp.partition
        entry = entry_headers(
            namespace=namespace,
            reason=reason,
            error_class=error_class,
            source=f"{tp.topic}[{tp.partition}]@{record.offset}",
            attempts=attempts,
            dead_at_ms=self.clock.now_ms(),
        ) + carried_origin(record.headers)
        return _Out(tp, record, topic, partition, entry, dead_key=record_id.encode())

    def _gave_up(self, out: _Out, reason: str) -> _Out:
        headers = parse_delay_headers(out.record.headers or ())
        return self._dead_out(out.tp, out.record, reason, DEST_GONE_ERROR, headers)

    async def _dead_letter(self, part: _Partition, out: _Out) -> None:
        """Send a dead letter; its record's offset is committed past once it is acknowledged."""
        self._note_dead(out)
        await self._send(part, out)

    def _note_dead(self, out: _Out) -> None:
        fields = dict(out.headers or ())
        logger.error("delay record %s[%d]@%d dead-lettered to %s: %s", out.tp.topic,
                     out.tp.partition, out.record.offset, out.topic,
                     fields.get("wal-error", b"").decode())  # fmt: skip
        if self.metrics is not None:
            self.metrics.dlq_records_written.labels(
                fields.get("wal-namespace", b"").decode(),
                fields.get("wal-error-class", b"").decode(),
            ).inc()
        self._hop("dlq")

    def _to_poison(self, out: _Out) -> _Out:
        """A dead letter its namespace's DLQ refuses as nonexistent, bound for the poison topic."""
        return out._replace(topic=self.poison_topic, partition=None, tries=0, failing_since_ms=None)

    async def _send(self, part: _Partition, out: _Out) -> None:
        """Produce one record: a hop (``timestamp_ms`` set: its write time into the tier) on the
        hop producer, or a forward or dead letter on the due producer.

        Raises:
            Exception: the producer refused it for a transient reason (the record is sent again
            shortly; the caller's loop backs off meanwhile).
        """
        part.pending.add(out.record.offset)
        self._in_flight += 1
        producer = self._producer if out.hop else self._due_producer
        if not out.hop:
            parts = producer.client.cluster.partitions_for_topic(out.topic)
            if parts is None:
                # aiokafka waits up to request_timeout_ms for an unknown topic's metadata: not
                # here, where every record coming due would wait behind it.
                self.add_future(self._send_unknown(producer, out))
                return
            if out.dead_key is not None and out.partition not in parts:
                out = out._replace(partition=None)  # a DLQ with fewer partitions: any one
            elif out.partition is not None and out.partition not in parts:
                self._in_flight -= 1
                missing = f"{out.topic} has no partition {out.partition} ({len(parts)} partitions)"
                self._failed(out, UnknownTopicOrPartitionError(missing))
                return
        try:
            future = await self._enqueue(producer, out)
        except Exception as exc:
            self._in_flight -= 1
            # Pending, so never committed past; sent again shortly, while the loop backs off.
            self._failed(out, exc)
            if isinstance(exc, _PERMANENT):
                return
            raise
        future.add_done_callback(lambda done: self._sent(done, out))

    async def _enqueue(self, producer: Any, out: _Out) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await producer.send(
            out.topic,
            out.record.value,
            key=out.key,
            partition=out.partition,
            timestamp_ms=out.timestamp_ms,
            headers=out.headers,
        )
        return future

    async def _send_unknown(self, producer: Any, out: _Out) -> None:
        try:
            future = await self._enqueue(producer, out)
        except Exception as exc:  # noqa: BLE001 - every failure is routed by _failed
            self._in_flight -= 1
            self._failed(out, exc)
            return
        future.add_done_callback(lambda done: self._sent(done, out))

    @staticmethod
    def _exists(producer: Any, topic: str, partition: int | None) -> bool:
        """Whether the producer's metadata knows ``topic`` (and ``partition``)."""
        parts = producer.client.cluster.partitions_for_topic(topic)
        return parts is not None and (partition is None or partition in parts)

    async def _add_hop(
        self,
        tp: TopicPartition,
        part: _Partition,
        record: Any,
        topic: str,
        partition: int,
        now: int,
    ) -> None:
        """Queue a hop into a record batch for its tier partition (one future per batch, not per
        record: a crowd leaving a tier together costs a fraction of sending each)."""
        out = _Out(tp, record, topic, partition, list(record.headers), now)
        part.pending.add(record.offset)  # first: a failing flush below must not commit past it
        self._in_flight += 1
        key = (topic, partition)
        hops = self._hops.get(key)
        if hops is None:
            hops = self._hops[key] = _Hops(self._producer.create_batch())
        if not hops.add(out):
            await self._flush_hops(key)
            hops = self._hops[key] = _Hops(self._producer.create_batch())
            if not hops.add(out):  # larger than a batch: on its own
                self._in_flight -= 1  # counted again by _send
                await self._send(part, out)

    async def _flush_hops(self, only: tuple[str, int] | None = None) -> None:
        keys = [only] if only is not None else list(self._hops)
        for key in keys:
            hops = self._hops.pop(key, None)
            if hops is None or not hops.members:
                continue
            topic, partition = key
            try:
                future = await self._producer.send_batch(hops.batch, topic, partition=partition)
            except Exception as exc:
                self._in_flight -= len(hops.members)
                # Pending, so never committed past; sent again shortly, while the loop backs off.
                for out in hops.members:
                    self._failed(out, exc)
                raise
            future.add_done_callback(lambda done, hops=hops: self._hops_sent(done, hops))

    def _hops_sent(self, done: asyncio.Future[Any], hops: _Hops) -> None:
        self._in_flight -= len(hops.members)
        if _failed(done):
            if not self.should_stop:
                first = hops.members[0]
                logger.warning("delay hops to %s[%d] failed (%s); resending",
                               first.topic, first.partition, _why(done))  # fmt: skip
                for out in hops.members:
                    self._failed(out, _why(done))
            return
        for out in hops.members:
            part = self._parts.get(out.tp)
            if part is not None:  # else revoked: the new owner re-reads it
                part.pending.discard(out.record.offset)

    def _sent(self, done: asyncio.Future[Any], out: _Out) -> None:
        self._in_flight -= 1
        part = self._parts.get(out.tp)
        if _failed(done):
            if part is not None and not self.should_stop:
                logger.warning("delay send to %s failed (%s); resending", out.topic, _why(done))
                self._failed(out, _why(done))
            return  # revoked or stopping: the offset was not committed past; re-read later
        if not out.hop:
            self._gone.pop((out.topic, out.partition), None)
        if part is not None:
            part.pending.discard(out.record.offset)

    def _failed(self, out: _Out, error: object) -> None:
        """Route a send that failed: again after a backoff, or (a forward its destination has
        refused as nonexistent for the grace period) a dead letter; a dead letter its DLQ
        refuses so goes to the poison topic. Its offset stays pending meanwhile."""
        part = self._parts.get(out.tp)
        if part is None or self.should_stop:
            return  # revoked or stopping: not committed past; re-read later
        now = self.clock.now_ms()
        permanent = isinstance(error, _PERMANENT)
        since = out.failing_since_ms if out.failing_since_ms is not None else now
        if permanent and not out.hop:
            since = min(since, self._gone.setdefault((out.topic, out.partition), now))
        out = out._replace(tries=out.tries + 1, failing_since_ms=since)
        if out.hop or (out.dead_key is not None and not permanent):
            # Into the stage's own tiers, or a DLQ that exists: for as long as it takes.
            self.add_future(self._resend(part, out, resend_delay_ms(out.tries)))
            return
        if out.dead_key is not None:
            if out.topic != self.poison_topic:
                logger.error("dead letter refused by %s (%s): to %s instead",
                             out.topic, error, self.poison_topic)  # fmt: skip
                self.add_future(self._resend(part, self._to_poison(out), 0))
            else:  # the deployment's own topic, made at start: a refusal cannot last
                self.add_future(self._resend(part, out, resend_delay_ms(out.tries)))
            return
        decision = after_send_failure(
            permanent=permanent,
            tries=out.tries,
            failing_since_ms=since,
            now_ms=now,
            grace_ms=self.settings.delay_dest_grace_ms,
            error=f"{out.topic}[{out.partition}]: {error!r}",
        )
        if isinstance(decision, GiveUp):
            dead = self._gave_up(out, decision.reason)
            self._note_dead(dead)
            self.add_future(self._resend(part, dead, 0))
        else:
            self.add_future(self._resend(part, out, decision.after_ms))

    async def _resend(self, part: _Partition, out: _Out, after_ms: int) -> None:
        await asyncio.sleep(after_ms / 1000)
        if self._parts.get(out.tp) is not part or self.should_stop:
            return  # revoked meanwhile (the new owner re-reads it), or stopping
        if out.failing_since_ms is not None and (out.topic, out.partition) in self._gone:
            # The destination was missing: let the metadata catch up before the next try.
            with contextlib.suppress(KafkaError):
                await self._due_producer.client.force_metadata_update()
        with contextlib.suppress(Exception):  # a failure is routed again by _send
            await self._send(part, out)

    # -- offsets and rebalances ---------------------------------------------------------------

    async def _commit(self, consumer: Any, *, force: bool = False) -> None:
        offsets = {}
        for tp, part in self._parts.items():
            safe = part.safe_offset()
            if safe is not None and (force or safe != part.committed):
                offsets[tp] = safe
        if offsets:
            await consumer.commit(offsets)
            for tp, offset in offsets.items():
                self._parts[tp].committed = offset
        self._last_commit_ms = self.clock.now_ms()

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            if tp not in self._parts:
                self._parts[tp] = _Partition(tier_ms=self._tier_of_topic.get(tp.topic, 0))

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is not None:
            offsets = {}
            for tp in revoked:
                part = self._parts.get(tp)
                if part is not None and (safe := part.safe_offset()) is not None:
                    offsets[tp] = safe
            if offsets:
                try:
                    await consumer.commit(offsets)
                except KafkaError as exc:  # the new owner re-reads a little more: harmless
                    logger.warning("delay stage: commit on revoke failed: %s", exc)
        for tp in revoked:
            self._parts.pop(tp, None)
        self._paused -= revoked
        self._timers = [t for t in self._timers if t[2] not in revoked]
        heapq.heapify(self._timers)

    # -- metrics ------------------------------------------------------------------------------

    def _hop(self, to: str) -> None:
        if self.metrics is not None:
            self.metrics.delay_hops.labels(to).inc()

    async def _refresh_ends(self, consumer: Any) -> None:
        """Unread records per partition (end - position), for the pending estimate. Paused
        partitions are not fetched, so their high watermarks are not known otherwise."""
        tps = list(self._parts)
        if not tps:
            self._unread = {}
            return
        try:
            ends = await consumer.end_offsets(tps)
            self._unread = {
                tp: max(0, ends[tp] - await consumer.position(tp)) for tp in tps if tp in ends
            }
        except KafkaError as exc:  # an estimate: keep the last one
            logger.debug("delay stage: end offsets unavailable: %s", exc)

    def pending_estimate(self) -> int:
        """Records waiting here: held in memory plus not yet read from the tiers."""
        held = len(self._timers) + sum(len(p.buffer) for p in self._parts.values())
        return held + sum(n for tp, n in self._unread.items() if tp in self._parts)

    def oldest_due_ms(self) -> int | None:
        """The earliest due time among the records held (the heap and each tier's head)."""
        dues = [self._timers[0][0]] if self._timers else []
        for part in self._parts.values():
            if part.buffer:
                head = parse_delay_headers(part.buffer[0].headers or ())
                if head is not None:
                    dues.append(head.due_ms)
        return min(dues, default=None)

    def _report(self) -> None:
        if self.metrics is None:
            return
        self.metrics.delay_pending.set(self.pending_estimate())
        oldest = self.oldest_due_ms()
        if oldest is not None:
            self.metrics.delay_oldest_due.set(oldest / 1000)
