"""walstream_target_breaker_open{target_kind} (the README's "breaker state") goes to 1 when a
target's breaker opens and back to 0 when it closes: the deliverer's attempts through the real
TargetPool against a real HTTP target, and the worker's pool reporting to the worker's metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from walstream.agents.outcomes import Outcome, Source
from walstream.clock import FakeClock
from walstream.metrics import WalMetrics
from walstream.records import encode_envelope
from walstream.settings import Settings
from walstream.targets.pool import TargetPool
from walstream.testing import (
    NOW_MS,
    RecordingEmitter,
    envelope,
    fake_deliverer,
    namespace_definition,
    registry_of,
)
from walstream.topology import default_topics

ROOT = Path(__file__).resolve().parents[2]
GAUGE = "walstream_target_breaker_open"
LOG = Source(default_topics("orders").log, 0, 0)


@pytest.fixture
async def target_url(aiohttp_server):
    """An HTTP target answering each POST with the next status of ``statuses``."""
    statuses: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=statuses.pop(0))

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook")), statuses


async def test_the_gauge_follows_the_breaker_of_a_target_the_deliverer_calls(target_url):
    url, statuses = target_url
    clock = FakeClock(NOW_MS)
    metrics_registry = CollectorRegistry()
    metrics = WalMetrics.create(metrics_registry)
    settings = Settings(
        bootstrap_servers="home:9092", breaker_threshold=2, breaker_base_open_ms=1_000
    )
    target = {"type": "http", "url": url}
    registry = registry_of(namespace_definition(target=target, max_attempts=10))
    pool = TargetPool(settings, registry, clock, metrics=metrics)
    deliverer = fake_deliverer(
        registry, None, RecordingEmitter(), clock, pool=pool, metrics=metrics
    )

    def gauge(kind: str = "http") -> float | None:
        return metrics_registry.get_sample_value(GAUGE, {"target_kind": kind})

    async def handle(n: int) -> Outcome:
        env = envelope(n, key=f"k{n}", now_ms=clock.now_ms())._replace(target=target)
        return await deliverer.handle(encode_envelope(env), f"k{n}".encode(), LOG)

    try:
        statuses.extend([503, 503])
        assert await handle(1) is Outcome.RETRY
        assert gauge() in (None, 0.0)  # one failure: still closed
        assert await handle(2) is Outcome.RETRY
        assert gauge() == 1.0  # two in a row: open
        assert await handle(3) is Outcome.DEFERRED  # refused without a call
        assert gauge() == 1.0
        clock.advance(1_000)
        statuses.append(200)
        assert await handle(4) is Outcome.DELIVERED  # the probe answers: closed
        assert gauge() == 0.0
        assert statuses == []  # the deferred record made no call
        assert gauge("kafka") is None  # per kind: only http's breaker moved
    finally:
        await pool.close()


def test_the_workers_pool_reports_to_the_workers_metrics():
    """walstream.worker.Delivery builds its pool with its metrics (in a subprocess: importing
    walstream.app builds the worker app from the environment)."""
    code = """
from prometheus_client import CollectorRegistry
from walstream.app import create_app
from walstream.namespaces.registry import NamespaceRegistry
from walstream.settings import Settings
from walstream.worker import Delivery

settings = Settings(bootstrap_servers="127.0.0.1:9", breaker_threshold=1)
metrics = CollectorRegistry()
delivery = Delivery(create_app(settings), settings, NamespaceRegistry(), metrics_registry=metrics)
values = []
for kind, endpoint in (("kv", "kv"), ("kafka", "kafka:b1:9092")):
    breaker = delivery.pool.breaker(endpoint)
    breaker.record_failure(0)
    values.append(metrics.get_sample_value("walstream_target_breaker_open", {"target_kind": kind}))
breaker.allow(10**6)
breaker.record_success()
values.append(metrics.get_sample_value("walstream_target_breaker_open", {"target_kind": "kafka"}))
values.append(metrics.get_sample_value("walstream_target_breaker_open", {"target_kind": "kv"}))
print(values)
"""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=ROOT,
        env={**os.environ, "WALSTREAM_BOOTSTRAP_SERVERS": "127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1.0, 1.0, 0.0, 1.0]"
