"""The log producer: writes records with acks=all and says precisely what is known about them.

``send`` returns only when the broker acknowledged the record (durable=TRUE). It raises
WriteRejectedError when the record certainly did not reach the log (durable=FALSE), and
WriteUnknownError when it may have (timeout or an ambiguous broker error: durable=UNKNOWN).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from aiokafka.partitioner import DefaultPartitioner

from walstream.core.outbox import Outgoing
from walstream.errors import (
    BrokerUnavailableError,
    WalError,
    WriteRejectedError,
    WriteUnknownError,
)
from walstream.kafka.clients import ClientIds, api_producer
from walstream.kafka.deadlines import DeadlineSweeper

__all__ = ["KafkaLogProducer", "LogProducer", "MemoryLogProducer", "Outgoing"]

_partitioner = DefaultPartitioner()

logger = logging.getLogger(__name__)

#: Broker answers that mean "not appended" for certain.
_DEFINITE_REFUSALS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
)


def _pick(key: bytes | None, parts: list[int]) -> int:
    """The partition the default partitioner gives ``key``; any one for no key."""
    if key is None:
        return random.choice(parts)  # noqa: S311 - load spreading only
    return int(_partitioner(key, parts, parts))


async def _route(
    producer: Any, record: Outgoing, parts_cache: dict[str, list[int]]
) -> tuple[int, list[tuple[str, bytes]] | None]:
    """The partition and headers ``record`` is written with."""

    async def parts_of(topic: str) -> list[int]:
        parts = parts_cache.get(topic)
        if parts is None:
            parts = parts_cache[topic] = sorted(await producer.partitions_for(topic))
        return parts

    own = await parts_of(record.topic)
    if record.due is None:
        return _pick(record.key, own), None
    # Where the key would go in its log topic (Kafka's partitioner); the outbox places it.
    return record.placed(_pick(record.key, await parts_of(record.due[1])), len(own))


class LogProducer(Protocol):
    """What the API needs from a producer."""

    async def send(self, record: Outgoing) -> None: ...

    async def send_many(self, records: Sequence[Outgoing]) -> list[WalError | None]: ...

    async def ping(self) -> bool: ...


def _classify(exc: BaseException, acked_phase: bool, retry_after: float) -> WalError:
    if isinstance(exc, _DEFINITE_REFUSALS):
        return WriteRejectedError(f"broker refused the record: {type(exc).__name__}")
    if not acked_phase:
        if isinstance(exc, UnknownTopicOrPartitionError):
            # aiokafka's word for "no metadata for the topic in time", which a stopped broker
            # causes as well as a missing topic (KafkaLogProducer.send asks which it is)
            return BrokerUnavailableError(
                "no answer about the record's topic in time: it was not handed over",
                retry_after,
            )
        return BrokerUnavailableError(
            f"the record was not handed over ({type(exc).__name__})", retry_after
        )
    return WriteUnknownError(f"no acknowledgement: {type(exc).__name__}: {exc}")


class KafkaLogProducer:
    """An AIOKafkaProducer with acks=all, deadlines, and precise durability answers."""

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        *,
        timeout_s: float,
        client_id: str = ClientIds.API,
        retry_after_s: float = 1.0,
    ) -> None:
        self._timeout_s = timeout_s
        #: Retry-After of a write the broker did not take (BrokerUnavailableError)
        self._retry_after_s = retry_after_s
        self._servers = bootstrap_servers
        self._client_id = client_id
        self._producer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines = DeadlineSweeper()
        self._last_ping: tuple[float, bool] = (0.0, False)

    async def start(self) -> None:
        # aiokafka binds to the running loop, so the producer is made here, not in __init__.
        self._loop = asyncio.get_running_loop()
        self._producer = api_producer(
            self._servers, timeout_s=self._timeout_s, client_id=self._client_id
        )
        await self._producer.start()
        self._deadlines.start()

    async def stop(self) -> None:
        await self._deadlines.stop()
        await self._producer.stop()

    async def send(self, record: Outgoing) -> None:
        """Write one record and wait for acks=all.

        Raises:
            WriteRejectedError: certainly not written.
            WriteUnknownError: may have been written.
        """
        task = asyncio.current_task(self._loop)  # given the loop: no getpid() system call
        assert task is not None  # noqa: S101 - always called from a task
        self._deadlines.watch(task, self._timeout_s)
        handed_over = False
        try:
            partition, headers = None, record.headers
            if record.due is not None:
                partition, delay = await _route(self._producer, record, {})
                headers = [*(delay or []), *(record.headers or [])]
            future = await self._producer.send(
                record.topic, record.value, key=record.key, partition=partition, headers=headers
            )
            handed_over = True
            await future
        except asyncio.CancelledError:
            if self._deadlines.claim_expiry(task):
                raise self._timed_out(handed_over) from None
            raise
        except KafkaError as exc:
            failure = exc
        else:
            return
        finally:
            self._deadlines.unwatch(task)
        error = _classify(failure, acked_phase=handed_over, retry_after=self._retry_after_s)
        if isinstance(failure, UnknownTopicOrPartitionError) and await self._answers(task):
            # no metadata for the topic in time, yet the broker answers: the topic is missing
            error = WriteRejectedError(f"topic {record.topic!r} is unknown to the broker")
        raise error from failure

    async def _answers(self, task: asyncio.Task[Any]) -> bool:
        """Whether the broker answers (a deadline that expired just before is no cancel)."""
        try:
            return await self.ping()
        except asyncio.CancelledError:
            if self._deadlines.claim_expiry(task):
                return False
            raise

    def _timed_out(self, handed_over: bool) -> WalError:
        if handed_over:
            return WriteUnknownError(
                f"no acknowledgement within {self._timeout_s}s: the record may be on the log"
            )
        return BrokerUnavailableError(
            f"the record was not handed over within {self._timeout_s}s", self._retry_after_s
        )

    async def send_many(self, records: Sequence[Outgoing]) -> list[WalError | None]:
        """Write many records; one result per record (None = acknowledged).

        Records are grouped per partition into record batches handed to the broker whole (one
        future per batch, not per record): keyed records go where the default partitioner puts
        them, so per-key order matches single writes; unkeyed ones stick to one partition per call.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        results: list[WalError | None] = [None] * len(records)
        groups: dict[tuple[str, int], list[int]] = {}
        futures: dict[asyncio.Future[object], list[int]] = {}
        try:
            async with asyncio.timeout_at(deadline):
                parts_cache: dict[str, list[int]] = {}
                sticky: dict[str, int] = {}  # unkeyed records: one partition per topic per call
                headers: dict[int, list[tuple[str, bytes]]] = {}
                for index, record in enumerate(records):
                    if record.due is not None:
                        partition, delay = await _route(self._producer, record, parts_cache)
                        headers[index] = delay or []
                    elif record.key is None and record.topic in sticky:
                        partition = sticky[record.topic]
                    else:
                        partition, _ = await _route(self._producer, record, parts_cache)
                        if record.key is None:
                            sticky[record.topic] = partition
                    if record.headers:  # its own (an origin repair's), after any wait headers
                        headers[index] = [*headers.get(index, []), *record.headers]
                    groups.setdefault((record.topic, partition), []).append(index)
                for (topic, partition), indexes in groups.items():
                    await self._send_group(
                        records, topic, partition, indexes, futures, results, headers
                    )
        except TimeoutError:
            handed = {i for idx in futures.values() for i in idx}
            for index in range(len(records)):
                if results[index] is None and index not in handed:
                    results[index] = self._timed_out(handed_over=False)
        except KafkaError as exc:
            handed = {i for idx in futures.values() for i in idx}
            for index in range(len(records)):
                if results[index] is None and index not in handed:
                    results[index] = _classify(
                        exc, acked_phase=False, retry_after=self._retry_after_s
                    )
        if futures:
            done, pending = await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
            for fut in done:
                error = fut.exception()
                if error is not None:
                    for index in futures[fut]:
                        results[index] = _classify(
                            error, acked_phase=True, retry_after=self._retry_after_s
                        )
            for fut in pending:
                for index in futures[fut]:
                    results[index] = self._timed_out(handed_over=True)
        return results

    async def _send_group(
        self,
        records: Sequence[Outgoing],
        topic: str,
        partition: int,
        indexes: list[int],
        futures: dict[asyncio.Future[object], list[int]],
        results: list[WalError | None],
        headers: dict[int, list[tuple[str, bytes]]],
    ) -> None:
        batch = self._producer.create_batch()
        members: list[int] = []
        for index in indexes:
            record = records[index]
            extra = headers.get(index, [])
            if (
                batch.append(key=record.key, value=record.value, timestamp=None, headers=extra)
                is None
            ):
                if members:  # full: hand it over, start the next one
                    futures[await self._producer.send_batch(batch, topic, partition=partition)] = (
                        members
                    )
                    batch = self._producer.create_batch()
                    members = []
                appended = batch.append(
                    key=record.key, value=record.value, timestamp=None, headers=extra
                )
                if appended is None:
                    results[index] = WriteRejectedError("record larger than a whole record batch")
                    continue
            members.append(index)
        if members:
            futures[await self._producer.send_batch(batch, topic, partition=partition)] = members

    async def ping(self, timeout_s: float = 2.0, cache_s: float = 1.0) -> bool:
        """Whether the cluster answers a metadata request (cached for ``cache_s``)."""
        now = asyncio.get_running_loop().time()
        if now - self._last_ping[0] < cache_s:
            return self._last_ping[1]
        try:
            async with asyncio.timeout(timeout_s):
                ok = bool(await self._producer.client.fetch_all_metadata())
        except (TimeoutError, KafkaError, OSError):
            ok = False
        self._last_ping = (now, ok)
        return ok


@dataclass
class MemoryLogProducer:
    """The in-memory fake with the same protocol: records land in ``sent``; can fail on demand."""

    sent: list[Outgoing] = field(default_factory=list)
    fail_with: WalError | None = None
    block: asyncio.Event | None = None
    reachable: bool = True

    async def send(self, record: Outgoing) -> None:
        if self.block is not None:
            await self.block.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(record)

    async def send_many(self, records: Sequence[Outgoing]) -> list[WalError | None]:
        results: list[WalError | None] = []
        for record in records:
            try:
                await self.send(record)
                results.append(None)
            except WalError as exc:
                results.append(exc)
        return results

    async def ping(self) -> bool:
        return self.reachable
