"""Reading a DLQ: ``DlqReader`` pages it in bounded batches (an index pass of coordinates, then a
page of records read back by offset), so a DLQ of millions of large entries never sits in
memory; ``read_dlq`` folds a small one whole (tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer

from walstream.core.dlq import (
    DlqCursor,
    DlqEntry,
    DlqIndex,
    DlqRef,
    DlqView,
    Selection,
    parse_dlq_record,
)
from walstream.dlq.kafka_io import request_timeouts
from walstream.errors import BrokerUnavailableError, WalError
from walstream.kafka import clients
from walstream.kafka.clients import assign_from_start, start_client, stop_consumer

__all__ = ["DEFAULT_PAGE", "DlqPage", "DlqReader", "flatten", "read_dlq"]


async def read_dlq(
    servers: str | list[str], topic: str, *, within_s: float = 30.0, keep_values: bool = True
) -> DlqView:
    """Fold a DLQ topic from its beginning to its current end, holding every open entry's
    record: for tests and small DLQs. Listings and redrives use DlqReader (bounded pages)."""
    consumer = clients.reader(servers, clients.DLQ_READER)
    view = DlqView()
    try:
        await start_client(consumer)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        tps = await assign_from_start(consumer, [topic], within_s=within_s)
        if not tps:
            return view
        pending = set(tps)
        while pending and loop.time() < deadline:
            batches = await consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    view.apply(
                        parse_dlq_record(
                            record.key,
                            record.value if keep_values else None,
                            record.headers or (),
                            partition=tp.partition,
                            offset=record.offset,
                        )
                    )
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    pending.discard(tp)
        if pending:
            raise WalError(f"DLQ {topic} could not be read to its end within {within_s}s")
    finally:
        await stop_consumer(consumer)
    return view


#: Records a DLQ reader holds at once, and a listing page's default size.
DEFAULT_PAGE = 100


@dataclass
class DlqPage:
    """One page of a listing: entries oldest first, the counts, the cursor of the next page."""

    entries: list[DlqEntry]
    open: int
    matching: int
    next: DlqCursor | None


def _consumer(
    servers: str | list[str], max_records: int, request_timeout_s: float | None = None
) -> AIOKafkaConsumer:
    return clients.reader(
        servers,
        clients.DLQ_READER,
        max_poll_records=max_records,
        **request_timeouts(request_timeout_s),
    )


class DlqReader:
    """Reads a DLQ in bounded batches: an index pass (coordinates of open entries only), then
    the records of one page at a time, read back by offset.

    ``largest_batch`` is the most records it has held at once (at most ``batch_records``).
    A broker that gives nothing for ``stall_s`` (down or hung after the reader started) is a
    ``BrokerUnavailableError`` (Retry-After: ``retry_after_s``); ``request_timeout_s`` bounds
    each request to the broker, its start included (None: aiokafka's 40 s).
    """

    def __init__(
        self,
        servers: str | list[str],
        *,
        batch_records: int = DEFAULT_PAGE,
        stall_s: float = 30.0,
        request_timeout_s: float | None = None,
        retry_after_s: float = 1.0,
    ) -> None:
        self.servers = servers
        self.batch_records = batch_records
        self.stall_s = stall_s
        self.request_timeout_s = request_timeout_s
        self.retry_after_s = retry_after_s
        self.largest_batch = 0

    def _consumer(self) -> AIOKafkaConsumer:
        return _consumer(self.servers, self.batch_records, self.request_timeout_s)

    def _stalled(self, what: str) -> BrokerUnavailableError:
        return BrokerUnavailableError(
            f"{what} (nothing for {self.stall_s:g} s)", self.retry_after_s
        )

    def _held(self, count: int) -> None:
        self.largest_batch = max(self.largest_batch, count)

    async def index(self, topic: str) -> DlqIndex:
        """Fold ``topic`` to its current end keeping coordinates only.

        Raises:
            BrokerUnavailableError: no progress for ``stall_s`` before the end.
        """
        consumer = self._consumer()
        index = DlqIndex()
        try:
            await start_client(consumer)  # inside: a cancel while starting still stops it
            loop = asyncio.get_running_loop()
            tps = await assign_from_start(consumer, [topic], within_s=self.stall_s)
            pending = set(tps)
            deadline = loop.time() + self.stall_s
            # the loop checks the deadline between batches; the guard holds it inside one too
            # (``position`` waits for as long as the broker does not answer)
            async with asyncio.timeout_at(deadline) as guard:
                while pending and loop.time() < deadline:
                    batches = await consumer.getmany(
                        *pending, timeout_ms=200, max_records=self.batch_records
                    )
                    self._held(sum(len(records) for records in batches.values()))
                    for tp, records in batches.items():
                        for record in records:
                            index.apply(
                                parse_dlq_record(
                                    record.key,
                                    None,
                                    record.headers or (),
                                    partition=tp.partition,
                                    offset=record.offset,
                                )
                            )
                    if batches:
                        deadline = loop.time() + self.stall_s
                        guard.reschedule(deadline)
                    del batches  # hold one batch at a time
                    for tp in list(pending):
                        highwater = consumer.highwater(tp)
                        if highwater is not None and await consumer.position(tp) >= highwater:
                            pending.discard(tp)
            if pending:
                raise TimeoutError
        except TimeoutError:
            raise self._stalled(f"DLQ {topic} could not be read to its end") from None
        finally:
            await stop_consumer(consumer)
        return index

    async def fetch(
        self, topic: str, refs: Sequence[DlqRef], *, keep_values: bool = True
    ) -> list[DlqEntry]:
        """The entries at ``refs`` (with their records, or without: ``keep_values``), in the
        order of ``refs``.

        Raises:
            BrokerUnavailableError: a record could not be read back within ``stall_s``.
        """
        if not refs:
            return []
        self._held(len(refs))
        consumer = self._consumer()
        found: dict[tuple[int, int], DlqEntry] = {}
        try:
            await start_client(consumer)
            tps = {
                tp.partition: tp
                for tp in await assign_from_start(consumer, [topic], within_s=self.stall_s)
            }
            wanted: dict[int, list[int]] = {}
            for ref in refs:
                wanted.setdefault(ref.partition, []).append(ref.offset)
            for partition, offsets in wanted.items():
                tp = tps.get(partition)
                if tp is None:
                    continue
                offsets.sort()
                await self._read_back(consumer, tp, offsets, found, keep_values)
        except TimeoutError:
            raise self._stalled(f"DLQ {topic}: entries could not be read back in time") from None
        finally:
            await stop_consumer(consumer)
        return [e for r in refs if (e := found.get((r.partition, r.offset))) is not None]

    async def _read_back(
        self,
        consumer: AIOKafkaConsumer,
        tp: Any,
        offsets: list[int],
        found: dict[tuple[int, int], DlqEntry],
        keep_values: bool,
    ) -> None:
        """Read the records at ``offsets`` (sorted) of one partition: forward through short
        gaps, seeking over long ones, a batch of at most ``batch_records`` at a time."""
        wanted = set(offsets)
        at = 0
        while at < len(offsets):
            target = offsets[at]
            async with asyncio.timeout(self.stall_s):  # position too: it waits for the broker
                position = await consumer.position(tp)
                if position > target or target - position > self.batch_records:
                    consumer.seek(tp, target)
                records: list[Any] = []
                while not records:
                    batch = await consumer.getmany(
                        tp, timeout_ms=200, max_records=self.batch_records
                    )
                    records = batch.get(tp, [])
            self._held(len(records))
            for record in records:
                if record.offset in wanted:
                    item = parse_dlq_record(
                        record.key,
                        record.value if keep_values else None,
                        record.headers or (),
                        partition=tp.partition,
                        offset=record.offset,
                    )
                    if isinstance(item, DlqEntry):
                        found[(tp.partition, record.offset)] = item
            end = records[-1].offset
            while at < len(offsets) and offsets[at] <= end:
                at += 1

    async def page(
        self,
        topic: str,
        selection: Selection,
        *,
        limit: int = DEFAULT_PAGE,
        after: DlqCursor | None = None,
        keep_values: bool = True,
    ) -> DlqPage:
        """One page of the open entries ``selection`` takes, oldest first, after ``after``
        (records read ``batch_records`` at a time; kept only with ``keep_values``)."""
        index = await self.index(topic)
        refs, matching, following = index.page(selection, limit, after)
        entries: list[DlqEntry] = []
        for start in range(0, len(refs), self.batch_records):
            batch = refs[start : start + self.batch_records]
            entries += await self.fetch(topic, batch, keep_values=keep_values)
        return DlqPage(entries=entries, open=len(index), matching=matching, next=following)

    async def pages(
        self, topic: str, refs: Sequence[DlqRef], *, keep_values: bool = True
    ) -> AsyncIterator[list[DlqEntry]]:
        """The entries at ``refs`` (from one index pass), a batch of records at a time."""
        for start in range(0, len(refs), self.batch_records):
            batch = refs[start : start + self.batch_records]
            yield await self.fetch(topic, batch, keep_values=keep_values)


async def flatten(pages: AsyncIterable[list[DlqEntry]]) -> AsyncIterator[DlqEntry]:
    """The entries of ``pages`` one by one."""
    async for page in pages:
        for entry in page:
            yield entry
