"""Writes from inside the worker that must not be lost: retry, delay and DLQ records.

An agent handler may not return until its outputs are safely on the log (Faust then acks the
source record). So ``emit`` waits for acks=all and, when the broker is unavailable, keeps trying
with backoff: the stream stops until Kafka is back, which is the only safe thing to do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.errors import KafkaError

__all__ = ["FaustEmitter"]

logger = logging.getLogger(__name__)


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
        backoff = 0.1
        timestamp = timestamp_ms / 1000 if timestamp_ms is not None else None
        while True:
            try:
                await self.app.producer.send_and_wait(
                    topic, key, value, partition, timestamp, headers
                )
                return
            except (KafkaError, TimeoutError) as exc:
                logger.warning(
                    "emit to %s[%s] failed (%s); retrying in %.1fs", topic, partition, exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
