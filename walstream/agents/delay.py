"""Delay stage: hold records in the tier topics until they are (almost) due.

See walstream.core.delay for the tier design. This service is the tiers' reader: a consumer group
over every tier topic (``<app-id>-delay``), keeping only the loop. Its parts: the timer heap
(``core.delay.TimerHeap``), each partition's fetched records and offset ledger
(``core.tier_partition.TierPartition``), the records it writes (``core.outbox``: hop, hand-over,
DLQ entry) and their sender (``agents.hops.HopSender``: hop batches, resends, dead letters).

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
import logging
from typing import Any

import mode
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from walstream.agents.hops import HopSender
from walstream.agents.outgoing import Out
from walstream.aio import Backoff, supervised
from walstream.clock import Clock, SystemClock
from walstream.core import outbox
from walstream.core.delay import (
    HANDOFF_LEAD_MS,
    HEADERS_ERROR,
    TIERS_MS,
    DelayHeaders,
    TimerHeap,
    parse_delay_headers,
)
from walstream.core.tier_partition import TierPartition, commit_offsets, oldest_due_ms, sleep_ms
from walstream.kafka import clients
from walstream.kafka.admin import ensure_topics
from walstream.kafka.clients import stop_consumer
from walstream.metrics import WalMetrics
from walstream.namespaces.registry import NamespaceRegistry
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
        self.registry = registry
        self.poison_topic = poison_topic(settings.app_id)
        self.handoff_lead_ms = handoff_lead_ms
        self.group_id = group_id
        self.clock = clock or SystemClock()
        self.metrics = metrics
        self.tiers = tiers
        self._tier_of_topic = {delay_topic(settings.app_id, t): t for t in (0, *tiers)}
        self._parts: dict[TopicPartition, TierPartition] = {}
        #: Its group gave it an assignment once (possibly empty: more workers than tier partitions).
        self.joined = False
        self._paused: set[TopicPartition] = set()
        #: Records in their last stretch (the timer tier's, and those leaving the last tier).
        self._timers: TimerHeap[tuple[Any, DelayHeaders]] = TimerHeap()
        self._consumer: Any = None
        self._last_commit_ms = 0
        self._last_ends_ms = 0
        self._unread: dict[TopicPartition, int] = {}
        self.forwarded = 0
        self.sender = HopSender(
            self._parts,
            spawn=self.add_future,
            stopping=lambda: self.should_stop,
            clock=self.clock,
            dest_grace_ms=settings.delay_dest_grace_ms,
            poison_topic=self.poison_topic,
            registry=registry,
            metrics=metrics,
        )

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The tier partitions this stage reads now (none before it has joined its group)."""
        return frozenset(self._parts)

    @property
    def _in_flight(self) -> int:
        """Records handed to the producers and not yet acknowledged."""
        return self.sender.in_flight

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
        self.sender.producer = clients.delay_producer(servers, group_id=self.group_id, due=False)
        await self.sender.producer.start()
        self.sender.due_producer = clients.delay_producer(servers, group_id=self.group_id, due=True)
        await self.sender.due_producer.start()
        self._consumer = clients.delay_consumer(
            servers,
            group_id=self.group_id,
            fetch_max_wait_ms=self.settings.consumer_fetch_max_wait_ms,
            session_timeout_s=self.settings.broker_session_timeout_s,
            heartbeat_interval_s=self.settings.broker_heartbeat_interval_s,
        )
        await self._consumer.start()
        self._consumer.subscribe(sorted(self._tier_of_topic), listener=_Listener(self))

    async def on_stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._commit(consumer, force=True)
            await stop_consumer(consumer)
        for producer in (self.sender.producer, self.sender.due_producer):
            if producer is not None:
                await stop_consumer(producer)
        self.sender.producer = self.sender.due_producer = None

    # -- the loop -------------------------------------------------------------------------------

    @mode.Service.task
    async def _run(self) -> None:
        # The stage must outlive surprises: records wait safely in Kafka.
        await supervised(
            "delay stage",
            self._step,
            backoff=Backoff(first_s=0.1, cap_s=5.0),
            log=logger,
            running=lambda: not self.should_stop,
            expected=(KafkaError, OSError),
        )

    async def _step(self) -> None:
        consumer = self._consumer
        if consumer is None:  # not started yet
            await asyncio.sleep(0.05)
            return
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
        await self.sender.flush()
        self._flow(consumer)
        if now - self._last_commit_ms >= _COMMIT_EVERY_MS:
            await self._commit(consumer)
            if now - self._last_ends_ms >= _ENDS_EVERY_MS:
                self._last_ends_ms = now
                await self._refresh_ends(consumer)
            self._report()

    def _sleep_ms(self) -> int:
        return sleep_ms(
            self.clock.now_ms(),
            self._parts.values(),
            self._timers.next_due_ms(),
            lead_ms=self.handoff_lead_ms,
            max_ms=_MAX_SLEEP_MS,
        )

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

    async def _drain(self, tp: TopicPartition, part: TierPartition, now: int) -> None:
        part.wake_ms = None
        routed = 0
        while part.buffer:
            routed += 1
            if routed % _YIELD_EVERY == 0:
                # A burst of hops must not hold up what is due meanwhile, here or in the agents.
                await self.sender.flush()
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
            part.track(record.offset)  # pending until it is safely sent on
            await self._route(tp, part, record, now)

    async def _route(self, tp: TopicPartition, part: TierPartition, record: Any, now: int) -> None:
        headers = parse_delay_headers(record.headers or ())
        if headers is None:
            reason = "no valid delay headers (wal-due, wal-dest, wal-dest-partition)"
            dead = self.sender.dead_out(tp, record, reason, HEADERS_ERROR, None)
            await self.sender.dead_letter(part, dead)
            return
        hop = outbox.hop(
            record.value,
            record.key,
            record.headers,
            headers,
            now_ms=now,
            app_id=self.settings.app_id,
            tier_partitions=self._tier_partitions(),
            tiers=self.tiers,
        )
        if hop is None:
            # Through the heap even when due already: records read together leave in due order.
            self._timers.push(headers.due_ms, tp, (record, headers))
            self._hop("timer")
        else:
            await self.sender.add_hop(part, Out.of(tp, record, hop))
            self._hop(f"tier_{self._tier_of_topic[hop.topic]}")

    def _tier_partitions(self) -> int:
        """The tiers' partition count: every tier is made with the deployment's default."""
        return self.settings.default_partitions

    async def _fire_timers(self, now: int) -> None:
        while (due := self._timers.pop_due(now + self.handoff_lead_ms)) is not None:
            tp, (record, headers) = due
            part = self._parts.get(tp)
            if part is None:  # revoked meanwhile: the new owner re-reads it
                continue
            await self._forward(tp, part, record, headers)

    async def _forward(
        self, tp: TopicPartition, part: TierPartition, record: Any, headers: DelayHeaders
    ) -> None:
        # Handed over up to handoff_lead_ms early, due time attached: the agent holds it till then.
        # A retry copy keeps its wal-origin (where the record was first read).
        out = Out.of(tp, record, outbox.forward(record.value, record.key, record.headers, headers))
        give_up = self.sender.gone_for_good(out)
        if give_up is not None:  # gone for good: not one more metadata wait
            await self.sender.dead_letter(part, self.sender.gave_up(out, give_up.reason))
            return
        await self.sender.send(part, out)
        self.forwarded += 1
        self._hop("due")

    # -- offsets and rebalances ---------------------------------------------------------------

    async def _commit(self, consumer: Any, *, force: bool = False) -> None:
        offsets = commit_offsets(self._parts, force=force)
        if offsets:
            await consumer.commit(offsets)
            for tp, offset in offsets.items():
                self._parts[tp].committed = offset
        self._last_commit_ms = self.clock.now_ms()

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.joined = True
        for tp in assigned:
            if tp not in self._parts:
                self._parts[tp] = TierPartition(tier_ms=self._tier_of_topic.get(tp.topic, 0))

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is not None:
            leaving = {tp: self._parts[tp] for tp in revoked if tp in self._parts}
            offsets = commit_offsets(leaving, force=True)
            if offsets:
                try:
                    await consumer.commit(offsets)
                except KafkaError as exc:  # the new owner re-reads a little more: harmless
                    logger.warning("delay stage: commit on revoke failed: %s", exc)
        for tp in revoked:
            self._parts.pop(tp, None)
        self._paused -= revoked
        self._timers.drop(revoked)

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
        return oldest_due_ms(self._timers.next_due_ms(), self._parts.values())

    def _report(self) -> None:
        if self.metrics is None:
            return
        self.metrics.delay_pending.set(self.pending_estimate())
        oldest = self.oldest_due_ms()
        if oldest is not None:
            self.metrics.delay_oldest_due.set(oldest / 1000)
