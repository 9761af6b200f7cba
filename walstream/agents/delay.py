"""Delay stage: hold records in the tier topics until they are due, never forward one early.

See walstream.core.delay for the tier design. This service is the tiers' reader: a consumer group
over every tier topic (``<app-id>-delay``), with its own producer.

* A tier partition's head leaves the tier at its write time + the tier's delay. Until then the
  partition is paused and its fetched records wait in a small buffer (one fetch at most), so
  memory does not grow with the backlog.
* A leaving record goes where ``next_stop`` says: a smaller tier, the timer heap (due within the
  smallest tier), or its destination (the namespace's retry topic and partition it came from).
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
from typing import Any

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from walstream.clock import Clock, SystemClock
from walstream.core.delay import (
    TIERS_MS,
    DelayHeaders,
    Deliver,
    Timer,
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
_MAX_SLEEP_MS = 100
_MAX_IN_FLIGHT = 20_000


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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
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
        self._last_commit_ms = 0
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
        self._producer = AIOKafkaProducer(
            bootstrap_servers=servers, acks="all", linger_ms=2, client_id=f"{self.group_id}-out"
        )
        await self._producer.start()
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
        producer, self._producer = self._producer, None
        if producer is not None:
            await stop_consumer(producer)

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
        self._flow(consumer)
        if now - self._last_commit_ms >= _COMMIT_EVERY_MS:
            await self._commit(consumer)
            self._report()

    def _sleep_ms(self) -> int:
        now = self.clock.now_ms()
        wakes = [p.wake_ms for p in self._parts.values() if p.wake_ms is not None]
        if self._timers:
            wakes.append(self._timers[0][0])
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
        while part.buffer:
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
        if isinstance(stop, Deliver):
            await self._forward(tp, part, record, headers, now)
        elif isinstance(stop, Timer):
            part.pending.add(record.offset)
            self._seq += 1
            heapq.heappush(
                self._timers, (headers.due_ms, self._seq, tp, record.offset, record, headers)
            )
            self._hop("timer")
        else:
            await self._send(
                tp,
                part,
                record.offset,
                delay_topic(self.settings.app_id, tier_of(stop)),
                tp.partition,
                record,
                list(record.headers),
                now,
            )
            self._hop(f"tier_{stop.delay_ms}")

    async def _fire_timers(self, now: int) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, tp, offset, record, headers = heapq.heappop(self._timers)
            part = self._parts.get(tp)
            if part is None:  # revoked meanwhile: the new owner re-reads it
                continue
            part.pending.discard(offset)
            await self._forward(tp, part, record, headers, self.clock.now_ms())

    async def _forward(
        self, tp: TopicPartition, part: _Partition, record: Any, headers: DelayHeaders, now: int
    ) -> None:
        if self.metrics is not None:
            self.metrics.delay_lateness.observe(max(0, now - headers.due_ms) / 1000)
        await self._send(
            tp, part, record.offset, headers.dest_topic, headers.dest_partition, record, None, None
        )
        self.forwarded += 1
        self._hop("due")

    async def _send(
        self,
        tp: TopicPartition,
        part: _Partition,
        offset: int,
        topic: str,
        partition: int,
        record: Any,
        headers: list[tuple[str, bytes]] | None,
        timestamp_ms: int | None,
    ) -> None:
        part.pending.add(offset)
        self._in_flight += 1
        try:
            future = await self._producer.send(
                topic,
                record.value,
                key=record.key,
                partition=partition,
                timestamp_ms=timestamp_ms,
                headers=headers,
            )
        except Exception:
            self._in_flight -= 1
            raise  # the loop backs off; the offset stays pending, so it is never committed past
        future.add_done_callback(
            lambda done: self._sent(
                done, tp, offset, topic, partition, record, headers, timestamp_ms
            )
        )

    def _sent(
        self,
        done: asyncio.Future[Any],
        tp: TopicPartition,
        offset: int,
        topic: str,
        partition: int,
        record: Any,
        headers: list[tuple[str, bytes]] | None,
        timestamp_ms: int | None,
    ) -> None:
        self._in_flight -= 1
        part = self._parts.get(tp)
        if done.cancelled() or done.exception() is not None:
            if part is None or self.should_stop:
                return  # revoked or stopping: the offset was not committed past; re-read later
            logger.warning("delay forward to %s failed (%s); resending", topic, done.exception())
            self.add_future(
                self._resend(tp, part, offset, topic, partition, record, headers, timestamp_ms)
            )
            return
        if part is not None:
            part.pending.discard(offset)

    async def _resend(
        self,
        tp: TopicPartition,
        part: _Partition,
        offset: int,
        topic: str,
        partition: int,
        record: Any,
        headers: list[tuple[str, bytes]] | None,
        timestamp_ms: int | None,
    ) -> None:
        await asyncio.sleep(0.5)
        if self._parts.get(tp) is not part:
            return  # revoked meanwhile: the new owner re-reads it
        await self._send(tp, part, offset, topic, partition, record, headers, timestamp_ms)

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

    def pending_estimate(self) -> int:
        """Records waiting here: held in memory plus not yet read from the tiers."""
        held = len(self._timers) + sum(len(p.buffer) for p in self._parts.values())
        unread = 0
        consumer = self._consumer
        for tp, part in self._parts.items():
            highwater = consumer.highwater(tp) if consumer is not None else None
            if highwater is not None and part.next_offset is not None:
                unread += max(0, highwater - part.next_offset - len(part.buffer))
        return held + unread

    def _report(self) -> None:
        if self.metrics is None:
            return
        self.metrics.delay_pending.set(self.pending_estimate())
        if self._timers:
            self.metrics.delay_oldest_due.set(self._timers[0][0] / 1000)
