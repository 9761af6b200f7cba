"""walstream's Faust transport (URL scheme ``walkafka://``): Faust's aiokafka driver, five changes.

* Table recovery reads corrected end offsets (WALSTREAM_CORRECT_END_OFFSETS; see
  walstream.kafka.offsets for the broker bug). Only ``highwaters()`` changes, and Faust calls it
  when it recovers tables, so steady-state consuming and producing are untouched. On Kafka the
  correction finds nothing to correct.
* The worker consumer's fetch wait is WALSTREAM_CONSUMER_FETCH_MAX_WAIT_MS instead of Faust's
  fixed 1500 ms. Tansu answers a waiting fetch only when the wait ends, not when data arrives
  (measured: a record waited 452 ms median at 1500 ms, 5 ms at 50 ms), and every hop of a retry
  or a delay passes through one such fetch. On Kafka, which answers as soon as data arrives, a
  longer wait only saves idle fetch requests.
* The worker consumer commits through an offset ledger (walstream.core.offsets): a partition's
  commit stops at the lowest offset handed to a stream and not acked, so it never passes a
  record still in flight, one whose handler raised, or one dropped at a rebalance or a stop.
  Faust's own rule does not (faust-streaming 0.15.3, ``Consumer._new_offset``)::

      committed_offset = self._committed_offset[tp]
      if committed_offset:
          if min(acked) - committed_offset > 1:
              return None
      ...
      batch = next(consecutive_numbers(acked))

  It looks only at acked offsets: with nothing committed yet (or 0) it commits past any gap,
  and otherwise it passes exactly one unacked record at the frontier. The ledger learns what
  was handed over where Faust records it, the consumer's pending-ack set (streams.py: "This
  inlines Consumer.track_message(message)": ``add_unacked(message)``, with
  ``add_unacked = consumer.unacked.add``; the Cython stream takes
  ``self.consumer._unacked_messages`` and calls ``.add`` the same way), and what was acked
  from Faust's ``_acked`` lists, which both ack paths fill (``Consumer.ack`` and the Cython
  stream's inlined copy of it). Topics whose channels do not ack (table changelogs) keep
  Faust's rule. A rebalance first lets revoke listeners (the delivery agents) drop queued
  records of the revoked partitions and bound the wait for those in flight; Faust's own wait
  for unacked records is bounded too (WALSTREAM_DELIVER_REVOKE_WAIT_S). The revoke-time commit
  then covers every partition the ledger tracks, the revoked ones included: Faust drops their
  acked lists first and would commit none of them (``_filter_tps_with_pending_acks``), so the
  records acked since the last periodic commit were delivered again by the next owner.

* A partition paused while a fetched batch is handed out (the delivery agents pause a hot key's
  partition) stops from the next fetch. Faust's ``getmany`` yields a batch's record only while
  its partition is in the *live* set of active partitions, and aiokafka's position has already
  passed the whole batch: the rest of the paused partition's batch was never handed over, and
  the commit then passed it. The batch now keeps the set it was fetched with; aiokafka keeps
  the records it buffered for a paused partition (position unmoved) until it is resumed.
* A rebalance suspends the flow before the revoke listeners run (Faust suspends it only after
  them): a stream then takes no more records of the partitions being revoked, so nothing
  starts after the listeners gave those partitions up.

Registered through the ``faust.transports`` entry point.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from walstream.core.offsets import OffsetLedger
from walstream.kafka.offsets import probe_end_offsets
from walstream.settings import Settings

__all__ = ["AssignListener", "Consumer", "ConsumerThread", "RevokeListener", "Transport"]

logger = logging.getLogger(__name__)

#: Called with the revoked partitions before Faust waits for unacked records; returns the
#: messages it gave up on (dropped before they started, or cancelled), which are not acked.
RevokeListener = Callable[[set[TP]], Awaitable[Iterable[Message]]]
#: Called with the assigned partitions before Faust's own assignment callbacks.
AssignListener = Callable[[set[TP]], None]


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The aiokafka consumer thread with corrected highwaters and walstream's fetch wait."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.walstream_settings = Settings.from_env()

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes a fixed 1500 ms; aiokafka reads this attribute when the consumer starts.
        consumer._fetch_max_wait_ms = self.walstream_settings.consumer_fetch_max_wait_ms
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        reported: Mapping[TP, int] = await super()._highwaters(partitions)
        if not self.walstream_settings.correct_end_offsets or self.consumer.in_transaction:
            return reported  # last stable offsets come from fetches already
        transport: Any = self.transport  # the aiokafka Transport, which has default_port
        servers = faust_aiokafka.server_list(transport.url, transport.default_port)
        corrected = await probe_end_offsets(servers, {tp: int(v) for tp, v in reported.items()})
        return {TP(tp.topic, tp.partition): offset for tp, offset in corrected.items()}


class _PendingAcks(weakref.WeakSet[Message]):
    """Faust's set of messages handed to streams and not acked; ``add`` also tells the ledger."""

    def __init__(self, on_add: Callable[[Message], None]) -> None:
        super().__init__()
        self._on_add = on_add

    def add(self, item: Message) -> None:
        super().add(item)
        self._on_add(item)


def _keep_queues_on_resume(flow: Any) -> None:
    """Make ``flow.resume()`` (mode's FlowControlEvent) stop emptying the agents' queues.

    Faust's recovery resumes the stream partitions, seeks them to their committed offsets and
    only then resumes the flow (``Recovery.on_recovery_completed``), and ``resume()`` empties
    every channel queue (``clear_on_resume``) and cancels the puts waiting on full ones. The
    flow was already active (resumed for the changelog reads), so records fetched during the
    seek sat in those queues with aiokafka's position and Faust's read offset past them: emptied,
    no stream ever took them, the ledger never knew them, and the commit passed them once later
    records were acked (chaos test: a replacement worker began at committed + 1 and the record
    at the committed offset, the head of a key, was lost with the 50 records parked behind it).
    A rebalance still empties the queues: it calls ``flow_control.clear()`` itself, and a stale
    record left over is skipped by its generation."""

    def resume() -> None:
        flow._suspend.clear()
        flow._resume.set()

    flow.resume = resume


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, running :class:`ConsumerThread`, committing by the ledger."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.walstream_settings = Settings.from_env()
        self.ledger: OffsetLedger[TP] = OffsetLedger()
        self._unacked_messages = _PendingAcks(self._track)
        self._revoke_listeners: list[RevokeListener] = []
        self._assign_listeners: list[AssignListener] = []
        _keep_queues_on_resume(self.app.flow_control)

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def add_revoke_listener(self, listener: RevokeListener) -> None:
        """Call ``listener`` first when partitions are revoked (see :data:`RevokeListener`)."""
        self._revoke_listeners.append(listener)

    def remove_revoke_listener(self, listener: RevokeListener) -> None:
        """Stop calling ``listener``."""
        if listener in self._revoke_listeners:
            self._revoke_listeners.remove(listener)

    def add_assign_listener(self, listener: AssignListener) -> None:
        """Call ``listener`` first when partitions are assigned."""
        self._assign_listeners.append(listener)

    def remove_assign_listener(self, listener: AssignListener) -> None:
        """Stop calling ``listener``."""
        if listener in self._assign_listeners:
            self._assign_listeners.remove(listener)

    def abandon(self, message: Message) -> None:
        """Forget ``message``, handed to a stream and given up unacked (a revoked partition's):
        Faust does not wait for it, and the commit stays before it (the next owner reads it)."""
        self._unacked_messages.discard(message)

    async def _wait_next_records(
        self,
        timeout: float,  # noqa: ASYNC109 (Faust's signature)
    ) -> tuple[Any, set[TP] | None]:
        """Faust's fetch; the partitions it returns are those of the batch fetched. ``getmany``
        yields a batch's record only if its partition is in that set, and Faust returns its
        live set of active partitions, from which ``pause_partitions`` removes a partition at
        once: the rest of the batch of a partition paused while the batch was handed out was
        dropped, though aiokafka's position had passed it (and the commit then did). Every
        record fetched is now handed out; a pause applies from the next fetch (aiokafka keeps
        what it buffered for a paused partition, its position unmoved), and a rebalance still
        ends a batch (Faust checks the flow and the generation before each record)."""
        records, active = await super()._wait_next_records(timeout)
        if active is None or not records:
            return records, active
        return records, set(records)

    def _track(self, message: Message) -> None:
        if not self.app.topics.acks_enabled_for(message.topic):
            return
        committed = self._committed_offset.get(message.tp)
        if committed is not None and message.offset < committed:
            # Handed over again below the offset committed already: Faust's fetch loop passes
            # the last record it read once more after a partition is fetched again from an
            # earlier position (``_drain_messages``: ``offset >= r_offset``), and its ack then
            # drops the second ack (``Consumer.ack``: ``offset >= committed`` only). Tracked,
            # it stayed outstanding for good and held the partition's commit there.
            logger.debug(
                "%s[%d]@%d handed over again below the commit", *message.tp, message.offset
            )
            return
        self.ledger.track(message.tp, message.offset)

    def _take_acks(self, tp: TP) -> None:
        """Move the offsets Faust recorded as acked for ``tp`` into the ledger."""
        acked = self._acked.get(tp)
        if acked:
            for offset in acked:
                self.ledger.ack(tp, offset)
            acked.clear()
            self._acked_index[tp].clear()

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        """The partitions a commit looks at: Faust's (those with an acked list) and every one
        the ledger tracks. Faust's rebalance drops the acked lists of revoked partitions
        (``Consumer.on_partitions_revoked``: ``self._acked.pop(tp, None)``) before it commits
        at the revoke (``_on_partitions_revoked`` -> ``wait_empty`` -> ``commit``), and its
        commit iterates only those lists (``for tp in self._acked``): what was acked since the
        last periodic commit was never committed, and the partition's next owner delivered it
        again. The ledger keeps a revoked partition until that commit is done."""
        tps = {*self._acked, *self.ledger.partitions()}
        return (tp for tp in tps if topics is None or tp in topics or tp.topic in topics)

    def _new_offset(self, tp: TP) -> int | None:
        if not self.app.topics.acks_enabled_for(tp.topic):
            return super()._new_offset(tp)
        self._take_acks(tp)
        if not self.ledger.assigned(tp):
            self._acked.pop(tp, None)  # acked after its partition was revoked: nothing to commit
            return None
        return self.ledger.committable(tp)

    async def perform_seek(self) -> None:
        """Faust's seek of every partition to its committed offset, without moving Faust's read
        offset back below a record already passed on in this assignment. Faust's fetch loop
        drops a record below its read offset, and this seek runs while the flow is active (the
        end of a recovery): the records fetched meanwhile are queued for the agents already
        (see :func:`_keep_queues_on_resume`), so those fetched again after the seek are dropped
        rather than handed over twice. A rebalance forgets the read offsets of the revoked
        partitions first (``Consumer.on_partitions_revoked``)."""
        read_offset = self._read_offset
        committed = await self.seek_to_committed()
        for tp, offset in committed.items():
            new = offset if offset is not None and offset >= 0 else None
            passed = read_offset.get(tp)
            if new is None or passed is None or new > passed:
                read_offset[tp] = new
        self._committed_offset.update(
            {
                TP(tp.topic, tp.partition): offset or None
                for tp, offset in committed.items()
                if offset is not None
            }
        )

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        if revoked and not self.app.should_stop and self.assignment():
            # Faust suspends the flow (and clears the agents' buffers) only after the revoke
            # listeners: until then a stream kept taking records of the partitions they had
            # just given up, and started them while a record of the same key still ran.
            self.stop_flow()
            self.app.flow_control.suspend()
            self.app.flow_control.clear()
        for tp in revoked:
            self._take_acks(tp)  # Faust forgets its acked lists of revoked partitions first
        for listener in list(self._revoke_listeners):
            abandoned = await listener(revoked)
            for message in abandoned:
                self._unacked_messages.discard(message)  # not acked: the new owner re-reads it
        # Faust then waits for the streams (wait_empty) and commits what the ledger allows.
        await super().on_partitions_revoked(revoked)
        self.ledger.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        # Each assigned partition is read again from its committed offset.
        self.ledger.assign(assigned)
        for assign_listener in list(self._assign_listeners):
            assign_listener(assigned)
        await super().on_partitions_assigned(assigned, generation_id)

    async def wait_empty(self) -> None:
        """Faust's wait for every unacked record, bounded by WALSTREAM_DELIVER_REVOKE_WAIT_S:
        records still unacked then are not committed, and their next owner reads them again."""
        deadline = time.monotonic() + self.walstream_settings.deliver_revoke_wait_s
        while not self.should_stop and self._unacked_messages:
            if time.monotonic() >= deadline:
                logger.warning(
                    "%d records still unacked after %.1f s; not committed (they are read again)",
                    len(self._unacked_messages),
                    self.walstream_settings.deliver_revoke_wait_s,
                )
                break
            await self.commit()
            if not self._unacked_messages:
                break
            await self._wait_for_ack(timeout=1)
            self._clean_unacked_messages()
        await self.commit_and_end_transactions()


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`Consumer`."""

    Consumer: ClassVar[Any] = Consumer
