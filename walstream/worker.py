"""The worker's delivery wiring: agents, the attempts table, the delay stage, subscriptions.

Persistent names (renaming them loses state): the tables ``attempts``, ``ordering`` and
``mutations`` (changelogs ``<app-id>-<table>-changelog``), the agents ``deliver``,
``retry_failed``, ``mutation_ops`` and ``mutation_commit`` (multi-partition mutations, issue 18:
walstream.agents.mutations), and the delay stage's consumer group ``<app-id>-delay``.

Every namespace topic must have the deployment's partition count (WALSTREAM_DEFAULT_PARTITIONS):
the tables are co-partitioned with them, and a record's retries come back to the partition
number its log record was on, so one worker owns a record's whole retry chain and its count,
and a key's ordering state.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Callable
from typing import Any

import faust
import faust.streams
import mode
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from walstream.agents.attempts import Attempts, TableAttempts
from walstream.agents.delay import DelayStage
from walstream.agents.deliver import Deliverer
from walstream.agents.dlq_monitor import DlqMonitor
from walstream.agents.emit import AiokafkaProbe, EmitGuard, FaustEmitter
from walstream.agents.failures import FailureRouter
from walstream.agents.keyed_agent import keyed_agent
from walstream.agents.mutation_rows import TableRows
from walstream.agents.mutations import MutationStage
from walstream.agents.ordering import KeyOrder
from walstream.agents.ordering_gate import DRAIN_MAX, OrderingGate
from walstream.agents.outcomes import DeliverySettings, Emitter, LogReading
from walstream.agents.tables import TableChangelog, TableStore
from walstream.agents.target_call import TargetCall
from walstream.clock import Clock, SystemClock
from walstream.errors import WalError
from walstream.kafka.clients import ClientIds
from walstream.kafka.dynamic_topic import DynamicTopic
from walstream.kafka.log_reader import LogReader
from walstream.metrics import WalMetrics
from walstream.namespaces.registry import NamespaceRegistry
from walstream.replication.stages import ReplicationStages
from walstream.runtime import tune_gc
from walstream.settings import Settings
from walstream.targets.pool import TargetPool
from walstream.topology import mutation_topics, poison_topic

__all__ = ["Delivery", "build_deliverer", "install_delivery"]

logger = logging.getLogger(__name__)

#: How much longer than the hand-over lead an agent holds a record handed over before its due
#: time (the clocks of two hosts may differ a little); further out, it goes back to wait.
HOLD_SLACK_MS = 1_000


def build_deliverer(
    *,
    registry: NamespaceRegistry,
    pool: TargetPool,
    attempts: Attempts,
    emitter: Emitter,
    clock: Clock,
    rand: Callable[[], float],
    settings: DeliverySettings,
    order: KeyOrder | None = None,
    reader: LogReading | None = None,
    metrics: WalMetrics | None = None,
) -> Deliverer:
    """A ``Deliverer`` and its parts: the ordering gate over ``order`` (an empty in-memory table
    if None) reading parked records with ``reader``, the failure routing, the target call."""
    gate = OrderingGate(
        registry=registry,
        order=order if order is not None else KeyOrder({}),
        emitter=emitter,
        clock=clock,
        reader=reader,
        drain_max=settings.drain_max,
    )
    failures = FailureRouter(
        registry=registry,
        attempts=attempts,
        emitter=emitter,
        clock=clock,
        rand=rand,
        gate=gate,
        settings=settings,
        metrics=metrics,
    )
    target = TargetCall(pool, clock, rand)
    return Deliverer(
        registry=registry,
        attempts=attempts,
        clock=clock,
        gate=gate,
        failures=failures,
        target=target,
        metrics=metrics,
    )


class Delivery(mode.Service):
    """Owns what the delivery agents share: the target pool, the subscriptions, the metrics."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        registry: NamespaceRegistry,
        *,
        metrics_registry: CollectorRegistry,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.settings = settings
        self.registry = registry
        self.metrics_registry = metrics_registry
        self.metrics = WalMetrics.create(metrics_registry)
        self.clock = SystemClock()
        self.pool = TargetPool(settings, registry, self.clock, metrics=self.metrics)
        self.log_topics = DynamicTopic(app, key_serializer="raw", value_serializer="raw")
        self.retry_topics = DynamicTopic(app, key_serializer="raw", value_serializer="raw")
        self.attempts = app.Table("attempts", default=int, partitions=settings.default_partitions)
        self.ordering = app.Table(
            "ordering",
            key_type=bytes,  # raw bytes both ways: KeyOrder encodes the states itself
            value_type=bytes,
            partitions=settings.default_partitions,
        )
        self.key_order = KeyOrder(
            TableStore(self.ordering),
            TableChangelog(self.ordering),
            max_parked=settings.ordering_max_parked_per_key,
        )
        # The blocked-key gauges come from an index of head records: rebuilt once the table
        # holds what its changelog says (after every rebalance's recovery).
        self.ordering.on_recover(self._reindex_ordering)
        # The delivered marks' index (which to drop first), rebuilt the same way.
        self.table_attempts = TableAttempts(self.attempts)
        self.attempts.on_recover(self._reindex_attempts)
        self.log_reader = LogReader(
            settings.bootstrap_list, client_id=ClientIds.parked_reader(app.conf.id)
        )
        self._blocked_labels: set[str] = set()
        self._unreadable_labels: set[str] = set()
        self.deliverer = build_deliverer(
            registry=registry,
            pool=self.pool,
            attempts=self.table_attempts,
            emitter=FaustEmitter(app, guard=self._emit_guard(app)),
            clock=self.clock,
            rand=random.random,
            settings=DeliverySettings(
                delay_partitions=settings.default_partitions,
                app_id=app.conf.id,
                handoff_lead_ms=settings.delay_handoff_lead_ms,
                drain_max=DRAIN_MAX,
                history_max_bytes=settings.history_max_bytes,
            ),
            order=self.key_order,
            reader=self.log_reader,
            metrics=self.metrics,
        )
        self.delay = DelayStage(
            settings.replace(app_id=app.conf.id),
            group_id=ClientIds.delay_group(app.conf.id),
            metrics=self.metrics,
            clock=self.clock,
            handoff_lead_ms=settings.delay_handoff_lead_ms,
            registry=registry,
        )
        self.dlq_monitor = DlqMonitor(settings, self.metrics, clock=self.clock)
        # multi-partition mutations (issue 18): their table, topics and stage
        self.mutation_table = app.Table(
            "mutations", key_type=bytes, value_type=bytes, partitions=settings.default_partitions
        )
        self.mutation_topics = DynamicTopic(app, key_serializer="raw", value_serializer="raw")
        self.marker_topics = DynamicTopic(app, key_serializer="raw", value_serializer="raw")
        self.mutations = MutationStage(
            settings=settings.replace(app_id=app.conf.id),
            registry=registry,
            rows=TableRows(self.mutation_table),
            pool=self.pool,
            emitter=FaustEmitter(app, guard=self._emit_guard(app)),
            clock=self.clock,
            metrics=self.metrics,
        )
        self.mutation_table.on_recover(self._reindex_mutations)
        self._purges: set[asyncio.Future[int]] = set()
        # a replicated namespace's fan-out and region writers (issue 17), not the agents
        self.replication = ReplicationStages(settings, metrics=self.metrics)

    def _emit_guard(self, app: faust.App) -> EmitGuard:
        """A write whose destination is missing past WALSTREAM_EMIT_DEST_GRACE_MS is given up
        (the record dead-lettered), unless it is a DLQ entry (the last resort)."""
        poison = poison_topic(app.conf.id)
        registry = self.registry

        def last_resort(topic: str) -> bool:
            if topic == poison or topic.endswith(".dlq"):
                return True
            name = registry.namespace_of(topic)
            try:
                return name is not None and registry.get(name).topics.dlq == topic
            except WalError:
                return False

        return EmitGuard(
            grace_ms=self.settings.emit_dest_grace_ms,
            clock=self.clock,
            last_resort=last_resort,
            probe=AiokafkaProbe(app),
            metrics=self.metrics,
        )

    async def on_started(self) -> None:
        # Besides the CPU, this shrank the collector's pauses that made due records late
        # (60-90 ms, several a minute under load) to a few ms.
        tune_gc(self.settings.gc_gen0_threshold)

    async def on_stop(self) -> None:
        for purge in list(self._purges):
            purge.cancel()
        await asyncio.gather(*self._purges, return_exceptions=True)
        await self.pool.close()
        await self.log_reader.stop()

    async def _reindex_ordering(self) -> None:
        self.key_order.reindex()

    async def _reindex_attempts(self) -> None:
        self.table_attempts.reindex()

    async def _reindex_mutations(self) -> None:
        self.mutations.reindex()
        # a partition recovered here may hold rows of namespaces that left meanwhile
        await self.mutations.purge_gone()

    @mode.Service.timer(5.0)
    async def _blocked_gauges(self) -> None:
        """Blocked keys per namespace (ordering = key), from this worker's table partitions:
        from the index of head records (O(blocked keys)), never a decode of the table."""
        now = self.clock.now_ms()
        stats = self.key_order.stats()
        ordered = {ns.name for ns in self.registry if ns.key_ordered}
        for name in (self._blocked_labels | ordered) - set(stats):
            self.metrics.blocked_keys.labels(name).set(0)
            self.metrics.blocked_waiting.labels(name).set(0)
            self.metrics.blocked_oldest_age.labels(name).set(0)
        for name, blocked in stats.items():
            self.metrics.blocked_keys.labels(name).set(blocked.keys)
            self.metrics.blocked_waiting.labels(name).set(blocked.waiting)
            oldest = blocked.oldest_since_ms
            age = 0.0 if oldest is None else max(0, now - oldest) / 1000
            self.metrics.blocked_oldest_age.labels(name).set(age)
        self._blocked_labels = set(stats)
        self.mutations.report()

    def on_namespaces(self, registry: NamespaceRegistry) -> None:
        """Subscribe the agents to the topics of every namespace this worker can serve."""
        for name in self._unreadable_labels - set(registry.unreadable):
            self.metrics.namespace_unreadable.labels(name).set(0)
        for name in registry.unreadable:
            self.metrics.namespace_unreadable.labels(name).set(1)
        self._unreadable_labels = set(registry.unreadable)
        wanted = []
        for ns in registry:
            if ns.replication is not None:
                continue  # its log is read by its replication stages
            if ns.partitions not in (None, self.settings.default_partitions):
                logger.error(
                    "namespace %s has %d partitions; this deployment serves %d: not subscribed",
                    ns.name,
                    ns.partitions,
                    self.settings.default_partitions,
                )
                continue
            wanted.append(ns)
        if self.log_topics.set_topics(ns.topics.log for ns in wanted):
            self.log_topics.resubscribe(self.app)
        if self.retry_topics.set_topics(ns.topics.retry for ns in wanted):
            self.retry_topics.resubscribe(self.app)
        self.dlq_monitor.watch((ns.name, ns.topics.dlq) for ns in wanted)
        mutating = [
            mutation_topics(ns.name)
            for ns in registry
            if ns.mutations is not None
            and ns.partitions in (None, self.settings.default_partitions)
        ]
        if self.mutation_topics.set_topics(t.mutations for t in mutating):
            self.mutation_topics.resubscribe(self.app)
        if self.marker_topics.set_topics(t.markers for t in mutating):
            self.marker_topics.resubscribe(self.app)
        # A namespace that left (deleted, or its mutations block removed) is no longer read, so
        # the wakes and Forgets that would drop its transactions' rows never come: drop them
        # now, one pass over this worker's table partitions (and after each recovery).
        if self.mutations.namespaces_changed(
            (ns.name for ns in registry if ns.mutations is not None), registry.unreadable
        ):
            self._purges.add(purge := asyncio.ensure_future(self.mutations.purge_gone()))
            purge.add_done_callback(self._purges.discard)
        logger.info("delivering namespaces: %s", [ns.name for ns in wanted])
        self.replication.on_namespaces(registry)


def bind_event(event: Any) -> None:
    """Make ``event`` the current event of the running task, as Faust's stream does for its own.

    Table writes find their changelog partition (and a RocksDB store its partition database)
    through the current event. A dispatcher task inherits the context it was created in, which
    names the first record of its key's queue, not the record it is handling now (and only by
    weak reference: it may be gone)."""
    faust.streams._current_event.set(weakref.ref(event))


def install_delivery(app: faust.App, settings: Settings, registry: NamespaceRegistry) -> Delivery:
    """Add the deliver and retry agents, the attempts table and the delay stage to ``app``."""
    metrics_registry = CollectorRegistry()
    delivery = Delivery(app, settings, registry, metrics_registry=metrics_registry)
    # Faust coalesces subscription changes for 45 s (a private setting): a new namespace should
    # start flowing within seconds. Set before anything can change the subscription.
    conductor: Any = app.topics
    conductor._resubscribe_sleep_lock_seconds = settings.resubscribe_delay_s
    deliverer = delivery.deliverer

    max_hold_ms = settings.delay_handoff_lead_ms + HOLD_SLACK_MS
    for topics, handler, name in (
        (delivery.log_topics, deliverer.handle, "deliver"),
        (delivery.retry_topics, deliverer.handle, "retry_failed"),
        (delivery.mutation_topics, delivery.mutations.handle_op, "mutation_ops"),
        (delivery.marker_topics, delivery.mutations.handle_marker, "mutation_commit"),
    ):
        agent = keyed_agent(
            app, handler, settings=settings, clock=delivery.clock, bind_event=bind_event,
            max_hold_ms=max_hold_ms,
        )  # fmt: skip
        app.agent(topics, name=name)(agent)
    # Faust starts an instance as readily as a class (App._prepare_subservice); typed for classes.
    app.service(delivery)  # type: ignore[arg-type]
    app.service(delivery.delay)  # type: ignore[arg-type]
    app.service(delivery.dlq_monitor)  # type: ignore[arg-type]
    app.service(delivery.replication)  # type: ignore[arg-type]

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset in content_type=; the exposition format names one
        return web.bytes(
            generate_latest(metrics_registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return delivery
