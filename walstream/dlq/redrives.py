"""Running redrives: ``Redrives`` (this process's, one per namespace at a time) and
``claimed_dlq`` (the CLI's one-off), each holding the namespace's DLQ with a renewed claim so
that one redrive per namespace runs at a time across processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from walstream.aio import cancel_and_wait
from walstream.clock import Clock, SystemClock
from walstream.core import outbox
from walstream.core.dlq import DlqEntry, DlqIndex
from walstream.dlq.kafka_io import request_timeouts, send
from walstream.dlq.reading import DlqReader
from walstream.dlq.redriving import RedriveProgress, redrive
from walstream.errors import RedriveConflictError
from walstream.kafka import clients
from walstream.kafka.clients import start_client
from walstream.kafka.log_reader import LogReader
from walstream.namespaces.config import NamespaceConfig

__all__ = ["CLAIM_LEASE_MS", "Redrives", "claimed_dlq"]

#: the package's name, as before the split: log filters on ``walstream.dlq`` still match
logger = logging.getLogger("walstream.dlq")


#: How long a redrive's claim holds its namespace's DLQ without a renewal.
CLAIM_LEASE_MS = 30_000


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
                    **request_timeouts(self.request_timeout_s),
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
        sent = await send(producer, record)
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
        region: str | None = None,
    ) -> RedriveProgress:
        """Start redriving ``entries`` (``total`` of them) in the background, holding ``claim``
        (renewed, released at the end) when given; ``region``: ``ns`` is that region's view
        (walstream.dlq.regions), named in the progress.

        Raises:
            RedriveConflictError: one is already running for this namespace in this process.
        """
        self.check_local(ns.name)
        producer = await self.producer()
        if total is None:
            total = len(entries) if isinstance(entries, Sequence) else 0
        progress = RedriveProgress(namespace=ns.name, total=total, region=region)
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
