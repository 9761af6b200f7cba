"""Helpers around aiokafka client lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

__all__ = ["assign_from_start", "start_client", "stop_consumer"]


async def assign_from_start(
    consumer: Any, topics: Iterable[str], *, within_s: float
) -> list[TopicPartition]:
    """Assign every partition of ``topics`` to a groupless consumer, at their beginnings.

    Waits up to ``within_s`` for metadata; a topic still unknown then is left out (the caller
    decides whether that is an error).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    tps: list[TopicPartition] = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        while not parts and loop.time() < deadline:
            with contextlib.suppress(KafkaError):
                await consumer.topics()  # refresh metadata
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await asyncio.sleep(0.1)
        tps.extend(TopicPartition(topic, p) for p in sorted(parts or ()))
    if tps:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
    return tps


async def start_client(client: Any) -> None:
    """Start an aiokafka consumer or producer, letting a cancel wait until the start is over.

    A cancel in the middle of ``start()`` (an operator cancelling a redrive, say) leaves the
    bootstrap connection aiokafka was opening unclosed: nothing can close it afterwards, not
    even ``stop()``. So the start runs to its end (it is bounded by the client's request
    timeout), and only then is the cancel raised; the caller's ``finally`` stops the client.
    """
    starting = asyncio.ensure_future(client.start())
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await starting
        raise


async def stop_consumer(consumer: Any) -> None:
    """Stop an AIOKafkaConsumer, tolerating aiokafka 0.14's shutdown leak.

    ``Fetcher.close()`` cancels its in-flight fetch tasks and awaits them without catching the
    CancelledError, so ``consumer.stop()`` raises it when a fetch was in retry backoff (a broker
    that just went away). That error is not a cancellation of the caller: swallow it unless the
    caller itself is being cancelled.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
