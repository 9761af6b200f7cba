"""The DLQ tools' Kafka edge: their clients' request timeouts, sending what the outbox built,
and what a broker that does not answer becomes (``BrokerUnavailableError``, HTTP 503)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

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

from walstream.core import outbox
from walstream.errors import BrokerUnavailableError

__all__ = ["request_timeouts", "send", "unavailable_broker"]


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


def request_timeouts(request_timeout_s: float | None) -> dict[str, Any]:
    """A client's request timeout (None: aiokafka's 40 s), which also bounds its start and its
    waits for metadata."""
    if request_timeout_s is None:
        return {}
    return {"request_timeout_ms": max(1000, int(request_timeout_s * 1000))}


async def send(producer: Any, record: outbox.OutRecord) -> Any:
    """Send what the outbox built (no timestamp: the DLQ tools' records have none); return the
    broker's record metadata once acknowledged."""
    return await producer.send_and_wait(
        record.topic,
        record.value,
        key=record.key,
        partition=record.partition,
        headers=record.headers,
    )
