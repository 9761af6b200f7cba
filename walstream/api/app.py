"""The aiohttp application: ``create_api(deps)`` for tests, ``build_api(settings)`` for real."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from walstream.api.deps import DEPS, ApiDeps
from walstream.api.handlers import routes
from walstream.api.middlewares import error_middleware
from walstream.core.limits import InFlightLimiter
from walstream.kafka.producer import KafkaLogProducer
from walstream.namespaces.broadcast import NamespaceFeed
from walstream.settings import Settings

__all__ = ["build_api", "create_api"]

logger = logging.getLogger(__name__)


def create_api(deps: ApiDeps) -> web.Application:
    """The API over the given collaborators."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=deps.settings.max_request_bytes
    )
    app[DEPS] = deps
    app.add_routes(routes)
    app.cleanup_ctx.extend(deps.cleanup)
    return app


def build_api(settings: Settings) -> web.Application:
    """The API with a real Kafka producer and a namespace feed, started and stopped with it."""
    producer = KafkaLogProducer(settings.bootstrap_list, timeout_s=settings.write_timeout_s)
    feed = NamespaceFeed(settings)

    async def kafka_clients(app: web.Application) -> AsyncIterator[None]:
        await producer.start()
        await feed.start()
        if not await feed.wait_ready(settings.registry_ready_timeout_s):
            logger.warning("namespace registry not loaded yet; writes get 503 until it is")
        try:
            yield
        finally:
            await feed.stop()
            await producer.stop()

    deps = ApiDeps(
        settings=settings,
        registry=feed.registry,
        producer=producer,
        limiter=InFlightLimiter(settings.max_in_flight),
        registry_loaded=feed.ready.is_set,
        cleanup=[kafka_clients],
    )
    return create_api(deps)
