"""A region's writer (issue 17): a replicated namespace's region topic, applied to the region's
memcached with last-write-wins.

It reads ``wal.<ns>.region.<r>`` in its own consumer group (``walstream.<ns>.region.<r>``), so
a slow or dead region never delays another. Per batch: decode each record into a cache
operation (core.cache_ops), apply them all at once (RegionCache.apply_many: pipelined, keys in
flight together, each key's operations in order), then:

* a poison operation (a key memcached refuses, a value over the item size, a record that is no
  cache operation) goes to the region's DLQ (``wal.<ns>.region.<r>.dlq``) with its reason;
* transient results (the region's memcached down or hung) are tried again in place after a
  backoff; after repeated failures the region's breaker opens, the writer pauses its
  partitions (the backlog waits in Kafka, never in the DLQ) and probes with the batch when the
  breaker lets it, then resumes;
* the batch is committed only then. A crash re-applies some operations, which LWW reads as
  duplicates or stale ones.

Late operations (the namespace's ``max_lag_s`` and ``tombstone_ttl_s``): an operation's lag is
the writer's clock minus its original write time when it is settled. Every operation settled
(or dead-lettered, below) more than ``max_lag_s`` after its write is counted
(``walstream_replication_over_max_lag_total``), each batch holding some logs one WARNING with
how many and the worst lag, and ``walstream replication status`` flags the region: the writer
was behind (its region away, a backlog) or a DLQ entry was redriven late.

A *set* later than ``tombstone_ttl_s`` cannot be applied safely: the tombstone a newer delete
left may have expired, so LWW would find the key empty and the old value would come back. Such
a set is dead-lettered to the region's DLQ with reason ``older_than_tombstone_ttl`` (counted:
``walstream_replication_over_tombstone_ttl_total{outcome="dlq"}``, logged, in status), not
applied: the operator decides (redrive it, or discard it and flush the region's keys) rather
than the writer regressing the cache silently; nothing is dropped either, the entry holds the
record. A redriven copy is the operator's decision: ``walstream dlq redrive --region`` appends
it with its envelope's ``redrive`` count raised (core.outbox.redriven) and its original write
time kept, and the writer applies a copy whose ``redrive`` is above 0 whatever its age (counted
``outcome="applied"``, as is a set crossing the line while it is applied). Deletes and touches
are applied whatever their age: a delete leaves a fresh tombstone, a touch never makes a value,
so neither can bring one back. (Applying late sets anyway would lose nothing but let LWW regress
for exactly the keys deleted in that window, in a cache whose whole point is no regression.)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from walstream.aio import Backoff
from walstream.clock import Clock, SystemClock
from walstream.core.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from walstream.core.cache_ops import cache_op_or_poison
from walstream.core.cache_version import CacheOp, OpKind
from walstream.core.outbox import poison_id, region_dlq_entry
from walstream.errors import PoisonRecordError
from walstream.kafka import clients
from walstream.kafka.admin import ensure_topics
from walstream.kafka.clients import ClientIds, start_client, stop_producer
from walstream.metrics import WalMetrics
from walstream.namespaces.replication import Region, Replication
from walstream.records import Envelope, decode_envelope
from walstream.replication.fanout import region_servers
from walstream.replication.region import ApplyOutcome, RegionCache
from walstream.replication.stage import Batch, BatchStage, acked
from walstream.settings import Settings
from walstream.topology import region_dlq_topic, region_topic, region_topic_specs

__all__ = ["OLDER_THAN_TOMBSTONE_TTL", "RegionWriter"]

logger = logging.getLogger(__name__)

#: The region DLQ reason of a set settled later than the namespace's tombstone TTL.
OLDER_THAN_TOMBSTONE_TTL = "older_than_tombstone_ttl"


@dataclass(slots=True)
class _Item:
    tp: Any
    record: Any
    env: Envelope | None
    op: CacheOp | None
    reason: str = ""


@dataclass(slots=True)
class _Late:
    """A batch's operations settled later than ``max_lag_s`` (and, of those, the sets later than
    ``tombstone_ttl_s``, by what became of them), and the worst lag (ms)."""

    over_max_lag: int = 0
    worst_ms: int = 0
    over_ttl: Counter[str] = field(default_factory=Counter)

    def note(self, lag_ms: int) -> None:
        self.over_max_lag += 1
        self.worst_ms = max(self.worst_ms, lag_ms)


class RegionWriter(BatchStage):
    """Applies a replicated namespace's operations bound for ``region`` to its memcached."""

    label = "region writer"

    def __init__(
        self,
        settings: Settings,
        *,
        namespace: str,
        region: Region,
        replication: Replication,
        partitions: int | None = None,
        metrics: WalMetrics | None = None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        breaker: BreakerPolicy | None = None,
        cache_timeout_s: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            settings,
            topic=region_topic(namespace, region.name),
            group_id=ClientIds.region_group(namespace, region.name),
            servers=region_servers(settings, region.bootstrap_servers),
            **kwargs,
        )
        self.namespace = namespace
        self.region = region
        self.replication = replication
        self.partitions = partitions or settings.default_partitions
        self.dlq_topic = region_dlq_topic(namespace, region.name)
        self.clock = clock or SystemClock()
        self.backoff = backoff or Backoff(first_s=0.05, cap_s=2.0)
        self.breaker = CircuitBreaker(breaker or BreakerPolicy(threshold=3, max_open_ms=5_000))
        self.cache_timeout_s = cache_timeout_s
        self.cache: RegionCache | None = None
        self.producer: Any = None
        #: settled operations by outcome (applied, stale, duplicate, absent, dlq), and retries
        self.outcomes: Counter[str] = Counter()
        #: operations settled or dead-lettered later than ``max_lag_s`` after their write
        self.over_max_lag = 0
        #: sets later than ``tombstone_ttl_s``: dead-lettered (``dlq``) or applied (``applied``:
        #: a redriven copy, or one crossing the line while applied)
        self.over_tombstone_ttl: Counter[str] = Counter()
        self.retries = 0
        #: applies of a batch that left operations to try again (the region away)
        self.failed_applies = 0
        #: called with each operation settled in the region (not poison) and the time it was
        #: settled (ms): exact lag samples, for tests and benchmarks (the histogram buckets them)
        self.lag_sink: Callable[[CacheOp, ApplyOutcome, int], None] | None = None
        self._ends_listed_ms = 0
        self._lag: Any = None
        self._ops: Any = None
        self._retried: Any = None
        self._backlog: Any = None
        self._over_max_lag: Any = None
        self._over_ttl: Any = None
        if metrics is not None:
            labels = (namespace, region.name)
            self._lag = metrics.replication_lag.labels(*labels)
            self._ops = {
                outcome: metrics.replication_ops.labels(*labels, outcome)
                for outcome in ("applied", "stale", "duplicate", "absent", "dlq")
            }
            self._retried = metrics.replication_retries.labels(*labels)
            self._backlog = metrics.replication_backlog.labels(*labels)
            self._over_max_lag = metrics.replication_over_max_lag.labels(*labels)
            self._over_ttl = {
                outcome: metrics.replication_over_tombstone_ttl.labels(*labels, outcome)
                for outcome in ("dlq", "applied")
            }

    def report(self) -> None:
        if self._backlog is not None:
            self._backlog.set(self.backlog())

    async def start_clients(self) -> None:
        settings = self.settings
        await ensure_topics(
            self.servers,
            region_topic_specs(
                self.namespace,
                self.region.name,
                self.partitions,
                replication_factor=settings.replication_factor,
                min_insync_replicas=settings.min_insync_replicas,
            ),
        )
        self.cache = RegionCache(
            [str(server) for server in self.region.memcached],
            tombstone_ttl_s=self.replication.tombstone_ttl_s,
            timeout_s=self.cache_timeout_s,
        )
        self.producer = clients.stage_producer(self.servers, group_id=self.group_id)
        await start_client(self.producer)

    async def stop_clients(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await stop_producer(producer, timeout_s=clients.PRODUCER_STOP_S)
        cache, self.cache = self.cache, None
        if cache is not None:
            await cache.close()

    async def handle(self, batch: Batch) -> None:
        items = [_read(tp, record) for tp, records in batch.items() for record in records]
        pending = [item for item in items if item.op is not None]
        delays = self.backoff.delays()
        paused = False
        late = _Late()
        try:
            while pending:
                if not self.breaker.allow(self.clock.now_ms()):
                    paused = paused or self._pause()
                    await self._idle(self.breaker.retry_at_ms(self.clock.now_ms()))
                    continue
                pending = await self._apply(pending, late)
                if pending:
                    self.failed_applies += 1
                    self.breaker.record_failure(self.clock.now_ms())
                    self.retries += len(pending)
                    if self._retried is not None:
                        self._retried.inc(len(pending))
                    paused = paused or self._pause()
                    if self.breaker.state is BreakerState.CLOSED:  # open: its wait, above
                        await self._idle(self.clock.now_ms() + int(next(delays) * 1000))
                else:
                    self.breaker.record_success()
        finally:
            self.listed_ends = {}
            if paused and self.consumer is not None:
                self.consumer.resume(*self.consumer.assignment())
            self._report_late(late)
        await self._dead_letter([item for item in items if item.reason])

    async def _apply(self, pending: list[_Item], late: _Late) -> list[_Item]:
        """Apply ``pending`` (but the sets too late to apply, given their reason here); return
        those to try again. Checked at each try: a batch waiting for its region grows older."""
        assert self.cache is not None  # noqa: S101 - started
        ready = [item for item in pending if not self._too_late(item, late)]
        if not ready:
            return []
        results = await self.cache.apply_many([item.op for item in ready])  # type: ignore[misc]
        now_ms = self.clock.now_ms()
        max_lag_ms = self.replication.max_lag_s * 1000
        ttl_ms = self.replication.tombstone_ttl_s * 1000
        again: list[_Item] = []
        for item, result in zip(ready, results, strict=True):
            outcome = result.outcome
            if outcome is ApplyOutcome.TRANSIENT:
                again.append(item)
            elif outcome is ApplyOutcome.POISON:
                item.reason = result.reason
            else:
                self._count(outcome.value)
                op = item.op
                assert op is not None  # noqa: S101 - only operations are applied
                lag_ms = now_ms - op.version.original_write_time_ms
                if outcome is ApplyOutcome.APPLIED and self._lag is not None:
                    self._lag.observe(max(0, lag_ms) / 1000)
                if lag_ms > max_lag_ms:
                    self._note_late(late, lag_ms)
                    if op.kind is OpKind.SET and lag_ms > ttl_ms:
                        self._note_over_ttl(late, "applied")
                if self.lag_sink is not None:
                    self.lag_sink(op, outcome, now_ms)
        return again

    def _too_late(self, item: _Item, late: _Late) -> bool:
        """Whether ``item`` is a set later than the tombstone TTL, not a redriven copy: it is
        given its DLQ reason (the module's docstring says why)."""
        op, env = item.op, item.env
        assert op is not None  # noqa: S101 - only operations are applied
        assert env is not None  # noqa: S101 - an operation comes from an envelope
        if op.kind is not OpKind.SET or env.redrive > 0:
            return False
        lag_ms = self.clock.now_ms() - op.version.original_write_time_ms
        if lag_ms <= self.replication.tombstone_ttl_s * 1000:
            return False
        item.reason = OLDER_THAN_TOMBSTONE_TTL
        self._note_late(late, lag_ms)
        self._note_over_ttl(late, "dlq")
        return True

    def _note_late(self, late: _Late, lag_ms: int) -> None:
        late.note(lag_ms)
        self.over_max_lag += 1
        if self._over_max_lag is not None:
            self._over_max_lag.inc()

    def _note_over_ttl(self, late: _Late, outcome: str) -> None:
        late.over_ttl[outcome] += 1
        self.over_tombstone_ttl[outcome] += 1
        if self._over_ttl is not None:
            self._over_ttl[outcome].inc()

    def _report_late(self, late: _Late) -> None:
        """One WARNING for a batch's late operations (none: nothing)."""
        if not late.over_max_lag:
            return
        replication = self.replication
        logger.warning(
            "%s %s/%s: %d operation(s) settled later than max_lag_s (%d s), worst lag %.1f s; "
            "sets later than tombstone_ttl_s (%d s): %d dead-lettered (%s: redrive to apply, "
            "or discard), %d applied (redriven copies)",
            self.label,
            self.namespace,
            self.region.name,
            late.over_max_lag,
            replication.max_lag_s,
            late.worst_ms / 1000,
            replication.tombstone_ttl_s,
            late.over_ttl["dlq"],
            OLDER_THAN_TOMBSTONE_TTL,
            late.over_ttl["applied"],
        )

    def _count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] += n
        if self._ops is not None:
            self._ops[outcome].inc(n)

    def _pause(self) -> bool:
        """Stop fetching while the batch in hand waits (the backlog stays in Kafka)."""
        if self.consumer is not None:
            self.consumer.pause(*self.consumer.assignment())
        return True

    async def _idle(self, until_ms: int) -> None:
        """Wait until ``until_ms`` polling the paused consumer (so its group keeps it); records
        of partitions assigned meanwhile (not paused) are put back to be read later."""
        await self._list_ends()
        self.report()
        wait_ms = max(1, until_ms - self.clock.now_ms())
        got = await self.consumer.getmany(timeout_ms=wait_ms, max_records=1)
        for tp, records in got.items():
            if records:
                self.consumer.seek(tp, records[0].offset)
        self._pause()

    async def _list_ends(self) -> None:
        """List the partitions' end offsets (at most once a second): paused partitions are not
        fetched, so their high watermarks stop where the outage began, and the backlog gauge
        would stay flat while the region's topic grows."""
        now_ms = self.clock.now_ms()
        if now_ms - self._ends_listed_ms < 1_000:
            return
        self._ends_listed_ms = now_ms
        try:
            ends = await self.consumer.end_offsets(list(self.consumer.assignment()))
        except KafkaError:
            return  # the gauge keeps its last reading; the batch's wait goes on
        self.listed_ends = dict(ends)

    async def _dead_letter(self, dead: list[_Item]) -> None:
        if not dead:
            return
        now_ms = self.clock.now_ms()
        # on the partition the operation was read from, unless the DLQ has fewer partitions than
        # the region's topic (a topic made by hand before walstream made its DLQ): aiokafka
        # refuses a partition a topic lacks, and the batch would be read again for ever
        parts = sorted(await self.producer.partitions_for(self.dlq_topic))
        sends = []
        for item in dead:
            record = item.record
            partition = record.partition
            if partition not in parts:
                partition = parts[partition % len(parts)]
            out = region_dlq_entry(
                record.value,
                dlq_topic=self.dlq_topic,
                partition=partition,
                record_id=item.env.id
                if item.env is not None
                else poison_id(record.topic, record.partition, record.offset),
                namespace=self.namespace,
                reason=item.reason,
                source=f"{record.topic}[{record.partition}]@{record.offset}",
                dead_at_ms=now_ms,
                key=record.key.decode("utf-8", "replace") if record.key is not None else None,
            )
            sends.append(
                await self.producer.send(
                    out.topic, out.value, key=out.key, partition=out.partition, headers=out.headers
                )
            )
        await acked(sends)
        self._count("dlq", len(dead))


def _read(tp: Any, record: Any) -> _Item:
    try:
        env = decode_envelope(record.value)
    except PoisonRecordError as exc:
        return _Item(tp, record, None, None, str(exc))
    got = cache_op_or_poison(env)
    if isinstance(got, CacheOp):
        return _Item(tp, record, env, got)
    return _Item(tp, record, env, None, got.reason)
