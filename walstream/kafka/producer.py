"""The log producer: writes records with acks=all and says precisely what is known about them.

``send`` returns only when the broker acknowledged the record (durable=TRUE). It raises
WriteRejectedError when the record certainly did not reach the log (durable=FALSE), and
WriteUnknownError when it may have (timeout or an ambiguous broker error: durable=UNKNOWN).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)

from walstream.errors import WalError, WriteRejectedError, WriteUnknownError

__all__ = ["KafkaLogProducer", "LogProducer", "MemoryLogProducer", "Outgoing"]

logger = logging.getLogger(__name__)

#: Broker answers that mean "not appended" for certain.
_DEFINITE_REFUSALS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to write."""

    topic: str
    key: bytes | None
    value: bytes


class LogProducer(Protocol):
    """What the API needs from a producer."""

    async def send(self, record: Outgoing) -> None: ...

    async def send_many(self, records: Sequence[Outgoing]) -> list[WalError | None]: ...

    async def ping(self) -> bool: ...


def _classify(exc: BaseException, acked_phase: bool) -> WalError:
    if isinstance(exc, _DEFINITE_REFUSALS):
        return WriteRejectedError(f"broker refused the record: {type(exc).__name__}")
    if not acked_phase:
        return WriteRejectedError(f"record not handed to the broker: {type(exc).__name__}")
    return WriteUnknownError(f"no acknowledgement: {type(exc).__name__}: {exc}")


class KafkaLogProducer:
    """An AIOKafkaProducer with acks=all, deadlines, and precise durability answers."""

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        *,
        timeout_s: float,
        client_id: str = "walstream-api",
    ) -> None:
        self._timeout_s = timeout_s
        self._config = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "acks": "all",
            # linger 0: a request/reply producer waits for each ack; aiokafka still batches
            # whatever is queued while a request is in flight (see ../shared/BROKER.md figures).
            "linger_ms": 0,
            "max_batch_size": 256 * 1024,
            "request_timeout_ms": max(1000, int(timeout_s * 1000)),
            "retry_backoff_ms": 100,
        }
        self._producer: Any = None
        self._last_ping: tuple[float, bool] = (0.0, False)

    async def start(self) -> None:
        # aiokafka binds to the running loop, so the producer is made here, not in __init__.
        self._producer = AIOKafkaProducer(**self._config)
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, record: Outgoing) -> None:
        """Write one record and wait for acks=all.

        Raises:
            WriteRejectedError: certainly not written.
            WriteUnknownError: may have been written.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                future = await self._producer.send(record.topic, record.value, key=record.key)
        except TimeoutError:
            raise WriteRejectedError("broker unavailable: record not handed over in time") from None
        except KafkaError as exc:
            raise _classify(exc, acked_phase=False) from exc
        try:
            async with asyncio.timeout_at(deadline):
                await future
        except TimeoutError:
            raise WriteUnknownError(
                f"no acknowledgement within {self._timeout_s}s: the record may be on the log"
            ) from None
        except KafkaError as exc:
            raise _classify(exc, acked_phase=True) from exc

    async def send_many(self, records: Sequence[Outgoing]) -> list[WalError | None]:
        """Write many records concurrently; one result per record (None = acknowledged)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        results: list[WalError | None] = [None] * len(records)
        futures: dict[asyncio.Future[object], int] = {}
        for index, record in enumerate(records):
            try:
                async with asyncio.timeout_at(deadline):
                    fut = await self._producer.send(record.topic, record.value, key=record.key)
                futures[fut] = index
            except TimeoutError:
                results[index] = WriteRejectedError("broker unavailable: record not handed over")
            except KafkaError as exc:
                results[index] = _classify(exc, acked_phase=False)
        if futures:
            done, pending = await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
            for fut in done:
                error = fut.exception()
                if error is not None:
                    results[futures[fut]] = _classify(error, acked_phase=True)
            for fut in pending:
                results[futures[fut]] = WriteUnknownError(
                    f"no acknowledgement within {self._timeout_s}s: the record may be on the log"
                )
        return results

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
