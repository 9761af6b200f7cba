"""Writes from inside the worker that must not be lost: retry, delay and DLQ records.

An agent handler may not return until its outputs are safely on the log (Faust then acks the
source record). So ``emit`` waits for acks=all and, when the broker is unavailable, keeps trying
with backoff: the stream stops until Kafka is back, which is the only safe thing to do.

A refusal that no amount of waiting changes (the record is over the producer's or the broker's
size limit, the topic name is invalid) is not retried: ``emit`` raises ``EmitRefusedError`` and
the deliverer routes the record to the DLQ instead. Faust wraps every ``KafkaError`` raised while
a record is put on the producer's accumulator in ``faust.exceptions.ProducerSendError``
(``faust/transport/drivers/aiokafka.py``, ``Producer.send``: ``except KafkaError as exc: raise
ProducerSendError(...) from exc``), so the cause is what gets classified.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from faust.exceptions import ProducerSendError

from walstream.errors import EmitRefusedError

__all__ = ["FaustEmitter", "is_refusal", "send_acked"]

logger = logging.getLogger(__name__)

#: Broker or producer answers that mean "this record can never go to this topic".
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


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` (or what Faust wrapped in it) says the record can never be written."""
    if isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, _REFUSALS)


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
) -> Any:
    """Send through a Faust producer and wait for the broker's ack, retrying transient errors.

    Returns:
        The record's metadata.

    Raises:
        EmitRefusedError: the record can never be written to ``topic`` (too large, bad topic).
    """
    backoff = 0.1
    while True:
        try:
            return await producer.send_and_wait(topic, key, value, partition, timestamp, headers)
        except _TRANSIENT as exc:
            if is_refusal(exc):
                cause = exc.__cause__ if isinstance(exc, ProducerSendError) else exc
                size = len(value or b"") + len(key or b"")
                raise EmitRefusedError(
                    topic, f"{type(cause).__name__}: {cause} ({size} bytes)"
                ) from exc
            logger.warning(
                "emit to %s[%s] failed (%r); retrying in %.1fs", topic, partition, exc, backoff
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)


class FaustEmitter:
    """Emitter over the Faust app's producer."""

    def __init__(self, app: Any, *, max_backoff_s: float = 5.0) -> None:
        self.app = app
        self.max_backoff_s = max_backoff_s

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
        )
