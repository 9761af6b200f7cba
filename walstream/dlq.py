"""DLQ operations: read a namespace's DLQ, redrive entries to its log, discard them.

Redrive republishes each selected entry to the namespace's log as it was (same id, token, key,
payload, original write time) with attempts reset and its history kept, then appends a
``redriven`` marker so the entry is no longer open. Log first, marker second: a crash in between
leaves the entry open, and redriving it again delivers it twice, which targets absorb (they are
idempotent on the token).

One redrive per namespace at a time, across processes: a redrive first appends a **claim** to
partition 0 of the DLQ topic, then reads the topic (its index pass); if an earlier claim there is
still live (not released, renewed within its lease), it releases its own and fails with 409. A
running redrive renews its claim every third of ``CLAIM_LEASE_MS`` and releases it when it ends;
a redrive whose process died holds the namespace for one lease at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    NoBrokersAvailable,
    NodeNotReadyError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)

from walstream.aio import cancel_and_wait
from walstream.clock import Clock, SystemClock
from walstream.core import outbox
from walstream.core.dlq import (
    DlqCursor,
    DlqEntry,
    DlqIndex,
    DlqRef,
    DlqView,
    MarkerKind,
    Selection,
    parse_dlq_record,
)
from walstream.errors import (
    BrokerUnavailableError,
    PoisonRecordError,
    RedriveConflictError,
    WalError,
)
from walstream.kafka import clients
from walstream.kafka.clients import assign_from_start, start_client, stop_consumer
from walstream.kafka.log_reader import LogReader, RecordGoneError
from walstream.namespaces.config import NamespaceConfig
from walstream.records import decode_envelope

__all__ = [
    "CLAIM_LEASE_MS",
    "DEFAULT_PAGE",
    "DlqAccess",
    "DlqPage",
    "DlqReader",
    "RedriveProgress",
    "RedriveState",
    "Redrives",
    "claimed_dlq",
    "discard",
    "entry_json",
    "flatten",
    "read_dlq",
    "redrive",
    "source_reader",
    "unavailable_broker",
]

logger = logging.getLogger(__name__)


#: How long a redrive's claim holds its namespace's DLQ without a renewal.
CLAIM_LEASE_MS = 30_000

#: What aiokafka raises when the broker does not answer: down (connection refused), hung (a
#: request timed out), or no metadata in time (``UnknownTopicOrPartitionError``, aiokafka's
#: word for it, which a stopped broker causes as well as a missing topic); ``TimeoutError``:
#: a reader's bound on a broker that gives nothing (``DlqReader.stall_s``).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    KafkaConnectionError,
    KafkaTimeoutError,
    RequestTimedOutError,
    NodeNotReadyError,
    NoBrokersAvailable,
    LeaderNotAvailableError,
    NotLeaderForPartitionError,
    UnknownTopicOrPartitionError,
    TimeoutError,
)


@contextlib.contextmanager
def unavailable_broker(retry_after_s: float) -> Iterator[None]:
    """Turn a broker that does not answer into ``BrokerUnavailableError`` (HTTP 503 with
    Retry-After: ``retry_after_s``): the one place the DLQ's API paths map aiokafka's
    connection and timeout errors."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise BrokerUnavailableError(f"{type(exc).__name__}: {exc}", retry_after_s) from exc


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


def _timeouts(request_timeout_s: float | None) -> dict[str, Any]:
    """A client's request timeout (None: aiokafka's 40 s), which also bounds its start and its
    waits for metadata."""
    if request_timeout_s is None:
        return {}
    return {"request_timeout_ms": max(1000, int(request_timeout_s * 1000))}


def _consumer(
    servers: str | list[str], max_records: int, request_timeout_s: float | None = None
) -> AIOKafkaConsumer:
    return clients.reader(
        servers, clients.DLQ_READER, max_poll_records=max_records, **_timeouts(request_timeout_s)
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


class RedriveState(Enum):
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass
class RedriveProgress:
    """Where a redrive is (shared with whoever watches it)."""

    namespace: str
    total: int
    redriven: int = 0
    skipped: list[str] = field(default_factory=list)
    state: RedriveState = RedriveState.RUNNING
    error: str | None = None
    started_at_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "state": self.state.value,
            "total": self.total,
            "redriven": self.redriven,
            "skipped": self.skipped,
            "error": self.error,
            "started_at_ms": self.started_at_ms,
        }


async def redrive(
    producer: Any,
    ns: NamespaceConfig,
    entries: Sequence[DlqEntry] | AsyncIterable[DlqEntry],
    progress: RedriveProgress,
    *,
    rate: float | None = None,
    target: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    on_step: Callable[[RedriveProgress], None] | None = None,
    read_source: ReadSource | None = None,
) -> RedriveProgress:
    """Republish ``entries`` to the namespace's log, at most ``rate`` per second.

    Entries that are not records (poison) are skipped and named in ``progress.skipped``. An
    entry the DLQ took without its record is redriven from its source, read back with
    ``read_source`` (the log keeps it); if the source no longer has it, the key it holds is
    settled (its next records go on) and the entry is left open, named in ``skipped``.
    """
    clock = clock or SystemClock()
    progress.started_at_ms = clock.now_ms()
    started = time.monotonic()
    try:
        async for entry in _each(entries):  # a page of records at a time (DlqReader.pages)
            value = entry.value
            if value is None:
                value = await _from_source(producer, ns, entry, read_source, progress)
                if value is None:
                    continue
            try:
                env = decode_envelope(value)
            except PoisonRecordError as exc:
                progress.skipped.append(f"{entry.id}: {exc.reason}")
                continue
            if entry.value is None and env.id != entry.id:
                progress.skipped.append(
                    f"{entry.id}: its source {entry.source} holds another record ({env.id})"
                )
                continue
            await _send(producer, outbox.redriven(env, ns.topics.log, target))  # a fresh start
            await _close(producer, ns, entry, MarkerKind.REDRIVEN, clock.now_ms())
            progress.redriven += 1
            if on_step is not None:
                on_step(progress)
            if rate:
                ahead = progress.redriven / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    except asyncio.CancelledError:
        progress.state = RedriveState.CANCELLED
        raise
    except Exception as exc:
        progress.state = RedriveState.FAILED
        progress.error = f"{type(exc).__name__}: {exc}"
        raise
    progress.state = RedriveState.DONE
    return progress


#: Reads a record's value back from (topic, partition, offset); raises RecordGoneError.
ReadSource = Callable[[str, int, int], Awaitable[bytes | None]]


async def _from_source(
    producer: Any,
    ns: NamespaceConfig,
    entry: DlqEntry,
    read_source: ReadSource | None,
    progress: RedriveProgress,
) -> bytes | None:
    """The record of an entry written without it, read back from its source (None: skipped,
    named in ``progress.skipped``)."""
    where = entry.source_coordinates()
    if where is None or entry.poison:
        progress.skipped.append(f"{entry.id}: no record in the entry, no source to read it from")
        return None
    if read_source is None:
        progress.skipped.append(f"{entry.id}: no record in the entry (read it at {entry.source})")
        return None
    try:
        value = await read_source(*where)
    except RecordGoneError:
        value = None
    except Exception as exc:  # noqa: BLE001 - the source may answer later: the entry stays open
        progress.skipped.append(
            f"{entry.id}: its record could not be read from {entry.source} ({exc!r}); "
            "left open, redrive it again"
        )
        return None
    if value is None:
        settled = await _settle_key(producer, ns, entry)
        logger.error(
            "DLQ entry %s of %s has no record and its source %s no longer holds it%s",
            entry.id,
            ns.name,
            entry.source,
            f"; key {settled!r} settled" if settled is not None else "",
        )
        progress.skipped.append(
            f"{entry.id}: RECORD LOST: not in the entry and gone from its source {entry.source}"
            + (f"; key {settled!r} settled (its next records go on)" if settled else "")
            + "; the entry stays open: discard it"
        )
    return value


async def _each(
    entries: Sequence[DlqEntry] | AsyncIterable[DlqEntry],
) -> AsyncIterator[DlqEntry]:
    if isinstance(entries, AsyncIterable):
        async for entry in entries:
            yield entry
    else:
        for entry in entries:
            yield entry


async def flatten(pages: AsyncIterable[list[DlqEntry]]) -> AsyncIterator[DlqEntry]:
    """The entries of ``pages`` one by one."""
    async for page in pages:
        for entry in page:
            yield entry


async def discard(
    producer: Any, ns: NamespaceConfig, entries: Sequence[DlqEntry], clock: Clock | None = None
) -> int:
    """Close entries without redriving them; return how many.

    Each discarded record with a key gets a settle marker too: a key held behind it (per-key
    ordering, ``on_dlq = "hold"``) goes on with its next record. The worker ignores the marker
    when the key is not held by that record (or the namespace is not ordered)."""
    clock = clock or SystemClock()
    for entry in entries:
        await _settle_key(producer, ns, entry)
        await _close(producer, ns, entry, MarkerKind.DISCARDED, clock.now_ms())
    return len(entries)


async def _settle_key(producer: Any, ns: NamespaceConfig, entry: DlqEntry) -> str | None:
    """Send the settle marker of the key ``entry``'s record may hold; return the key (None:
    keyless, or not a record). The key is the entry's ``wal-key`` header (an entry written
    without its record has only that), else the record's."""
    key = entry.key
    if key is None:
        try:
            key = decode_envelope(entry.value).key
        except PoisonRecordError:
            return None  # not a record, and no key named: it never headed a key
    if key is None:
        return None
    partition = entry.partition if entry.partition >= 0 else None
    await _send(
        producer, outbox.settle_marker(ns.topics.retry, ns.name, entry.id, key.encode(), partition)
    )
    return key


async def _close(
    producer: Any, ns: NamespaceConfig, entry: DlqEntry, kind: MarkerKind, now_ms: int
) -> None:
    """Append the marker that closes ``entry``, naming it by its coordinates (on its
    partition, so it follows the entry)."""
    marker = outbox.dlq_close_marker(
        ns.topics.dlq, entry.id, entry.partition, entry.offset, kind, now_ms
    )
    await _send(producer, marker)


async def _send(producer: Any, record: outbox.OutRecord) -> Any:
    """Send what the outbox built (no timestamp: the DLQ tools' records have none); return the
    broker's record metadata once acknowledged."""
    return await producer.send_and_wait(
        record.topic,
        record.value,
        key=record.key,
        partition=record.partition,
        headers=record.headers,
    )


def entry_json(entry: DlqEntry, *, with_record: bool = False) -> dict[str, Any]:
    """An entry as the CLI and the HTTP API show it."""
    body: dict[str, Any] = {
        "id": entry.id,
        "namespace": entry.namespace,
        "dead_at_ms": entry.dead_at_ms,
        "error_class": entry.error_class,
        "reason": entry.reason,
        "attempts": entry.attempts,
        "source": entry.source,
        "origin": entry.origin,
        "behind": list(entry.behind),
    }
    if with_record:
        try:
            env = decode_envelope(entry.value)
        except PoisonRecordError as exc:
            body["record"] = None
            body["raw"] = (entry.value or b"")[:4096].decode("utf-8", "replace")
            body["undecodable"] = exc.reason
        else:
            body["record"] = {
                "key": env.key,
                "payload": env.payload,
                "payload_encoding": env.payload_encoding,
                "target": dict(env.target),
                "idempotency_token": env.idempotency_token,
                "original_write_time_ms": env.lifecycle.original_write_time_ms,
                "created_at_ms": env.created_at_ms,
                "history": [h._asdict() for h in env.history],
            }
    return body


class DlqAccess:
    """What the API needs for DLQ endpoints: paged reads, and this process's redrives.

    A broker that does not answer is a ``BrokerUnavailableError`` (503, Retry-After:
    ``retry_after_s``), never a wait beyond ``request_timeout_s`` per request to the broker
    (its clients' start and metadata waits included; None: aiokafka's 40 s) or a read that
    gives nothing for ``stall_s``.
    """

    def __init__(
        self,
        servers: str | list[str],
        *,
        batch_records: int = DEFAULT_PAGE,
        request_timeout_s: float | None = None,
        retry_after_s: float = 1.0,
        stall_s: float = 30.0,
    ) -> None:
        self.servers = servers
        self.retry_after_s = retry_after_s
        self.reader = DlqReader(
            servers,
            batch_records=batch_records,
            stall_s=stall_s,
            request_timeout_s=request_timeout_s,
            retry_after_s=retry_after_s,
        )
        self.redrives = Redrives(servers, request_timeout_s=request_timeout_s)

    async def page(
        self, topic: str, selection: Selection, *, limit: int, after: DlqCursor | None
    ) -> DlqPage:
        """A listing page (entries without their records: a listing shows no payloads).

        Raises:
            BrokerUnavailableError: the broker did not answer.
        """
        with unavailable_broker(self.retry_after_s):
            return await self.reader.page(
                topic, selection, limit=limit, after=after, keep_values=False
            )

    async def selected(self, topic: str, selection: Selection) -> list[DlqRef]:
        """Coordinates of the open entries ``selection`` takes, oldest first (no records).

        Raises:
            BrokerUnavailableError: the broker did not answer.
        """
        with unavailable_broker(self.retry_after_s):
            return (await self.reader.index(topic)).select(selection)

    async def start_redrive(
        self,
        ns: NamespaceConfig,
        selection: Selection,
        *,
        rate: float | None,
        target: Mapping[str, Any] | None,
    ) -> RedriveProgress:
        """Claim the namespace's DLQ, then redrive what ``selection`` takes in the background.

        Raises:
            RedriveConflictError: a redrive of the namespace runs here or in another process.
            BrokerUnavailableError: the broker did not answer.
        """
        with unavailable_broker(self.retry_after_s):
            return await self._start_redrive(ns, selection, rate=rate, target=target)

    async def _start_redrive(
        self,
        ns: NamespaceConfig,
        selection: Selection,
        *,
        rate: float | None,
        target: Mapping[str, Any] | None,
    ) -> RedriveProgress:
        redrives = self.redrives
        redrives.check_local(ns.name)
        claim = await redrives.claim(ns)
        try:
            index = await self.reader.index(ns.topics.dlq)
            holder = index.claims.holder_before(claim)
            if holder is not None:
                raise RedriveConflictError(
                    f"a redrive of {ns.name} is already running (claim {holder} on its DLQ)"
                )
            refs = index.select(selection)
            entries = flatten(self.reader.pages(ns.topics.dlq, refs))
            return await redrives.start(
                ns, entries, rate=rate, target=target, total=len(refs), claim=claim
            )
        except BaseException:
            await redrives.release(ns, claim)
            raise

    async def close(self) -> None:
        await self.redrives.close()


class Redrives:
    """The redrives this process runs: one per namespace at a time, cancellable."""

    def __init__(
        self,
        servers: str | list[str],
        clock: Clock | None = None,
        *,
        request_timeout_s: float | None = None,
    ) -> None:
        self.servers = servers
        self.clock = clock or SystemClock()
        #: bounds the producer's start, its metadata waits and acks (None: aiokafka's 40 s)
        self.request_timeout_s = request_timeout_s
        self._tasks: dict[str, asyncio.Task[RedriveProgress]] = {}
        self._progress: dict[str, RedriveProgress] = {}
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._reader: LogReader | None = None

    async def read_source(self, topic: str, partition: int, offset: int) -> bytes | None:
        """A record's value at its source (an entry the DLQ took without it).

        Raises:
            RecordGoneError: the log no longer holds it.
        """
        if self._reader is None:
            self._reader = LogReader(self.servers, client_id=clients.ClientIds.DLQ_SOURCE)
        return (await self._reader.read(topic, partition, offset)).value

    async def producer(self) -> AIOKafkaProducer:
        """The redrive producer, started on first use.

        Only a started producer is kept: one whose start failed (the broker down) is closed,
        and the next call starts a new one. An unstarted aiokafka producer waits for metadata
        forever (no background sync runs), even once the broker is back.
        """
        async with self._starting:  # one start at a time: no second producer left unclosed
            if self._producer is None:
                spec = clients.REDRIVE
                producer = clients.acked_producer(
                    self.servers,
                    client_id=spec.client_id,
                    **spec.options,
                    **_timeouts(self.request_timeout_s),
                )
                try:
                    await start_client(producer)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await producer.stop()  # what the failed start opened
                    raise
                self._producer = producer
            return self._producer

    def status(self, namespace: str) -> RedriveProgress | None:
        return self._progress.get(namespace)

    def check_local(self, namespace: str) -> None:
        """
        Raises:
            RedriveConflictError: this process runs a redrive of ``namespace``.
        """
        running = self._tasks.get(namespace)
        if running is not None and not running.done():
            raise RedriveConflictError(f"a redrive of {namespace} is already running")

    async def _claim_record(self, ns: NamespaceConfig, claim: str, *, released: bool) -> int:
        producer = await self.producer()
        record = outbox.redrive_claim(
            ns.topics.dlq, claim, self.clock.now_ms(), CLAIM_LEASE_MS, released=released
        )
        sent = await _send(producer, record)
        return int(sent.offset)

    async def claim(self, ns: NamespaceConfig) -> str:
        """Append a fresh claim on the namespace's DLQ; return its id."""
        claim = uuid.uuid4().hex
        await self._claim_record(ns, claim, released=False)
        return claim

    async def release(self, ns: NamespaceConfig, claim: str) -> None:
        """Release ``claim`` (logged, never raised: the lease runs out anyway)."""
        try:
            await self._claim_record(ns, claim, released=True)
        except Exception as exc:  # noqa: BLE001 - the claim's lease ends it anyway
            logger.warning("redrive claim %s of %s not released: %s", claim, ns.name, exc)

    async def renew(self, ns: NamespaceConfig, claim: str) -> None:
        """Renew ``claim`` every third of its lease, until cancelled."""
        while True:
            await asyncio.sleep(CLAIM_LEASE_MS / 3000)
            try:
                await self._claim_record(ns, claim, released=False)
            except Exception as exc:  # noqa: BLE001 - try again at the next renewal
                logger.warning("redrive claim %s of %s not renewed: %s", claim, ns.name, exc)

    async def _claimed(
        self, ns: NamespaceConfig, claim: str, work: Awaitable[RedriveProgress]
    ) -> RedriveProgress:
        """Run ``work`` renewing ``claim`` every third of its lease; release it at the end."""

        renewing = asyncio.create_task(self.renew(ns, claim), name=f"redrive-claim-{ns.name}")
        try:
            return await work
        finally:
            await cancel_and_wait(renewing)
            await asyncio.shield(self.release(ns, claim))

    async def start(
        self,
        ns: NamespaceConfig,
        entries: Sequence[DlqEntry] | AsyncIterable[DlqEntry],
        *,
        rate: float | None,
        target: Mapping[str, Any] | None,
        total: int | None = None,
        claim: str | None = None,
    ) -> RedriveProgress:
        """Start redriving ``entries`` (``total`` of them) in the background, holding ``claim``
        (renewed, released at the end) when given.

        Raises:
            RedriveConflictError: one is already running for this namespace in this process.
        """
        self.check_local(ns.name)
        producer = await self.producer()
        if total is None:
            total = len(entries) if isinstance(entries, Sequence) else 0
        progress = RedriveProgress(namespace=ns.name, total=total)
        self._progress[ns.name] = progress
        work = redrive(
            producer, ns, entries, progress, rate=rate, target=target, read_source=self.read_source
        )
        task = asyncio.create_task(
            work if claim is None else self._claimed(ns, claim, work),
            name=f"redrive-{ns.name}",
        )
        task.add_done_callback(_log_outcome)
        self._tasks[ns.name] = task
        return progress

    async def cancel(self, namespace: str) -> RedriveProgress | None:
        task = self._tasks.get(namespace)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return self._progress.get(namespace)

    async def close(self) -> None:
        for name in list(self._tasks):
            await self.cancel(name)
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()


@contextlib.asynccontextmanager
async def source_reader(servers: str | list[str]) -> AsyncIterator[ReadSource]:
    """``redrive``'s ``read_source`` for a one-off redrive (the CLI's), stopped at the end."""
    reader = LogReader(servers, client_id=clients.ClientIds.DLQ_SOURCE)

    async def read(topic: str, partition: int, offset: int) -> bytes | None:
        return (await reader.read(topic, partition, offset)).value

    try:
        yield read
    finally:
        await reader.stop()


def _log_outcome(task: asyncio.Task[RedriveProgress]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("redrive failed: %s", exc)


@contextlib.asynccontextmanager
async def claimed_dlq(
    servers: str | list[str], ns: NamespaceConfig, reader: DlqReader | None = None
) -> AsyncIterator[DlqIndex]:
    """Hold the namespace's DLQ for a one-off redrive (the CLI's): claim it, read its index,
    renew the claim while the block runs, release it at the end.

    Raises:
        RedriveConflictError: a redrive of the namespace runs in another process.
    """
    redrives = Redrives(servers)
    try:
        claim = await redrives.claim(ns)
        try:
            index = await (reader or DlqReader(servers)).index(ns.topics.dlq)
            holder = index.claims.holder_before(claim)
            if holder is not None:
                raise RedriveConflictError(
                    f"a redrive of {ns.name} is already running (claim {holder} on its DLQ)"
                )
            renewing = asyncio.create_task(redrives.renew(ns, claim), name="redrive-claim")
            try:
                yield index
            finally:
                await cancel_and_wait(renewing)
        finally:
            await asyncio.shield(redrives.release(ns, claim))
    finally:
        await redrives.close()
