"""The HTTP API: ``create_api(deps)`` over given collaborators, ``build_api(settings)`` for real.

It runs on aiohttp's low-level server (see walstream.api.router for why): ``Api.handle`` resolves
the route, calls the handler and turns every error into a response in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from types import TracebackType

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from walstream.api.auth import PRINCIPAL, ROUTE_ACCESS, Authenticator, require_tokens
from walstream.api.body import BODY_LIMIT, BodyLimits, check_length
from walstream.api.deps import ApiDeps
from walstream.api.handlers import install_routes
from walstream.api.mutation_handlers import install_mutation_routes
from walstream.api.replays import Replays
from walstream.api.responses import error_response, failure_response
from walstream.api.router import Router
from walstream.api.server import ApiServer
from walstream.api.worker_pages import WorkerPages
from walstream.core.auth import Access
from walstream.core.delay import TIERS_MS
from walstream.core.limits import InFlightLimiter
from walstream.dlq import DlqAccess
from walstream.errors import WalError
from walstream.kafka.admin import check_durability, ensure_topics
from walstream.kafka.producer import KafkaLogProducer
from walstream.namespaces.broadcast import NamespaceFeed
from walstream.runtime import tune_gc
from walstream.settings import Settings
from walstream.topology import delay_topic_specs

__all__ = ["Api", "build_api", "create_api", "serve_api"]

logger = logging.getLogger(__name__)


class Api:
    """The API over its dependencies; ``async with api:`` runs their start/stop work."""

    def __init__(self, deps: ApiDeps) -> None:
        self.deps = deps
        self.router = Router()
        install_routes(self.router)
        install_mutation_routes(self.router)
        #: handler -> the byte limit of its request bodies (walstream.api.body)
        self.body_limits = BodyLimits.from_settings(deps.settings)
        self.limits = {r.handler: self.body_limits.bytes_for(r.body) for r in self.router.routes()}
        self._exits = contextlib.AsyncExitStack()
        self.auth = Authenticator(deps.settings, deps.clock)
        #: handler -> what it needs (walstream.api.auth: a route not listed needs an admin)
        self.access = {
            r.handler: ROUTE_ACCESS.get((r.method, r.pattern), Access.ADMIN)
            for r in self.router.routes()
        }

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one request; never raises."""
        try:
            handler, params = self.router.resolve(request.method, request.path)
            if self.auth.enabled and (access := self.access[handler]) is not Access.OPEN:
                # 401/403 before the body is read; handlers that redact find the principal here
                request[PRINCIPAL] = self.auth.check(
                    request.headers.get("Authorization"), access, params.get("namespace")
                )
            limit = self.limits[handler]
            check_length(request, limit)  # 413 before reading a byte of the body
            request[BODY_LIMIT] = limit  # read_body stops there
            return await handler(request, self.deps, params)
        except WalError as exc:
            return error_response(exc)
        except Exception as exc:  # noqa: BLE001 - mapped to 4xx/500 (and logged) in one place
            return failure_response(request, exc)

    def make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        """Requests; handlers read bodies with walstream.api.body.read_body (each route's limit).

        aiohttp's ``client_max_size`` only bounds ``request.read()``, which no handler calls."""
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            task.get_loop(),  # asyncio.get_running_loop() costs a getpid() system call on 3.11
            client_max_size=self.deps.settings.max_request_bytes,
        )

    def server(self) -> web.Server:
        """An aiohttp low-level server for this API, with its read and idle timeouts."""
        settings = self.deps.settings
        return ApiServer(
            self.handle,
            request_factory=self.make_request,
            access_log=None,
            keepalive_timeout=settings.keepalive_timeout_s,
            header_timeout_s=settings.header_read_timeout_s,
        )

    async def __aenter__(self) -> Api:
        for start_stop in self.deps.lifespan:
            await self._exits.enter_async_context(contextlib.asynccontextmanager(start_stop)())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._exits.aclose()


def create_api(deps: ApiDeps) -> Api:
    """The API over the given collaborators."""
    return Api(deps)


def build_api(settings: Settings) -> Api:
    """The API with a real Kafka producer and a namespace feed, started and stopped with it."""
    require_tokens(settings)
    producer = KafkaLogProducer(
        settings.bootstrap_list,
        timeout_s=settings.write_timeout_s,
        retry_after_s=settings.shed_retry_after_s,
    )
    feed = NamespaceFeed(settings)
    # the DLQ routes wait for the broker as a write does: an outage is a 503, not a long hang
    dlq = DlqAccess(
        settings.bootstrap_list,
        request_timeout_s=settings.write_timeout_s,
        retry_after_s=settings.shed_retry_after_s,
    )
    replays = Replays(settings, feed.registry)
    worker = WorkerPages(settings.worker_base_url, timeout_s=settings.write_timeout_s)

    async def kafka_clients() -> AsyncIterator[None]:
        await producer.start()
        try:
            try:  # delayed writes go straight to the delay tiers: make sure they exist
                await check_durability(settings, process="API")
                await ensure_topics(
                    settings.bootstrap_list,
                    delay_topic_specs(
                        settings.app_id,
                        (0, *TIERS_MS),
                        settings.default_partitions,
                        settings.delay_grace_ms,
                        settings.replication_factor,
                        min_insync_replicas=settings.min_insync_replicas,
                    ),
                )
            except Exception as exc:  # noqa: BLE001 - the worker creates them too; serve anyway
                logger.warning("could not ensure the delay tier topics: %s", exc)
            await feed.start()
            try:
                if not await feed.wait_ready(settings.registry_ready_timeout_s):
                    logger.warning("namespace registry not loaded yet; writes get 503 until it is")
                yield
            finally:
                await worker.close()
                await replays.close()
                await dlq.close()
                await feed.stop()
        finally:
            await producer.stop()

    return create_api(
        ApiDeps(
            settings=settings,
            registry=feed.registry,
            producer=producer,
            limiter=InFlightLimiter(settings.max_in_flight),
            registry_loaded=feed.ready.is_set,
            dlq=dlq,
            replays=replays,
            worker=worker,
            lifespan=[kafka_clients],
        )
    )


async def serve_api(settings: Settings) -> None:
    """Serve the API on WALSTREAM_API_HOST:PORT until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with build_api(settings) as api:
        # SIGTERM: requests in flight get the time a write may take to be answered, then are
        # cancelled (aiohttp's default: 60 s for each connection's handler)
        runner = web.ServerRunner(api.server(), shutdown_timeout=settings.write_timeout_s + 1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.api_host, settings.api_port).start()
            logger.info("API listening on %s:%d", settings.api_host, settings.api_port)
            tune_gc(settings.gc_gen0_threshold)
            await stop.wait()
        finally:
            await runner.cleanup()
