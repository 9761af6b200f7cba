"""Redriving DLQ entries: republish each to its namespace's log as it was, then close it (log
first, marker second: a crash in between redrives it twice, which targets absorb); an entry
written without its record is redriven from its source, read back from the log. A dead-lettered
transaction (issue 18) is redriven by its completion marker, sent again to the namespace's
markers topic (walstream.core.dlq.mutations); a crash in between sends it twice, which the
commit agent absorbs (the second redrive resumes from the first unapplied seq)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from walstream.clock import Clock, SystemClock
from walstream.core import outbox
from walstream.core.dlq import DlqEntry, MarkerKind, redrive_marker
from walstream.dlq.closing import close_entry, settle_key
from walstream.dlq.kafka_io import send
from walstream.errors import PoisonRecordError
from walstream.kafka import clients
from walstream.kafka.log_reader import LogReader, RecordGoneError
from walstream.namespaces.config import NamespaceConfig
from walstream.records import decode_envelope
from walstream.topology import mutation_topics

__all__ = ["ReadSource", "RedriveProgress", "RedriveState", "redrive", "source_reader"]

#: the package's name, as before the split: log filters on ``walstream.dlq`` still match
logger = logging.getLogger("walstream.dlq")


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
    #: the region whose DLQ is redriven (None: the namespace's own DLQ)
    region: str | None = None

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"namespace": self.namespace}
        if self.region is not None:
            shown["region"] = self.region
        shown.update(
            {
                "state": self.state.value,
                "total": self.total,
                "redriven": self.redriven,
                "skipped": self.skipped,
                "error": self.error,
                "started_at_ms": self.started_at_ms,
            }
        )
        return shown


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

    Entries that are not records (poison) are skipped and named in ``progress.skipped``. A
    dead-lettered transaction's entry sends its marker again to the namespace's markers topic
    (its other mutation entries, single bad records, are skipped). An
    entry the DLQ took without its record is redriven from its source, read back with
    ``read_source`` (the log keeps it); if the source no longer has it, the key it holds is
    settled (its next records go on) and the entry is left open, named in ``skipped``.
    """
    clock = clock or SystemClock()
    progress.started_at_ms = clock.now_ms()
    started = time.monotonic()
    try:
        async for entry in _each(entries):  # a page of records at a time (DlqReader.pages)
            if entry.mutation is not None:
                if await _redrive_transaction(producer, ns, entry, progress, clock, target):
                    await _stepped(progress, on_step, rate, started)
                continue
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
            await send(producer, outbox.redriven(env, ns.topics.log, target))  # a fresh start
            await close_entry(producer, ns, entry, MarkerKind.REDRIVEN, clock.now_ms())
            progress.redriven += 1
            await _stepped(progress, on_step, rate, started)
    except asyncio.CancelledError:
        progress.state = RedriveState.CANCELLED
        raise
    except Exception as exc:
        progress.state = RedriveState.FAILED
        progress.error = f"{type(exc).__name__}: {exc}"
        raise
    progress.state = RedriveState.DONE
    return progress


async def _stepped(
    progress: RedriveProgress,
    on_step: Callable[[RedriveProgress], None] | None,
    rate: float | None,
    started: float,
) -> None:
    """One more entry redriven: tell ``on_step``, and hold the pace to ``rate`` a second."""
    if on_step is not None:
        on_step(progress)
    if rate:
        ahead = progress.redriven / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)


async def _redrive_transaction(
    producer: Any,
    ns: NamespaceConfig,
    entry: DlqEntry,
    progress: RedriveProgress,
    clock: Clock,
    target: Mapping[str, Any] | None,
) -> bool:
    """Redrive a mutation's entry: a dead-lettered transaction's marker goes again to the
    markers topic, keyed by its txn id (the partition of its state), then the entry is closed.
    Whether it was redriven (else it is named in ``progress.skipped`` and left open: a namespace
    that takes no mutations now has no agent to read the marker, and a transaction is applied
    to its own operations' kv tables, never to another target)."""
    try:
        again = redrive_marker(entry)
    except PoisonRecordError as exc:
        progress.skipped.append(f"{entry.id}: {exc.reason}")
        return False
    if ns.mutations is None:
        progress.skipped.append(
            f"{entry.id}: {ns.name} takes no mutations now (no mutations block): left open"
        )
        return False
    if target is not None:
        progress.skipped.append(
            f"{entry.id}: a transaction goes to its own kv tables, not to a target: "
            "redrive it without one"
        )
        return False
    markers = mutation_topics(ns.name).markers
    await send(producer, outbox.OutRecord(markers, None, again.key, again.value))
    await close_entry(producer, ns, entry, MarkerKind.REDRIVEN, clock.now_ms())
    progress.redriven += 1
    return True


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
        settled = await settle_key(producer, ns, entry)
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
