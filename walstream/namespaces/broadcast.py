"""Namespace broadcast over the control topic (seed 002, "Kafka broadcast for shared state").

Every process reads the whole control topic with a plain groupless consumer, from the beginning,
and folds it into its own NamespaceRegistry; a change published by any process reaches every
running process without a restart. A plain consumer replaces Faust's GlobalTable on purpose: it
needs no consumer group, no changelog and no table recovery (faust-streaming issues #74, #651).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from walstream import topology
from walstream.aio import Backoff, cancel_and_wait, supervised
from walstream.clock import Clock, SystemClock
from walstream.errors import ConfigError, VersionConflictError, WalError
from walstream.kafka import clients
from walstream.kafka.admin import ensure_namespace_topics, ensure_topics
from walstream.kafka.clients import stop_consumer
from walstream.namespaces.config import NamespaceConfig
from walstream.namespaces.registry import (
    NamespaceRegistry,
    encode_event,
    next_event,
)
from walstream.settings import Settings
from walstream.topology import TopicSpec, control_topic_spec

__all__ = ["NamespaceFeed", "NamespacePublisher", "namespace_topic_specs", "region_topic_specs"]

logger = logging.getLogger(__name__)

#: the feed's waits after failures in a row (a broker away, say)
_FEED_BACKOFF = Backoff(first_s=0.1, cap_s=5.0)


def namespace_topic_specs(config: NamespaceConfig, settings: Settings) -> list[TopicSpec]:
    """The topics a namespace needs on the cluster (walstream.topology.namespace_topic_specs),
    with the topic and DLQ of each replication region on this cluster, and its mutation and
    marker topics when it takes multi-partition mutations (block ``mutations``)."""
    mutations = (
        topology.mutation_topic_specs(
            config.name,
            config.partitions or settings.default_partitions,
            replication_factor=settings.replication_factor,
            min_insync_replicas=settings.min_insync_replicas,
        )
        if config.mutations is not None
        else []
    )
    return [
        *topology.namespace_topic_specs(
            config.topics,
            config.partitions or settings.default_partitions,
            log_retention_ms=config.log_retention_ms,
            dlq_retention_ms=config.dlq_retention_ms,
            replication_factor=settings.replication_factor,
            min_insync_replicas=settings.min_insync_replicas,
        ),
        *region_topic_specs(config, settings).get(None, []),
        *mutations,
    ]


def region_topic_specs(
    config: NamespaceConfig, settings: Settings
) -> dict[str | None, list[TopicSpec]]:
    """A replicated namespace's region topics and DLQs (issue 17) by the Kafka cluster of their
    region (None: this deployment's)."""
    by_cluster: dict[str | None, list[TopicSpec]] = {}
    for region in config.replication.regions if config.replication is not None else ():
        by_cluster.setdefault(region.bootstrap_servers, []).extend(
            topology.region_topic_specs(
                config.name,
                region.name,
                config.partitions or settings.default_partitions,
                replication_factor=settings.replication_factor,
                min_insync_replicas=settings.min_insync_replicas,
            )
        )
    return by_cluster


def _control_spec(settings: Settings) -> TopicSpec:
    return control_topic_spec(
        settings.control_topic, settings.replication_factor, settings.min_insync_replicas
    )


class NamespaceFeed:
    """Keeps a NamespaceRegistry converged with the control topic, in the background.

    ``ready`` is set once every partition of the control topic has been read up to the high
    watermark seen in a fetch (not ListOffsets, which some brokers under-report).
    """

    def __init__(
        self,
        settings: Settings,
        registry: NamespaceRegistry | None = None,
        on_change: Callable[[NamespaceRegistry], None] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else NamespaceRegistry()
        self.ready = asyncio.Event()
        self._on_change = on_change
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        #: the control topic's partitions, assigned from their beginnings (once known)
        self._tps: list[TopicPartition] = []

    async def start(self) -> None:
        servers = self.settings.bootstrap_list
        await ensure_topics(servers, [_control_spec(self.settings)])
        self._consumer = clients.reader(servers, clients.NAMESPACE_FEED)
        await self._consumer.start()
        self._tps = []
        self._task = asyncio.create_task(self._run(), name="namespace-feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await stop_consumer(consumer)

    async def wait_ready(self, within_s: float) -> bool:
        """Wait until the registry has caught up; return whether it did in time."""
        try:
            async with asyncio.timeout(within_s):
                await self.ready.wait()
        except TimeoutError:
            return False
        return True

    async def wait_past(self, partition: int, offset: int, within_s: float) -> None:
        """Wait until the feed has folded the control record at ``partition``@``offset``.

        Raises:
            WalError: not within ``within_s``.
        """
        consumer = self._consumer
        assert consumer is not None  # noqa: S101 - start() first
        tp = TopicPartition(self.settings.control_topic, partition)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            if tp in consumer.assignment() and await consumer.position(tp) > offset:
                return
            if loop.time() > deadline:
                raise WalError(f"the control topic was not read past {tp}@{offset} in time")
            await asyncio.sleep(0.05)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        topic = self.settings.control_topic
        while True:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return [TopicPartition(topic, p) for p in sorted(parts)]
            await consumer.topics()  # refreshes metadata: the topic may be brand new
            await asyncio.sleep(0.1)

    async def _run(self) -> None:
        await supervised(
            "namespace feed",  # it must outlive any surprise: it is the config source
            self._step,
            backoff=_FEED_BACKOFF,
            log=logger,
            expected=(KafkaError, OSError),
        )

    async def _step(self) -> None:
        consumer = self._consumer
        assert consumer is not None  # noqa: S101 - set by start()
        if not self._tps:
            self._tps = await self._partitions(consumer)
            consumer.assign(self._tps)
            await consumer.seek_to_beginning(*self._tps)
        batches = await consumer.getmany(timeout_ms=500)
        changed = False
        for records in batches.values():
            for record in records:
                self.registry.apply(record.key, record.value)
                changed = True
        if changed and self._on_change is not None:
            self._on_change(self.registry)
        if not self.ready.is_set() and await self._caught_up(consumer, self._tps):
            logger.info("namespace registry loaded: %s", self.registry.names())
            self.ready.set()

    async def _caught_up(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
        for tp in tps:
            highwater = consumer.highwater(tp)
            if highwater is None or await consumer.position(tp) < highwater:
                return False
        return True


class NamespacePublisher:
    """Publishes namespace changes to the control topic (and creates the namespace's topics)."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._producer: AIOKafkaProducer | None = None
        #: every namespace's topics, for apply()'s topic checks (walstream.kafka.admin)
        self._feed: NamespaceFeed | None = None

    async def start(self) -> None:
        servers = self.settings.bootstrap_list
        await ensure_topics(servers, [_control_spec(self.settings)])
        self._feed = NamespaceFeed(self.settings)
        await self._feed.start()
        self._producer = clients.producer(servers, clients.NAMESPACE_PUBLISHER)
        await self._producer.start()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        feed, self._feed = self._feed, None
        if feed is not None:
            await feed.stop()

    async def _registry(self) -> NamespaceRegistry:
        feed = self._feed
        assert feed is not None, "start() first"  # noqa: S101
        if not await feed.wait_ready(self.settings.registry_ready_timeout_s):
            raise ConfigError(
                "control topic",
                self.settings.control_topic,
                "could not be read in time: the namespaces' topics cannot be checked",
            )
        return feed.registry

    async def apply(self, config: NamespaceConfig, *, expect_version: int | None = None) -> int:
        """Create the namespace's topics, then broadcast its configuration; return its version.

        The version is one up from the one this publisher's registry has in force;
        ``expect_version`` makes the apply a compare-and-set against it. Once written, the
        event is read back: if another apply won meanwhile (a newer version already ahead of
        ours), the winner is published again so the last event of the key stays the winner
        (compaction keeps only that one), and the apply fails.

        Raises:
            VersionConflictError: ``expect_version`` is not the version in force, or a
                concurrent apply won.
            ConfigError: the namespace is live and ``config`` changes its topics.
            ConfigError: the namespace asks for another partition count than the deployment's
                (workers keep per-record state co-partitioned with every namespace topic).
            TopicError: a topic is another namespace's or the deployment's own, has another
                partition count, or could not be created (walstream.kafka.admin); nothing is
                broadcast.
        """
        assert self._producer is not None, "start() first"  # noqa: S101
        wanted = self.settings.default_partitions
        if config.partitions is not None and config.partitions != wanted:
            raise ConfigError(
                f"{config.name}: partitions",
                config.partitions,
                f"every namespace of this deployment has WALSTREAM_DEFAULT_PARTITIONS={wanted}",
            )
        registry = await self._registry()
        version, updated_at_ms = next_event(registry, config, self.clock.now_ms(), expect_version)
        await ensure_namespace_topics(
            self.settings, config, namespace_topic_specs(config, self.settings), registry
        )
        for cluster, specs in region_topic_specs(config, self.settings).items():
            if cluster is not None:  # a region on its own cluster: its topics there
                await ensure_topics(cluster, specs)
        key, value = encode_event(config, updated_at_ms, version)
        sent = await self._producer.send_and_wait(self.settings.control_topic, value, key=key)
        registry.apply(key, value)  # the next apply() of this run checks against it at once
        await self._confirm(config.name, (version, updated_at_ms), sent.partition, sent.offset)
        return version

    async def _confirm(self, name: str, ours: tuple[int, int], partition: int, offset: int) -> None:
        """Read the control topic past our event; fail (and keep the winner last) if it lost."""
        feed, producer = self._feed, self._producer
        assert feed is not None  # noqa: S101 - start() first
        assert producer is not None  # noqa: S101
        await feed.wait_past(partition, offset, self.settings.registry_ready_timeout_s)
        registry = feed.registry
        if name in registry:
            winner = (registry.version(name), registry.updated_at_ms(name))
            if winner == ours:
                return
            if winner > ours:  # ours is stale and last: publish the winner again
                key, value = encode_event(registry.get(name), winner[1], winner[0])
                await producer.send_and_wait(self.settings.control_topic, value, key=key)
            raise VersionConflictError(
                f"namespace {name!r}: a concurrent apply won (version {winner[0]}); "
                "read it again (walstream ns show) and apply again"
            )
        raise VersionConflictError(f"namespace {name!r} was deleted or replaced meanwhile")

    async def delete(self, name: str) -> None:
        """Broadcast a tombstone: the namespace stops accepting writes. Its topics are kept."""
        assert self._producer is not None, "start() first"  # noqa: S101
        await self._producer.send_and_wait(self.settings.control_topic, None, key=name.encode())
