"""The Faust app (``faust -A walstream.app worker``): configuration and wiring only.

The app id, table names and agent names are persistent broker state (consumer group, changelog
topics): choose once, rename only with a migration.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import faust
import mode
from faust.types import AppT

if TYPE_CHECKING:
    from walstream.agents.delay import DelayStage
    from walstream.replication.stages import ReplicationStages

from walstream.kafka.admin import check_durability, ensure_topics
from walstream.namespaces.broadcast import NamespaceFeed
from walstream.namespaces.registry import NamespaceRegistry
from walstream.settings import Settings
from walstream.topology import changelog_topic_spec

__all__ = ["NamespaceService", "Worker", "app", "create_app", "faust_settings"]

logger = logging.getLogger(__name__)

_FALLBACK_BROKER = "127.0.0.1:9092"


class Worker(faust.Worker):
    """Faust's worker without its terminal spinner. To spin on every log record, the spinner sets
    the root logger to DEBUG: every debug call in aiokafka and Faust then builds a log record
    that no handler wants (measured: about 4 % of a delivering worker's CPU)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None

    async def on_start(self) -> None:
        # Runs before the app (a child of the worker) starts, and so before Faust creates its
        # changelog and leader topics with conf.topic_replication_factor.
        settings = _SETTINGS.get(self.app)
        if settings is not None:
            await _prepare_cluster(self.app, settings)
        # ... and before its consumer first joins the group: with the namespaces loaded now,
        # the agents' first subscription already names every namespace topic. Loaded later
        # (the app starts its services only once it has joined and recovered), they changed
        # the subscription and every worker start cost a second rebalance, whose revoke
        # delivered records again.
        namespaces = _NAMESPACES.get(self.app)
        if namespaces is not None:
            await namespaces.load()
        await super().on_start()


#: The walstream settings each app was created with (for its Worker).
_SETTINGS: weakref.WeakKeyDictionary[AppT, Settings] = weakref.WeakKeyDictionary()
#: Each app's namespace service (for its Worker, which loads the namespaces first).
_NAMESPACES: weakref.WeakKeyDictionary[AppT, NamespaceService] = weakref.WeakKeyDictionary()


async def _prepare_cluster(app: AppT, settings: Settings) -> None:
    """Warn when acks=all means one broker; create the tables' changelogs as walstream.topology
    specifies them (capped replication, min.insync.replicas), which Faust then finds made."""
    durability = await check_durability(settings, process="worker")
    app.conf.topic_replication_factor = durability.replication_factor
    specs = [
        changelog_topic_spec(
            table.changelog_topic.get_topic_name(),
            table.partitions or settings.default_partitions,
            settings.replication_factor,
            settings.min_insync_replicas,
        )
        for table in app.tables.values()
    ]
    await ensure_topics(settings.bootstrap_list, specs)


def faust_settings(settings: Settings) -> dict[str, Any]:
    """The Faust configuration walstream runs with."""
    servers = settings.bootstrap_servers or _FALLBACK_BROKER
    return {
        # walstream's transport (walstream.kafka.transport): Faust's aiokafka driver with
        # corrected end offsets for table recovery and a configurable fetch wait.
        "broker": [f"walkafka://{s.strip()}" for s in servers.split(",") if s.strip()],
        "store": settings.store,
        "datadir": settings.data_dir,
        # Tansu holds JoinGroup for max(1 s, session/2): Faust's default 60 s means 30 s starts.
        "broker_session_timeout": settings.broker_session_timeout_s,
        "broker_heartbeat_interval": settings.broker_heartbeat_interval_s,
        "broker_commit_interval": settings.commit_interval_s,
        "web_host": settings.worker_web_host,
        "web_bind": settings.worker_web_host,
        "web_port": settings.worker_web_port,
        "producer_acks": -1,
        # The API sizes what it accepts from this (walstream.core.limits): keep them together.
        "producer_max_request_size": settings.producer_max_request_bytes,
        "topic_partitions": settings.default_partitions,
        "topic_replication_factor": settings.replication_factor,
        "consumer_auto_offset_reset": "earliest",
        # A fetch hands out at most this many records. A partition paused for a hot key
        # (walstream.agents.dispatch) still hands out the rest of the batch it was fetched in:
        # bounded so, that rest cannot fill the agent's buffer and stall the other partitions
        # (aiokafka's default is unbounded: up to 1 MiB per partition, thousands of records).
        "broker_max_poll_records": settings.fetch_max_records,
        "Worker": Worker,
    }


class NamespaceService(mode.Service):
    """Runs the namespace feed inside the worker, so agents see every namespace change."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.listeners: list[Callable[[NamespaceRegistry], None]] = []
        self.feed = NamespaceFeed(settings, on_change=self._changed)
        self._loaded = False

    def _changed(self, registry: NamespaceRegistry) -> None:
        for listener in self.listeners:
            listener(registry)

    async def load(self) -> None:
        """Start the feed and wait (WALSTREAM_REGISTRY_READY_TIMEOUT_S at most) until it has
        read the control topic, then tell the listeners; once only (a worker calls it before
        its app starts, the app again when it starts this service)."""
        if self._loaded:
            return
        self._loaded = True
        await self.feed.start()
        if not await self.feed.wait_ready(self.settings.registry_ready_timeout_s):
            logger.warning("namespace registry not loaded yet; delivering what is known so far")
        self._changed(self.feed.registry)

    async def on_start(self) -> None:
        await self.load()

    async def on_stop(self) -> None:
        await self.feed.stop()


def _install_pages(
    app: faust.App,
    namespaces: NamespaceService,
    delay: DelayStage | None = None,
    replication: ReplicationStages | None = None,
) -> None:
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        loaded = namespaces.feed.ready.is_set()
        # Faust's "Worker ready": the first rebalance has ended and its recovery completed.
        # Before the first join nothing is rebalancing yet, so the flags alone said ready early.
        tables: Any = app.tables  # faust's TableManager; its type (TableManagerT) omits it
        joined = tables.recovery.completed.is_set()
        ready = loaded and joined and not app.rebalancing and not app.in_recovery
        body: dict[str, Any] = {"registry_loaded": loaded, "pid": os.getpid()}
        if delay is not None:
            # The delay stage is a consumer group of its own, joined a few seconds after the
            # agents': until it reads the tiers, a delayed write made now is late by that. Joined
            # is enough: with more workers than tier partitions, some own none and are ready.
            tiers = len(delay.assignment)
            ready = ready and delay.joined and not delay.should_stop
            body["delay_partitions"] = tiers
        if replication is not None:
            # The replication stages (issue 17) are consumer groups of their own too: until
            # each fan-out and region writer the registry asks for has joined, operations wait.
            waiting = replication.waiting()
            ready = ready and not waiting and not replication.should_stop
            body["replication_waiting"] = waiting
        body["status"] = "ready" if ready else "not ready"
        return web.json(body, status=200 if ready else 503)

    @app.page("/walstream/assignment")
    async def assignment(web: Any, request: Any) -> Any:
        tps = sorted(app.consumer.assignment()) if app.consumer else []
        return web.json(
            {
                "assignment": [[tp.topic, tp.partition] for tp in tps],
                "rebalancing": bool(app.rebalancing),
                "in_recovery": bool(app.in_recovery),
            }
        )


def create_app(
    settings: Settings, app_id: str | None = None, *, deliver: bool = False, **overrides: Any
) -> faust.App:
    """A configured walstream Faust app with the namespace feed and health pages.

    With ``deliver``, the app is a walstream worker: it delivers every namespace's records
    (walstream.worker).
    """
    conf = faust_settings(settings)
    conf.update(overrides)
    new_app = faust.App(app_id or settings.app_id, autodiscover=False, **conf)
    _SETTINGS[new_app] = settings
    namespaces = NamespaceService(settings, loop=None)
    # Faust starts an instance as readily as a class (App._prepare_subservice); typed for classes.
    new_app.service(namespaces)  # type: ignore[arg-type]
    _NAMESPACES[new_app] = namespaces
    delay = None
    replication = None
    if deliver:
        from walstream.worker import install_delivery

        delivery = install_delivery(new_app, settings, namespaces.feed.registry)
        namespaces.listeners.append(delivery.on_namespaces)
        delay = delivery.delay
        replication = delivery.replication
        from walstream.mutation_pages import install_mutation_page

        install_mutation_page(
            new_app,
            delivery.mutation_table,
            delivery.mutations.status,
            settings.default_partitions,
        )
    _install_pages(new_app, namespaces, delay, replication)
    return new_app


app = create_app(Settings.from_env(), deliver=True)
