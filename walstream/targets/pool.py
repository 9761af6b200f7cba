"""The targets a worker delivers to: one client per kind and cluster, and a breaker per endpoint.

Target clients are made on first use and shared: one HTTP client (connection pooling per origin),
one producer per Kafka cluster (for both kafka and wal targets), one kv database. The circuit
breaker is per endpoint (an HTTP origin, a Kafka cluster, the kv database), because that is
what goes down together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from yarl import URL

from walstream.clock import Clock
from walstream.core.breaker import BreakerPolicy, CircuitBreaker
from walstream.core.ids import new_id
from walstream.errors import TargetRejectedError
from walstream.kafka.clients import stop_consumer
from walstream.namespaces.registry import NamespaceRegistry
from walstream.settings import Settings
from walstream.targets.base import Target
from walstream.targets.http import HttpTarget
from walstream.targets.http_client import HttpClient
from walstream.targets.kafka import KafkaTarget
from walstream.targets.kv import SqliteKvTarget
from walstream.targets.kv_postgres import PostgresKvTarget
from walstream.targets.wal import WalTarget

__all__ = ["TargetPool", "kv_target"]


def kv_target(settings: Settings) -> SqliteKvTarget | PostgresKvTarget:
    """The kv database WALSTREAM_KV_URL names (default: a SQLite file in the data dir)."""
    url = settings.kv_url or f"sqlite:///{Path(settings.data_dir) / 'kv.sqlite'}"
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteKvTarget(path)
    return PostgresKvTarget(url)


@lru_cache(maxsize=4096)
def _http_origin(url: str) -> str:
    """An http target's endpoint, once per URL (parsing one costs more than a delivery step)."""
    parsed = URL(url)
    return f"http:{parsed.scheme}://{parsed.host}:{parsed.port}"


class TargetPool:
    """Resolves a record's target spec to a client and the breaker guarding its endpoint."""

    def __init__(self, settings: Settings, registry: NamespaceRegistry, clock: Clock) -> None:
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self._policy = BreakerPolicy(
            threshold=settings.breaker_threshold,
            base_open_ms=settings.breaker_base_open_ms,
            max_open_ms=settings.breaker_max_open_ms,
        )
        self._breakers: dict[str, CircuitBreaker] = {}
        self._http: HttpClient | None = None
        self._producers: dict[str, Any] = {}
        self._kv: SqliteKvTarget | PostgresKvTarget | None = None
        self._targets: dict[tuple[str, str], Target] = {}
        self._lock = asyncio.Lock()

    def breaker(self, endpoint: str) -> CircuitBreaker:
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            breaker = self._breakers[endpoint] = CircuitBreaker(self._policy)
        return breaker

    def breakers(self) -> Mapping[str, CircuitBreaker]:
        return self._breakers

    @staticmethod
    def endpoint(spec: Mapping[str, Any], default_cluster: str) -> str:
        """The endpoint a target spec writes to (what one breaker guards)."""
        kind = spec.get("type")
        if kind == "http":
            return _http_origin(str(spec.get("url", "")))
        if kind in ("kafka", "wal"):
            return f"{kind}:{spec.get('bootstrap_servers') or default_cluster}"
        return str(kind)

    async def target(self, spec: Mapping[str, Any]) -> tuple[Target, str]:
        """The client for ``spec`` and its endpoint.

        Raises:
            TargetRejectedError: a target type this worker cannot deliver to.
        """
        kind = str(spec.get("type"))
        cluster = str(spec.get("bootstrap_servers") or self.settings.bootstrap_servers or "")
        endpoint = self.endpoint(spec, self.settings.bootstrap_servers or "")
        cached = self._targets.get((kind, cluster))
        if cached is not None:
            return cached, endpoint
        async with self._lock:
            cached = self._targets.get((kind, cluster))
            if cached is None:
                cached = self._targets[(kind, cluster)] = await self._make(kind, cluster)
        return cached, endpoint

    async def _make(self, kind: str, cluster: str) -> Target:
        if kind == "http":
            if self._http is None:
                self._http = HttpClient()
            return HttpTarget(self._http)
        if kind == "kafka":
            return KafkaTarget(await self._producer(cluster))
        if kind == "wal":
            return WalTarget(await self._producer(cluster), self.registry, self.clock, new_id)
        if kind == "kv":
            if self._kv is None:
                self._kv = kv_target(self.settings)
            return self._kv
        raise TargetRejectedError(
            f"no deliverer for {kind!r} targets", error_class="unknown_target"
        )

    async def _producer(self, cluster: str) -> Any:
        producer = self._producers.get(cluster)
        if producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=cluster, acks="all", client_id="walstream-targets", linger_ms=1
            )
            await producer.start()
            self._producers[cluster] = producer
        return producer

    async def close(self) -> None:
        """Close every client this pool made."""
        for producer in self._producers.values():
            await stop_consumer(producer)  # tolerant stop, same shutdown race as consumers
        self._producers.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._kv is not None:
            await self._kv.close()
            self._kv = None
        self._targets.clear()
