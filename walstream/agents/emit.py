"""Writes from inside the worker that must not be lost: retry, delay and DLQ records.

An agent handler may not return until its outputs are safely on the log (Faust then acks the
source record). So ``emit`` waits for acks=all and, when the broker is unavailable, keeps trying
with backoff: the stream stops until Kafka is back, which is the only safe thing to do.

A refusal that no amount of waiting changes is not retried: ``emit`` raises ``EmitRefusedError``
and the deliverer routes the record to the DLQ instead (a DLQ entry refused goes without its
record, else the record stays at its source). ``FaustEmitter`` refuses what
``walstream.core.emit`` lists (too large, invalid topic, not authorized, a policy violation, an
invalid timestamp or record), and a destination topic missing for ``grace_ms`` (unknown, or
sends timing out, and the cluster's metadata, read again, does not have it): the key and the
partition's commit are not pinned for good. A DLQ write is the last resort: never given up for
a missing destination, retried with a critical log and ``walstream_dlq_write_failing_seconds``.
Faust wraps every ``KafkaError`` raised while a record is put on the producer's accumulator in
``faust.exceptions.ProducerSendError`` (``faust/transport/drivers/aiokafka.py``,
``Producer.send``: ``except KafkaError as exc: raise ProducerSendError(...) from exc``), so the
cause is what gets classified.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    UnknownTopicOrPartitionError,
)
from faust.exceptions import ProducerSendError

from walstream.aio import Backoff
from walstream.clock import Clock, SystemClock
from walstream.core.emit import Refuse, after_emit_failure, past_grace
from walstream.errors import EmitRefusedError
from walstream.metrics import WalMetrics

__all__ = ["AiokafkaProbe", "EmitGuard", "FaustEmitter", "is_refusal", "send_acked"]

logger = logging.getLogger(__name__)

#: Broker or producer answers that mean "this record can never go to this topic" for a write
#: without an ``EmitGuard`` (the attempts changelog's): the guard refuses more (core.emit).
_REFUSALS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
)

#: Everything else a send can raise while the cluster is unreachable or busy: retried.
#: ``KafkaTimeoutError`` is how aiokafka says the accumulator stayed full (a long outage);
#: ``UnknownTopicOrPartitionError`` may be a topic being created. ``ProducerSendError`` carries
#: one of these as its cause.
_TRANSIENT = (KafkaError, ProducerSendError, TimeoutError, OSError)

#: Is the topic (and partition) missing? True/False as the cluster's metadata says, None: the
#: cluster did not answer.
Probe = Callable[[str, int | None], Awaitable[bool | None]]


def _cause(exc: BaseException) -> BaseException:
    if isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` (or what Faust wrapped in it) says the record can never be written."""
    return isinstance(_cause(exc), _REFUSALS)


class EmitGuard:
    """When an emitter's failing writes are given up (``walstream.core.emit``): the failures of
    each destination topic, the grace of a missing one, which writes are the last resort.

    Args:
        grace_ms: how long a missing destination is tried (WALSTREAM_EMIT_DEST_GRACE_MS).
        last_resort: whether a topic is a DLQ (its writes are never given up as missing).
        probe: reads the cluster's metadata for a topic (None: no probe, never given up as
            missing).
    """

    def __init__(
        self,
        *,
        grace_ms: int | None,
        clock: Clock | None = None,
        last_resort: Callable[[str], bool] = lambda topic: False,
        probe: Probe | None = None,
        metrics: WalMetrics | None = None,
    ) -> None:
        self.grace_ms = grace_ms
        self.clock = clock or SystemClock()
        self.last_resort = last_resort
        self.probe = probe
        self.metrics = metrics
        #: topic -> since when writes to it fail with a destination error
        self._failing: dict[str, int] = {}
        #: DLQ topic -> since when writes to it fail (any error), for the gauge and the log
        self._dlq_failing: dict[str, int] = {}

    async def missing(self, topic: str, partition: int | None) -> bool | None:
        if self.probe is None:
            return None
        try:
            return await self.probe(topic, partition)
        except Exception as exc:  # noqa: BLE001 - no answer: not known to be missing
            logger.warning("metadata of %s not read: %r", topic, exc)
            return None

    async def before(self, topic: str, partition: int | None) -> BaseException | None:
        """A failure to count instead of sending: the topic is missing (as a fresh metadata
        read says) and either unknown to the producer (aiokafka would wait its whole request
        timeout for it) or failing past its grace."""
        if self.probe is None or self.last_resort(topic):
            return None
        now = self.clock.now_ms()
        since = self._failing.get(topic)
        failing = since is not None and past_grace(
            "UnknownTopicOrPartitionError", since, now, self.grace_ms
        )
        if not failing and not self._unknown(topic):
            return None
        if await self.missing(topic, partition):
            where = topic if partition is None else f"{topic}[{partition}]"
            missing: BaseException = UnknownTopicOrPartitionError(
                f"{where} is not in the cluster's metadata"
            )
            return missing
        return None

    def _unknown(self, topic: str) -> bool:
        known = getattr(self.probe, "known", None)
        return known is not None and not known(topic)

    async def failed(self, topic: str, partition: int | None, exc: BaseException) -> Refuse | int:
        """A write to ``topic`` failed with ``exc`` (Faust's wrapping removed): ``Refuse``, or
        the level to log the retry at (critical: past its grace and kept trying; error: a DLQ
        write)."""
        error = type(exc).__name__
        now = self.clock.now_ms()
        last = self.last_resort(topic)
        since = now
        if error in ("UnknownTopicOrPartitionError", "KafkaTimeoutError"):
            since = self._failing.setdefault(topic, now)
        if last:
            first = self._dlq_failing.setdefault(topic, now)
            if self.metrics is not None:
                self.metrics.dlq_write_failing.labels(topic).set((now - first) / 1000)
        missing = None
        if not last and past_grace(error, since, now, self.grace_ms):
            missing = await self.missing(topic, partition)
        verdict = after_emit_failure(
            error,
            failing_since_ms=since,
            now_ms=now,
            grace_ms=self.grace_ms,
            last_resort=last,
            destination_missing=missing,
        )
        if isinstance(verdict, Refuse):
            if self.metrics is not None:
                self.metrics.emit_refused.labels(error).inc()
            return verdict
        if verdict.stuck:
            return logging.CRITICAL
        return logging.ERROR if last else logging.WARNING

    def succeeded(self, topic: str) -> None:
        self._failing.pop(topic, None)
        if self._dlq_failing.pop(topic, None) is not None and self.metrics is not None:
            self.metrics.dlq_write_failing.labels(topic).set(0)


async def send_acked(
    producer: Any,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    partition: int | None,
    timestamp: float | None,
    headers: list[tuple[str, bytes]] | None,
    *,
    max_backoff_s: float = 5.0,
    guard: EmitGuard | None = None,
) -> Any:
    """Send through a Faust producer and wait for the broker's ack, retrying transient errors.

    Returns:
        The record's metadata.

    Raises:
        EmitRefusedError: the record can never be written to ``topic`` (too large, bad topic;
            with a ``guard``, what ``walstream.core.emit`` refuses too).
    """
    delays = Backoff(first_s=min(0.1, max_backoff_s), cap_s=max_backoff_s).delays()
    while True:
        exc: BaseException | None = None
        if guard is not None:
            exc = await guard.before(topic, partition)
        if exc is None:
            try:
                result = await producer.send_and_wait(
                    topic, key, value, partition, timestamp, headers
                )
            except _TRANSIENT as failure:
                exc = failure
            else:
                if guard is not None:
                    guard.succeeded(topic)
                return result
        cause = _cause(exc)
        size = len(value or b"") + len(key or b"")
        if guard is None:
            if is_refusal(exc):
                raise EmitRefusedError(
                    topic, f"{type(cause).__name__}: {cause} ({size} bytes)"
                ) from exc
            level = logging.WARNING
        else:
            verdict = await guard.failed(topic, partition, cause)
            if isinstance(verdict, Refuse):
                raise EmitRefusedError(topic, f"{verdict.reason}: {cause} ({size} bytes)") from exc
            level = verdict
        backoff = next(delays)
        logger.log(
            level, "emit to %s[%s] failed (%r); retrying in %.1fs", topic, partition, exc, backoff
        )
        await asyncio.sleep(backoff)


class AiokafkaProbe:
    """``EmitGuard``'s probe over the Faust producer's aiokafka client: a fresh metadata read."""

    def __init__(self, app: Any, *, timeout_s: float = 10.0) -> None:
        self.app = app
        self.timeout_s = timeout_s

    def _client(self) -> Any:
        try:
            producer = self.app.producer._ensure_producer()  # faust's aiokafka driver
        except Exception:  # noqa: BLE001 - not started, or another driver: no probe
            return None
        return getattr(producer, "client", None)

    def known(self, topic: str) -> bool:
        """Whether the producer has the topic's metadata (else a send waits for it)."""
        client = self._client()
        return client is None or client.cluster.partitions_for_topic(topic) is not None

    async def __call__(self, topic: str, partition: int | None) -> bool | None:
        client = self._client()
        if client is None:
            return None
        client.add_topic(topic)
        async with asyncio.timeout(self.timeout_s):
            updated = await client.force_metadata_update()
        if not updated:
            return None  # the cluster did not answer: an outage, not a missing topic
        parts = client.cluster.partitions_for_topic(topic)
        return parts is None or (partition is not None and partition not in parts)


class FaustEmitter:
    """Emitter over the Faust app's producer; ``guard``: when a failing write is given up
    (default: what ``walstream.core.emit`` refuses, a missing destination retried forever)."""

    def __init__(
        self, app: Any, *, max_backoff_s: float = 5.0, guard: EmitGuard | None = None
    ) -> None:
        self.app = app
        self.max_backoff_s = max_backoff_s
        self.guard = guard if guard is not None else EmitGuard(grace_ms=None)

    async def emit(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Write one record and return once acknowledged.

        Raises:
            EmitRefusedError: the record can never be written to ``topic``.
        """
        timestamp = timestamp_ms / 1000 if timestamp_ms is not None else None
        await send_acked(
            self.app.producer,
            topic,
            key,
            value,
            partition,
            timestamp,
            headers,
            max_backoff_s=self.max_backoff_s,
            guard=self.guard,
        )
