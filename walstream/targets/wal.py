"""The wal target: forward a record into another namespace's log (this cluster or another).

The forwarded record is a new write in that namespace (new id) that keeps what makes retries safe:
the idempotency token, the original write time, the key and the payload. Its target is the
receiving namespace's default, read from this cluster's registry; a namespace this process does
not know is a permanent error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka.errors import KafkaError

from walstream.clock import Clock
from walstream.errors import NamespaceNotFoundError, TargetRejectedError
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope, Lifecycle, encode_envelope
from walstream.targets.kafka import DEFAULT_TIMEOUT_S, classify_kafka_error, kafka_headers

__all__ = ["WalTarget"]


class WalTarget:
    """Writes into another namespace's log topic."""

    def __init__(
        self,
        producer: Any,
        registry: NamespaceRegistry,
        clock: Clock,
        make_id: Callable[[int], str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._producer = producer
        self._registry = registry
        self._clock = clock
        self._make_id = make_id
        self._timeout_s = timeout_s

    async def deliver(self, envelope: Envelope) -> None:
        name = envelope.target["namespace"]
        try:
            ns = self._registry.get(name)
        except NamespaceNotFoundError as exc:
            raise TargetRejectedError(str(exc), error_class="unknown_namespace") from exc
        if ns.target is None:
            raise TargetRejectedError(
                f"namespace {name!r} has no default target", error_class="no_default_target"
            )
        if name == envelope.namespace:
            raise TargetRejectedError(
                "a wal target must name another namespace", error_class="loop"
            )
        now = self._clock.now_ms()
        forwarded = Envelope(
            self._make_id(now),
            name,
            envelope.key,
            envelope.payload,
            envelope.payload_encoding,
            ns.target.wire,
            Lifecycle(now, envelope.lifecycle.original_write_time_ms, 0),
            envelope.idempotency_token,
            now,
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._producer.send_and_wait(
                    ns.topics.log,
                    encode_envelope(forwarded),
                    key=envelope.key.encode() if envelope.key is not None else None,
                    headers=kafka_headers(envelope),
                )
        except (KafkaError, TimeoutError) as exc:
            raise classify_kafka_error(f"forward to {ns.topics.log}", exc) from exc

    async def close(self) -> None:
        """The producer belongs to the pool."""
