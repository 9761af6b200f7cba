"""The kafka target: produce the payload to a topic (this cluster or another), acks=all.

The record key is the target's ``key`` option, else the record's own key, so per-key order
carries over. walstream's delivery headers go along as Kafka headers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaError, ProducerClosed

from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.records import Envelope
from walstream.targets.base import delivery_headers

__all__ = ["KafkaTarget", "classify_kafka_error", "kafka_headers"]

DEFAULT_TIMEOUT_S = 10.0


def kafka_headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in delivery_headers(envelope).items()]


def classify_kafka_error(where: str, exc: BaseException) -> Exception:
    """A TargetError for a producer failure: aiokafka marks the transient ones ``retriable``.
    ``ProducerClosed`` (not marked) is transient too: the pool closed the producer (its cluster
    evicted, the worker stopping), nothing is wrong with the record or the cluster."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError | ProducerClosed) or getattr(exc, "retriable", False):
        return TargetUnavailableError(f"{where}: {name}: {exc}", error_class=f"kafka_{name}")
    return TargetRejectedError(f"{where}: {name}: {exc}", error_class=f"kafka_{name}")


class KafkaTarget:
    """Produces to the topic named in each record's target, on one cluster."""

    def __init__(self, producer: Any, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._producer = producer  # an started AIOKafkaProducer with acks=all, owned by the pool
        self._timeout_s = timeout_s

    async def deliver(self, envelope: Envelope) -> None:
        target = envelope.target
        topic = target["topic"]
        key = target.get("key") or envelope.key
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._producer.send_and_wait(
                    topic,
                    envelope.payload_bytes(),
                    key=key.encode() if key is not None else None,
                    headers=kafka_headers(envelope),
                )
        except (KafkaError, TimeoutError) as exc:
            raise classify_kafka_error(f"produce to {topic}", exc) from exc

    async def close(self) -> None:
        """The producer belongs to the pool."""
