"""A replication stage's loop (issue 17): its own aiokafka consumer group, batches, a commit.

Faust's per-event path costs ~300 us of CPU per record; a stage here reads a batch with
``getmany``, handles it whole (the fan-out sends every copy and awaits the acks; a region
writer applies the batch to its memcached), and only then commits: a partition's commit never
passes a record without a durable outcome (``core.offsets.PartitionLedger``). A batch that
fails is read again (the stage seeks back to its first records), so a crash or a failure means
a redelivery, which last-write-wins makes harmless (duplicate or stale).

The commit runs beside the loop, not in it: the next batch is fetched and handled while the
last one's offsets go to the group coordinator (one commit in flight; offsets handled
meanwhile wait and go in the next, so the committed position only moves forward and never
past a handled record). Awaited in the loop, a commit (5-25 ms on a loaded broker) was added to
every batch's lag at each of the two hops. Commits are spaced by ``WALSTREAM_COMMIT_INTERVAL_S``
(as the worker's are): a crash reads again at most that much, which last-write-wins makes
harmless, and the broker is not asked for a commit per batch of a few ms. A commit that fails
is tried again with the next batch's; a rebalance and a stop commit what was handled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import mode
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from walstream.aio import Backoff, cancel_and_wait, supervised
from walstream.core.fetch_gaps import GapGuard
from walstream.core.offsets import OffsetLedger
from walstream.kafka import clients
from walstream.kafka.clients import start_client, stop_consumer
from walstream.settings import Settings

__all__ = ["Batch", "BatchStage", "acked"]

logger = logging.getLogger(__name__)

#: A batch as ``getmany`` returns it: records per partition, in offset order.
Batch = dict[TopicPartition, list[Any]]


async def acked(sends: list[Any]) -> None:
    """Wait for every send's ack; raise the first failure once all have an outcome (none is
    left unawaited)."""
    outcomes = await asyncio.gather(*sends, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, stage: BatchStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.stage.partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.stage.ledger.assign(assigned)
        self.stage.gaps.forget(assigned)
        self.stage.joined = True


class BatchStage(mode.Service):
    """Reads ``topic`` on ``servers`` in consumer group ``group_id`` and hands each batch to
    :meth:`handle`, then commits it. Subclasses open their clients in :meth:`start_clients`."""

    #: what the logs call it
    label = "replication stage"

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str,
        group_id: str,
        servers: str | list[str],
        max_records: int = 2_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topic = topic
        self.group_id = group_id
        self.servers = servers
        self.max_records = max_records
        self.ledger: OffsetLedger[TopicPartition] = OffsetLedger()
        #: no record stepped over: a fetch past a hole is read again (core.fetch_gaps)
        self.gaps: GapGuard[TopicPartition] = GapGuard(
            settle_ms=int(settings.replication_hole_wait_s * 1000)
        )
        self.consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        #: records handled (their batch's outcome durable and committed)
        self.handled = 0
        #: it has joined its consumer group (an assignment came, possibly empty: more stage
        #: instances than partitions); the worker's /readyz waits for it
        self.joined = False
        #: end offsets listed while the partitions are paused (not fetched, so their high
        #: watermarks stand still): the backlog reads the larger
        self.listed_ends: dict[TopicPartition, int] = {}
        #: offsets handled and not committed yet, and the commit in flight
        self._to_commit: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        #: commits are spaced by WALSTREAM_COMMIT_INTERVAL_S (each one costs the broker a
        #: request, a batch comes every few ms); a flush commits at once
        self._next_commit_at = 0.0
        self._hurry = asyncio.Event()

    async def start_clients(self) -> None:
        """Open the stage's own clients (producers, caches) and create its topics."""

    async def stop_clients(self) -> None:
        """Close what :meth:`start_clients` opened."""

    async def handle(self, batch: Batch) -> None:
        """Give every record of ``batch`` a durable outcome, or raise (it is read again)."""
        raise NotImplementedError

    async def on_start(self) -> None:
        await self.start_clients()
        consumer = clients.stage_consumer(
            self.servers,
            group_id=self.group_id,
            session_timeout_s=self.settings.broker_session_timeout_s,
            heartbeat_interval_s=self.settings.broker_heartbeat_interval_s,
        )
        self.consumer = consumer
        await start_client(consumer)
        consumer.subscribe([self.topic], listener=_Listener(self))

    async def on_stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)  # the loop ends before its clients close
        with contextlib.suppress(Exception):  # a commit left out means a redelivery only
            await asyncio.wait_for(self.flush(), timeout=self.settings.broker_session_timeout_s)
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await stop_consumer(consumer)
        await self.stop_clients()

    async def on_started(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        # records wait safely in Kafka: the stage outlives any surprise
        await supervised(
            f"{self.label} {self.group_id}",
            self._step,
            backoff=Backoff(first_s=0.1, cap_s=5.0),
            log=logger,
            running=lambda: not self.should_stop,
            expected=(KafkaError, OSError),
        )

    async def _step(self) -> None:
        consumer = self.consumer
        fetched: Batch = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
        if not fetched:
            self._commit_later({})  # a commit that failed is tried again
            self.report()
            return
        batch = await self.contiguous(fetched)
        if not batch:  # every record fetched lies past a hole: read again from it
            return
        for tp, records in batch.items():
            for record in records:
                self.ledger.track(tp, record.offset)
        try:
            await self.handle(batch)
        except BaseException:
            self.rewind(batch)  # read again, from the batch's first records
            raise
        for tp, records in batch.items():
            for record in records:
                self.ledger.ack(tp, record.offset)
            self.gaps.handled(tp, records[-1].offset)
        self.handled += sum(len(records) for records in batch.values())
        offsets = {}
        for tp in batch:
            offset = self.ledger.committable(tp)
            if offset is not None:
                offsets[tp] = offset
        self._commit_later(offsets)
        self.report()

    def _commit_later(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` beside the loop: with the commit in flight, or in the next one."""
        self._to_commit.update(offsets)
        if self._to_commit and (self._committing is None or self._committing.done()):
            self._committing = asyncio.ensure_future(self._commit_pending())

    async def _commit_pending(self) -> None:
        while self._to_commit:
            wait_s = self._next_commit_at - time.monotonic()
            if wait_s > 0 and not self._hurry.is_set():  # one commit per interval at most
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), wait_s)
            # only partitions still this member's (a revoked one's offsets are its new owner's
            # to commit: in a commit, the consumer refuses the whole commit for it)
            offsets = {tp: o for tp, o in self._to_commit.items() if self.ledger.assigned(tp)}
            self._to_commit = {}
            if not offsets:
                return
            self._next_commit_at = time.monotonic() + self.settings.commit_interval_s
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001  # a commit not made means a redelivery only
                # the next batch's commit carries them (a newer offset of a partition wins),
                # those of partitions revoked meanwhile left out (above)
                self._to_commit = {**offsets, **self._to_commit}
                logger.warning("%s %s: commit failed: %r", self.label, self.group_id, exc)
                return

    async def flush(self) -> None:
        """Commit what was handled now (not at the next interval): wait for the commit in
        flight and those pending behind it (one try)."""
        self._hurry.set()
        try:
            while (task := self._committing) is not None and not task.done():
                await asyncio.shield(task)
            if self._to_commit and self.consumer is not None:
                self._committing = asyncio.ensure_future(self._commit_pending())
                await asyncio.shield(self._committing)
        finally:
            self._hurry.clear()

    async def partitions_revoked(self, revoked: Any) -> None:
        """Commit what was handled while ``revoked`` are still this member's, then let them go
        (offsets it could not commit are the new owner's to commit, not this member's)."""
        with contextlib.suppress(Exception):  # a commit left out means a redelivery only
            await asyncio.wait_for(self.flush(), self.settings.broker_session_timeout_s)
        for tp in revoked:
            self._to_commit.pop(tp, None)
        self.ledger.revoke(revoked)
        self.gaps.forget(revoked)

    async def start_offset(self, tp: TopicPartition) -> int:
        """Where the stage started reading ``tp``: its group's commit, else the partition's
        beginning (the consumer resets to the earliest record)."""
        committed = await self.consumer.committed(tp)
        if committed is not None:
            return int(committed)
        return int((await self.consumer.beginning_offsets([tp]))[tp])

    def report(self) -> None:
        """Update the stage's gauges (after each batch, and when there was none)."""

    def backlog(self) -> int:
        """Records of the stage's partitions not read yet (from the last fetch's high
        watermarks, or the end offsets listed while paused if larger; partitions not fetched
        yet count 0)."""
        consumer = self.consumer
        if consumer is None:
            return 0
        total = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            listed = self.listed_ends.get(tp)
            if listed is not None:
                high = listed if high is None else max(high, listed)
            read = self.ledger.committable(tp)
            if high is not None and read is not None:
                total += max(0, high - read)
        return total

    def rewind(self, batch: Batch) -> None:
        """Read ``batch``'s records again: each partition seeks back to its first record."""
        for tp, records in batch.items():
            if records and self.ledger.assigned(tp):
                self.consumer.seek(tp, records[0].offset)
                self.ledger.assign([tp])  # what it tracked is read again
                self.gaps.restart(tp, records[0].offset)

    async def contiguous(self, fetched: Batch) -> Batch:
        """The records of ``fetched`` that follow on from what was handled, with no hole
        before them; a partition with a hole is read again from it (core.fetch_gaps: the
        embedded broker can hand out a batch before an earlier one it acked is stored)."""
        for tp in fetched:
            if not self.gaps.follows(tp):  # from where it started reading: its first batch too
                self.gaps.restart(tp, await self.start_offset(tp))
        now_ms = int(time.monotonic() * 1000)
        batch: Batch = {}
        for tp, records in fetched.items():
            cut = self.gaps.cut(tp, [record.offset for record in records], now_ms)
            if cut.seek_to is not None:
                logger.info(
                    "%s: %s has no record at %d yet: read again", self.label, tp, cut.seek_to
                )
                self.consumer.seek(tp, cut.seek_to)
            kept = records[cut.skip : cut.skip + cut.keep]
            if kept:
                batch[tp] = kept
        return batch
