"""DLQ operations: read a namespace's DLQ, redrive entries to its log, discard them.

Redrive republishes each selected entry to the namespace's log as it was (same id, token, key,
payload, original write time) with attempts reset and its history kept, then appends a
``redriven`` marker so the entry is no longer open. Log first, marker second: a crash in between
leaves the entry open, and redriving it again delivers it twice, which targets absorb (they are
idempotent on the token). A process runs one redrive per namespace at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from walstream.agents.ordering import MarkerKind as OrderMarker
from walstream.agents.ordering import marker_headers as order_marker_headers
from walstream.agents.ordering import marker_value
from walstream.clock import Clock, SystemClock
from walstream.core.dlq import (
    DlqEntry,
    DlqView,
    MarkerKind,
    marker_headers,
    parse_dlq_record,
)
from walstream.errors import PoisonRecordError, WalError
from walstream.kafka.clients import assign_from_start, stop_consumer
from walstream.namespaces.config import NamespaceConfig
from walstream.records import decode_envelope, encode_envelope

__all__ = [
    "DlqAccess",
    "RedriveConflictError",
    "RedriveProgress",
    "RedriveState",
    "Redrives",
    "discard",
    "entry_json",
    "read_dlq",
    "redrive",
]

logger = logging.getLogger(__name__)


class RedriveConflictError(WalError):
    """A redrive of this namespace is already running (HTTP 409)."""


async def read_dlq(
    servers: str | list[str], topic: str, *, within_s: float = 30.0, keep_values: bool = True
) -> DlqView:
    """Fold a DLQ topic from its beginning to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        client_id="walstream-dlq-reader",
    )
    await consumer.start()
    view = DlqView()
    try:
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
    entries: Sequence[DlqEntry],
    progress: RedriveProgress,
    *,
    rate: float | None = None,
    target: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    on_step: Callable[[RedriveProgress], None] | None = None,
) -> RedriveProgress:
    """Republish ``entries`` to the namespace's log, at most ``rate`` per second.

    Entries that are not records (poison) are skipped and named in ``progress.skipped``.
    """
    clock = clock or SystemClock()
    progress.started_at_ms = clock.now_ms()
    started = time.monotonic()
    try:
        for entry in entries:
            try:
                env = decode_envelope(entry.value)
            except PoisonRecordError as exc:
                progress.skipped.append(f"{entry.id}: {exc.reason}")
                continue
            # A fresh start: attempts from 0 under a count of its own (``redrive``: a copy the
            # worker may still count attempts of is not taken for a stale one), a fresh budget.
            again = env._replace(
                attempt=0,
                not_before_ms=0,
                first_attempt_ms=0,
                redrive=env.redrive + 1,
                target=dict(target) if target else env.target,
            )
            key = env.key.encode() if env.key is not None else None
            await producer.send_and_wait(ns.topics.log, encode_envelope(again), key=key)
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


async def _settle_key(producer: Any, ns: NamespaceConfig, entry: DlqEntry) -> None:
    try:
        env = decode_envelope(entry.value)
    except PoisonRecordError:
        return  # not a record: it never headed a key
    if env.key is None:
        return
    await producer.send_and_wait(
        ns.topics.retry,
        marker_value(ns.name, env.id),
        key=env.key.encode(),
        partition=entry.partition if entry.partition >= 0 else None,
        headers=order_marker_headers(OrderMarker.SETTLE),
    )


async def _close(
    producer: Any, ns: NamespaceConfig, entry: DlqEntry, kind: MarkerKind, now_ms: int
) -> None:
    """Append the marker that closes ``entry`` (on its partition, so it follows the entry)."""
    await producer.send_and_wait(
        ns.topics.dlq,
        b"",
        key=entry.id.encode(),
        partition=entry.partition if entry.partition >= 0 else None,
        headers=marker_headers(kind, now_ms),
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
    """What the API needs for DLQ endpoints: reads, and this process's redrives."""

    def __init__(self, servers: str | list[str]) -> None:
        self.servers = servers
        self.redrives = Redrives(servers)

    async def read(self, topic: str) -> DlqView:
        return await read_dlq(self.servers, topic)

    async def close(self) -> None:
        await self.redrives.close()


class Redrives:
    """The redrives this process runs: one per namespace at a time, cancellable."""

    def __init__(self, servers: str | list[str]) -> None:
        self.servers = servers
        self._tasks: dict[str, asyncio.Task[RedriveProgress]] = {}
        self._progress: dict[str, RedriveProgress] = {}
        self._producer: AIOKafkaProducer | None = None

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.servers, acks="all", client_id="walstream-dlq"
            )
            await self._producer.start()
        return self._producer

    def status(self, namespace: str) -> RedriveProgress | None:
        return self._progress.get(namespace)

    async def start(
        self,
        ns: NamespaceConfig,
        entries: Sequence[DlqEntry],
        *,
        rate: float | None,
        target: Mapping[str, Any] | None,
    ) -> RedriveProgress:
        """Start redriving ``entries`` in the background.

        Raises:
            RedriveConflictError: one is already running for this namespace.
        """
        running = self._tasks.get(ns.name)
        if running is not None and not running.done():
            raise RedriveConflictError(f"a redrive of {ns.name} is already running")
        producer = await self.producer()
        progress = RedriveProgress(namespace=ns.name, total=len(entries))
        self._progress[ns.name] = progress
        task = asyncio.create_task(
            redrive(producer, ns, entries, progress, rate=rate, target=target),
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


def _log_outcome(task: asyncio.Task[RedriveProgress]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("redrive failed: %s", exc)
