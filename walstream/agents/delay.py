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
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from walstream.clock import Clock, SystemClock
from walstream.core.delay import (
    HANDOFF_LEAD_MS,
    TIERS_MS,
    DelayHeaders,
    Deliver,
    Timer,
    due_header,
    next_stop,
    parse_delay_headers,
    tier_of,
)
from walstream.kafka.admin import ensure_topics
from walstream.kafka.clients import stop_consumer
from walstream.metrics import WalMetrics
from walstream.settings import Settings
from walstream.topology import delay_topic, delay_topic_specs

__all__ = ["DelayStage"]

logger = logging.getLogger(__name__)

_COMMIT_EVERY_MS = 1_000
_ENDS_EVERY_MS = 5_000
_MAX_SLEEP_MS = 100
_MAX_IN_FLIGHT = 20_000
#: Records routed between two looks at the timers (and two chances for other tasks to run).
_YIELD_EVERY = 100


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
    """One record the stage produces: a hop into a tier, or a forward to its destination."""

    tp: TopicPartition  #: where it was read (its offset stays pending until this is acked)
    record: Any
    topic: str
    partition: int
    headers: list[tuple[str, bytes]] | None
    #: a hop's write time into the tier; None for a forward
    timestamp_ms: int | None = None


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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
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
            delay_topic_specs(
                self.settings.app_id,
                (0, *self.tiers),
                self.settings.default_partitions,
                self.settings.delay_grace_ms,
                self.settings.replication_factor,
            ),
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
            logger.error("delay record %s[%d]@%d without delay headers: dropped",
                         tp.topic, tp.partition, record.offset)  # fmt: skip
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
        out = _Out(
            tp, record, headers.dest_topic, headers.dest_partition, due_header(headers.due_ms)
        )
        await self._send(part, out)
        self.forwarded += 1
        self._hop("due")

    async def _send(self, part: _Partition, out: _Out) -> None:
        """Produce one record: a hop (``timestamp_ms`` set: its write time into the tier) or a
        forward to its destination (None), each on its own producer."""
        part.pending.add(out.record.offset)
        self._in_flight += 1
        producer = self._producer if out.timestamp_ms is not None else self._due_producer
        try:
            future = await producer.send(
                out.topic,
                out.record.value,
                key=out.record.key,
                partition=out.partition,
                timestamp_ms=out.timestamp_ms,
                headers=out.headers,
            )
        except Exception:
            self._in_flight -= 1
            # Pending, so never committed past; sent again shortly, while the loop backs off.
            self.add_future(self._resend(part, out))
            raise
        future.add_done_callback(lambda done: self._sent(done, out))

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
            except Exception:
                self._in_flight -= len(hops.members)
                # Pending, so never committed past; sent again shortly, while the loop backs off.
                self._resend_all(hops.members)
                raise
            future.add_done_callback(lambda done, hops=hops: self._hops_sent(done, hops))

    def _hops_sent(self, done: asyncio.Future[Any], hops: _Hops) -> None:
        self._in_flight -= len(hops.members)
        if _failed(done):
            if not self.should_stop:
                first = hops.members[0]
                logger.warning("delay hops to %s[%d] failed (%s); resending",
                               first.topic, first.partition, _why(done))  # fmt: skip
                self._resend_all(hops.members)
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
                logger.warning("delay forward to %s failed (%s); resending", out.topic, _why(done))
                self._resend_all([out])
            return  # revoked or stopping: the offset was not committed past; re-read later
        if part is not None:
            part.pending.discard(out.record.offset)

    def _resend_all(self, outs: list[_Out]) -> None:
        if self.should_stop:
            return  # not committed past: re-read after the restart
        for out in outs:
            part = self._parts.get(out.tp)
            if part is not None:
                self.add_future(self._resend(part, out))

    async def _resend(self, part: _Partition, out: _Out) -> None:
        await asyncio.sleep(0.5)
        if self._parts.get(out.tp) is not part:
            return  # revoked meanwhile: the new owner re-reads it
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
