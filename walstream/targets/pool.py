"""The targets a worker delivers to: one client per kind and cluster, and a breaker per endpoint.

Target clients are made on first use and shared: one HTTP client (connection pooling per origin),
one producer per Kafka cluster (for both kafka and wal targets), one kv database. The circuit
breaker is per endpoint (an HTTP origin, a Kafka cluster, the kv database), because that is
what goes down together.

Records name endpoints, so what is kept per endpoint is bounded: a producer (with its targets)
or a breaker unused for TARGET_IDLE_TTL_S is closed and forgotten, and at most
TARGET_MAX_ENDPOINTS of each are kept (least recently used out first); the http client closes
idle connections after HTTP_IDLE_TIMEOUT_S. A delivery holds its cluster with ``lease``: an
evicted producer is closed once no delivery uses it, never under a send in flight. A producer is
started outside any pool-wide lock: callers for one cluster share its start, and a cluster that
does not answer holds up only the records that name it. Before handing out a target the pool
checks it against the namespace's current policy (walstream.core.target_policy: its own target,
its ``allowed_targets``, never walstream's own topics), so a record naming anything else is
refused before anything is connected to or run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from yarl import URL

from walstream.clock import Clock
from walstream.core.breaker import BreakerPolicy, CircuitBreaker, OpenBreakers
from walstream.core.idle_cache import IdleCache
from walstream.core.ids import new_id
from walstream.core.target_policy import cluster_id
from walstream.errors import TargetNotAllowedError, TargetRejectedError, TargetUnavailableError
from walstream.kafka.clients import TARGETS, producer, stop_consumer
from walstream.metrics import WalMetrics
from walstream.namespaces.config import NamespaceConfig
from walstream.namespaces.registry import NamespaceRegistry
from walstream.settings import Settings
from walstream.targets.base import Target
from walstream.targets.http import HttpTarget
from walstream.targets.http_client import HttpClient
from walstream.targets.kafka import DEFAULT_TIMEOUT_S, KafkaTarget
from walstream.targets.kv import SqliteKvTarget
from walstream.targets.kv_postgres import PostgresKvTarget
from walstream.targets.wal import WalTarget
from walstream.topology import reserved_topics

__all__ = ["TargetLeasing", "TargetPool", "kv_target"]

logger = logging.getLogger(__name__)


def _breaker_gauge(metrics: WalMetrics | None) -> Callable[[str, int], None] | None:
    """Sets the breaker gauge of a target kind to its count of breakers refusing calls."""
    if metrics is None:
        return None
    gauge = metrics.breaker_open
    return lambda kind, count: gauge.labels(kind).set(count)


def kv_target(settings: Settings, clock: Clock | None = None) -> SqliteKvTarget | PostgresKvTarget:
    """The kv database WALSTREAM_KV_URL names (default: a SQLite file in the data dir);
    ``clock`` bounds the original write times it accepts."""
    url = settings.kv_url or f"sqlite:///{Path(settings.data_dir) / 'kv.sqlite'}"
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteKvTarget(path, clock=clock)
    return PostgresKvTarget(url, clock=clock)


@lru_cache(maxsize=4096)
def _http_origin(url: str) -> str:
    """An http target's endpoint, once per URL (parsing one costs more than a delivery step)."""
    parsed = URL(url)
    return f"http:{parsed.scheme}://{parsed.host}:{parsed.port}"


class _Cluster:
    """One Kafka cluster's producer and the targets writing through it.

    ``users`` counts the deliveries holding it (``TargetPool.lease``): an evicted cluster's
    producer is closed once none does (``evicted``), not under a send waiting on it."""

    def __init__(self, producer: Any, kafka: KafkaTarget, wal: WalTarget) -> None:
        self.producer = producer
        self.targets: dict[str, Target] = {"kafka": kafka, "wal": wal}
        self.users = 0
        self.evicted = False
        self.closing = False


class TargetLeasing(Protocol):
    """What a deliverer needs of the pool (``TargetPool``; ``walstream.testing.FakePool``)."""

    settings: Settings

    async def target(
        self, spec: Mapping[str, Any], ns: NamespaceConfig | None = None
    ) -> tuple[Target, str]: ...

    def lease(
        self, spec: Mapping[str, Any], ns: NamespaceConfig | None = None
    ) -> contextlib.AbstractAsyncContextManager[tuple[Target, str]]: ...

    def breaker(self, endpoint: str) -> CircuitBreaker: ...


class TargetPool:
    """Resolves a record's target spec to a client and the breaker guarding its endpoint."""

    def __init__(
        self,
        settings: Settings,
        registry: NamespaceRegistry,
        clock: Clock,
        *,
        producer_factory: Any = None,
        metrics: WalMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self._policy = BreakerPolicy(
            threshold=settings.breaker_threshold,
            base_open_ms=settings.breaker_base_open_ms,
            max_open_ms=settings.breaker_max_open_ms,
        )
        ttl_ms = max(1, int(settings.target_idle_ttl_s * 1000))
        size = settings.target_max_endpoints
        self._breakers: IdleCache[str, CircuitBreaker] = IdleCache(ttl_ms=ttl_ms, max_size=size)
        #: The breakers refusing calls per target kind (the walstream_target_breaker_open gauge).
        self.open_breakers = OpenBreakers(_breaker_gauge(metrics))
        self._clusters: IdleCache[str, _Cluster] = IdleCache(ttl_ms=ttl_ms, max_size=size)
        #: Producers being started, by cluster: every caller for one cluster awaits the same.
        self._starting: dict[str, asyncio.Future[_Cluster]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        #: Evicted clusters still leased by a delivery: closed when the last one is done.
        self._draining: set[_Cluster] = set()
        self._next_sweep_ms = 0
        self._producer_factory = producer_factory or target_producer
        self._http: HttpClient | None = None
        self._http_target: HttpTarget | None = None
        self._kv: SqliteKvTarget | PostgresKvTarget | None = None
        #: walstream's own topics: no record's target may name one
        self.reserved = reserved_topics(
            settings.app_id, settings.control_topic, registry.namespace_of
        )

    def breaker(self, endpoint: str) -> CircuitBreaker:
        """The breaker of ``endpoint`` (called before each attempt: idle things are swept here,
        at most once a second)."""
        now = self.clock.now_ms()
        breaker = self._breakers.get(endpoint, now)
        if breaker is None:
            breaker = CircuitBreaker(self._policy, on_change=self.open_breakers.watch(endpoint))
            self._breakers.put(endpoint, breaker, now)
            # forgotten: a breaker holds nothing to close
            self.open_breakers.forget(self._breakers.evict(now))
        elif now >= self._next_sweep_ms:
            self._evict(now)
        return breaker

    def breakers(self) -> Mapping[str, CircuitBreaker]:
        return dict(self._breakers.items())

    def endpoint(self, spec: Mapping[str, Any], default_cluster: str | None = None) -> str:
        """The endpoint a target spec writes to (what one breaker guards)."""
        kind = spec.get("type")
        if kind == "http":
            return _http_origin(str(spec.get("url", "")))
        if kind in ("kafka", "wal"):
            home = self.settings.bootstrap_servers if default_cluster is None else default_cluster
            return f"{kind}:{cluster_id(str(spec.get('bootstrap_servers') or home or ''))}"
        return str(kind)

    async def target(
        self, spec: Mapping[str, Any], ns: NamespaceConfig | None = None
    ) -> tuple[Target, str]:
        """The client for ``spec`` and its endpoint.

        Args:
            spec: the record's target.
            ns: the record's namespace: the target must be one its current policy allows.

        Raises:
            TargetRejectedError: a target type this worker cannot deliver to, or one the
                namespace does not allow (``target_not_allowed``, the reason naming the policy;
                nothing was connected to).
            TargetUnavailableError: the target's Kafka cluster could not be reached.
        """
        if ns is not None:
            try:
                ns.target_policy.check(spec, reserved=self.reserved)
            except TargetNotAllowedError as exc:
                raise TargetRejectedError(str(exc), error_class="target_not_allowed") from exc
        kind = spec.get("type")
        if kind == "http":  # one client; its connections expire on their own
            if self._http_target is None:
                self._http = HttpClient(idle_timeout_s=self.settings.http_idle_timeout_s)
                self._http_target = HttpTarget(self._http)
            return self._http_target, _http_origin(str(spec.get("url", "")))
        endpoint = self.endpoint(spec)
        if kind == "kafka" or kind == "wal":
            home = self.settings.bootstrap_servers or ""
            cluster = cluster_id(str(spec.get("bootstrap_servers") or home))
            entry = await self._cluster(cluster)
            return entry.targets[kind], endpoint
        if kind == "kv":
            if self._kv is None:
                self._kv = kv_target(self.settings, self.clock)
            return self._kv, endpoint
        raise TargetRejectedError(
            f"no deliverer for {kind!r} targets", error_class="unknown_target"
        )

    @contextlib.asynccontextmanager
    async def lease(
        self, spec: Mapping[str, Any], ns: NamespaceConfig | None = None
    ) -> AsyncIterator[tuple[Target, str]]:
        """``target(spec, ns)`` held for the block: a Kafka cluster evicted meanwhile (idle,
        least recently used) has its producer closed only once no lease holds it, so a send
        waiting on it (topic metadata, a leader change) is not cut off. Raises as ``target``."""
        kind = spec.get("type")
        if kind != "kafka" and kind != "wal":
            yield await self.target(spec, ns)
            return
        _, endpoint = await self.target(spec, ns)  # the policy check, the producer started
        home = self.settings.bootstrap_servers or ""
        # live and started now: no suspension between this and the count, so it is not closing
        entry = await self._cluster(cluster_id(str(spec.get("bootstrap_servers") or home)))
        entry.users += 1
        try:
            yield entry.targets[kind], endpoint
        finally:
            entry.users -= 1
            if entry.evicted and entry.users == 0:
                self._draining.discard(entry)
                self._close_later(entry)

    async def _cluster(self, cluster: str) -> _Cluster:
        """The cluster's live entry (started if need be; one evicted before its caller resumed
        is not handed out: started again)."""
        for _ in range(3):
            now = self.clock.now_ms()
            entry = self._clusters.get(cluster, now)
            if entry is None:
                self._evict(now)
                entry = await self._start(cluster)
            if not entry.closing:
                return entry
        raise TargetUnavailableError(
            f"the producer of {cluster} was evicted as soon as started (more clusters in use "
            "than WALSTREAM_TARGET_MAX_ENDPOINTS)",
            error_class="kafka_evicted",
        )

    async def _start(self, cluster: str) -> _Cluster:
        starting = self._starting.get(cluster)
        if starting is None:
            starting = asyncio.ensure_future(self._start_cluster(cluster))
            self._starting[cluster] = starting
            starting.add_done_callback(lambda done: self._started(cluster, done))
        # shielded: a caller that gives up does not cancel the start the others wait for
        return await asyncio.shield(starting)

    def _started(self, cluster: str, done: asyncio.Future[_Cluster]) -> None:
        if self._starting.get(cluster) is done:
            del self._starting[cluster]
        if done.cancelled() or done.exception() is not None:
            return
        self._clusters.put(cluster, done.result(), self.clock.now_ms())
        self._evict(self.clock.now_ms())

    async def _start_cluster(self, cluster: str) -> _Cluster:
        producer = self._producer_factory(cluster)
        try:
            async with asyncio.timeout(DEFAULT_TIMEOUT_S):
                await producer.start()
        except BaseException as exc:
            self._stop_later(producer)
            if isinstance(exc, Exception) and not isinstance(exc, asyncio.CancelledError):
                raise classify_transient(f"connect to {cluster}", exc) from exc
            raise
        return _Cluster(
            producer,
            KafkaTarget(producer),
            WalTarget(producer, self.registry, self.clock, new_id),
        )

    def _evict(self, now: int) -> None:
        self._next_sweep_ms = now + 1000
        self.open_breakers.forget(self._breakers.evict(now))
        for cluster, entry in self._clusters.evict(now):
            entry.evicted = True
            if entry.users:  # a delivery is sending through it: closed when the last is done
                logger.info("closing the producer of cluster %s once its deliveries end", cluster)
                self._draining.add(entry)
            else:
                logger.info("closing the producer of idle cluster %s", cluster)
                self._close_later(entry)

    def _close_later(self, entry: _Cluster) -> None:
        entry.closing = True
        self._stop_later(entry.producer)

    def _stop_later(self, producer: Any) -> None:
        """Stop ``producer`` in the background: a cluster that does not answer delays no one."""
        task = asyncio.ensure_future(stop_consumer(producer))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every client this pool made."""
        for starting in list(self._starting.values()):
            starting.cancel()
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        for cluster in list(self._clusters):
            entry = self._clusters.pop(cluster)
            if entry is not None:
                entry.closing = True
                await stop_consumer(entry.producer)  # tolerant stop, same race as consumers
        for entry in list(self._draining):
            entry.closing = True
            await stop_consumer(entry.producer)
        self._draining.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = self._http_target = None
        if self._kv is not None:
            await self._kv.close()
            self._kv = None


def classify_transient(where: str, exc: Exception) -> TargetUnavailableError:
    """A producer that could not start: the cluster may be back later (retry, never DLQ)."""
    if isinstance(exc, TargetUnavailableError):
        return exc
    name = type(exc).__name__
    return TargetUnavailableError(f"{where}: {name}: {exc}", error_class=f"kafka_{name}")


def target_producer(cluster: str) -> Any:
    """The acks=all producer a kafka target of ``cluster`` sends with (the pool's default)."""
    return producer(cluster, TARGETS)
