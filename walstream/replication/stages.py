"""The replication stages a worker runs (issue 17): for every replicated namespace, its
fan-outs (one to the regions on the deployment's own cluster, one to each region naming a
cluster of its own: walstream.replication.fanout) and a writer per region; with ``region`` set
(``walstream worker --region r``), only region r's writers (that region's deployment). The
fan-outs run in the main worker, whatever the regions' deployments: they read the namespace's
log on the deployment's own cluster and write to the regions' topics on their clusters, each in
its own consumer group (a region whose cluster is away holds back only its own fan-out, and its
operations wait in the log).

The set of stages follows the namespace registry: ``on_namespaces`` (a listener of the
namespace feed) says what is wanted, and the service starts the stages that are missing and
stops those no longer wanted (a namespace removed, or its replication changed), each a child
service with its own consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any, Literal, NamedTuple

import mode
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from walstream.aio import cancel_and_wait
from walstream.metrics import WalMetrics
from walstream.namespaces.broadcast import NamespaceFeed
from walstream.namespaces.registry import NamespaceRegistry
from walstream.namespaces.replication import Replication
from walstream.replication.dlq_gauge import RegionDlqGauge
from walstream.replication.fanout import FanOut, fanout_regions_of
from walstream.replication.stage import BatchStage
from walstream.replication.writer import RegionWriter
from walstream.settings import Settings
from walstream.topology import region_dlq_topic

__all__ = ["ReplicationStages", "run_region"]

logger = logging.getLogger(__name__)


class StageKey(NamedTuple):
    """A stage: a namespace's fan-out to ``region`` (None: to the regions on the deployment's
    cluster), or its writer of ``region``."""

    namespace: str
    region: str | None
    kind: Literal["fanout", "writer"]

    @property
    def label(self) -> str:
        """What /readyz calls it: ``ns/r`` (a writer), ``ns/fanout`` (the fan-out to the regions
        on the deployment's cluster), ``ns/fanout/r`` (the fan-out to a region on its own)."""
        if self.kind == "writer":
            return f"{self.namespace}/{self.region}"
        if self.region is None:
            return f"{self.namespace}/fanout"
        return f"{self.namespace}/fanout/{self.region}"


class ReplicationStages(mode.Service):
    """Starts and stops the replication stages the namespace registry asks for."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: WalMetrics | None = None,
        region: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics
        self.region = region
        self.running: dict[StageKey, tuple[Replication, BatchStage]] = {}
        self._wanted: dict[StageKey, tuple[str, Replication]] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def waiting(self) -> list[str]:
        """The stages the registry asks for that do not run yet or have not joined their
        consumer group (:attr:`StageKey.label`), sorted: the worker is not ready until none."""
        waiting = []
        for key, (_, replication) in self._wanted.items():
            running = self.running.get(key)
            joined = running is not None and running[0] == replication and running[1].joined
            if not joined:
                waiting.append(key.label)
        return sorted(waiting)

    def on_namespaces(self, registry: NamespaceRegistry) -> None:
        """What to run for ``registry``'s replicated namespaces (a namespace feed listener)."""
        wanted: dict[StageKey, tuple[str, Replication]] = {}
        for ns in registry:
            replication = ns.replication
            if replication is None:
                continue
            if self.region is None:  # the fan-outs run in the main worker
                for target in fanout_regions_of(replication):
                    wanted[StageKey(ns.name, target, "fanout")] = (ns.topics.log, replication)
            for name in replication.region_names:
                if self.region in (None, name):
                    wanted[StageKey(ns.name, name, "writer")] = (ns.topics.log, replication)
        self._wanted = wanted
        self._changed.set()

    async def on_started(self) -> None:
        self._task = asyncio.ensure_future(self._follow())

    async def on_stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        running, self.running = self.running, {}
        for _, stage in running.values():
            await stage.stop()

    async def _follow(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                started = await self.reconcile()
            except Exception:  # the stages must outlive any surprise: try again shortly
                logger.exception("replication stages: reconcile failed; again in 1s")
                started = False
            if not started:
                await asyncio.sleep(1.0)
                self._changed.set()

    async def reconcile(self) -> bool:
        """Stop the stages no longer wanted (or made from another config), start the missing,
        each on its own (one that cannot start, e.g. its region's cluster away, delays no
        other); return whether all started (if not, the caller tries the rest again)."""
        wanted = self._wanted
        for key, (config, stage) in list(self.running.items()):
            if key not in wanted or wanted[key][1] != config:
                del self.running[key]
                await stage.stop()
                logger.info("replication stage stopped: %s", key.label)
        starting = [
            self._start(key, log_topic, replication)
            for key, (log_topic, replication) in wanted.items()
            if key not in self.running
        ]
        return all(await asyncio.gather(*starting))

    async def _start(self, key: StageKey, log_topic: str, replication: Replication) -> bool:
        stage = self._make(key, log_topic, replication)
        try:
            await stage.start()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await stage.stop()  # what its start opened
            if not isinstance(exc, Exception):
                raise
            logger.warning("replication stage %s did not start (again in 1s): %r", key.label, exc)
            return False
        self.running[key] = (replication, stage)
        logger.info("replication stage started: %s", key.label)
        return True

    def _make(self, key: StageKey, log_topic: str, replication: Replication) -> BatchStage:
        namespace, region, kind = key
        if kind == "fanout":
            return FanOut(
                self.settings,
                namespace=namespace,
                log_topic=log_topic,
                replication=replication,
                region=region,
            )
        config = replication.region(region) if region is not None else None
        assert config is not None  # noqa: S101 - named by replication.region_names
        writer = RegionWriter(
            self.settings,
            namespace=namespace,
            region=config,
            replication=replication,
            metrics=self.metrics,
        )
        if self.metrics is not None:  # the region DLQ's size, started and stopped with it
            writer.add_dependency(
                RegionDlqGauge(
                    self.metrics,
                    namespace=namespace,
                    region=config.name,
                    topic=region_dlq_topic(namespace, config.name),
                    servers=writer.servers,
                )
            )
        return writer


async def run_region(settings: Settings, region: str) -> None:
    """``walstream worker --region r``: region r's writers of every replicated namespace that
    names it, following the namespace registry, until SIGINT or SIGTERM (the fan-outs, which
    fill region r's topic, run in the main worker: they read the log on its cluster). It
    serves /metrics, /healthz and /readyz (ready: the registry read and every writer joined) on
    WALSTREAM_WORKER_WEB_HOST:PORT, as a worker does; a port already taken is logged and the
    writers run without them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    registry = CollectorRegistry()
    stages = ReplicationStages(settings, region=region, metrics=WalMetrics.create(registry))
    feed = NamespaceFeed(settings, on_change=stages.on_namespaces)
    pages = await _serve_pages(settings, stages, feed, registry)
    try:
        await stages.start()
        try:
            await feed.start()
            try:
                await stop.wait()
            finally:
                await feed.stop()
        finally:
            await stages.stop()
    finally:
        if pages is not None:
            await pages.cleanup()


async def _serve_pages(
    settings: Settings,
    stages: ReplicationStages,
    feed: NamespaceFeed,
    registry: CollectorRegistry,
) -> web.AppRunner | None:
    """A region deployment's /metrics, /healthz and /readyz (None: its port is taken)."""

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        loaded = feed.ready.is_set()
        waiting = stages.waiting()
        ready = loaded and not waiting and not stages.should_stop
        body = {
            "status": "ready" if ready else "not ready",
            "registry_loaded": loaded,
            "replication_waiting": waiting,
            "pid": os.getpid(),
        }
        return web.json_response(body, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.worker_web_host, settings.worker_web_port).start()
    except OSError as exc:
        logger.warning(
            "region writers: /metrics and /readyz not served on %s:%s (%s)",
            settings.worker_web_host,
            settings.worker_web_port,
            exc,
        )
        await runner.cleanup()
        return None
    return runner
