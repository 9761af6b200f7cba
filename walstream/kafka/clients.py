"""Helpers around aiokafka client lifecycles."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["stop_consumer"]


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
