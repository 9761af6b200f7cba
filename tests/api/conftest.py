"""API fixtures: the real aiohttp app over an in-memory producer and a FakeClock."""

from __future__ import annotations

import pytest

from walstream.api.app import create_api
from walstream.api.deps import ApiDeps
from walstream.clock import FakeClock
from walstream.core.limits import InFlightLimiter
from walstream.kafka.producer import MemoryLogProducer
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.settings import Settings


@pytest.fixture
def producer():
    return MemoryLogProducer()


@pytest.fixture
def registry():
    registry = NamespaceRegistry()
    config = parse_namespace(
        {
            "name": "orders",
            "max_payload_bytes": 1024,
            "max_delay_ms": 60_000,
            "target": {"type": "kafka", "topic": "orders.out"},
        }
    )
    registry.apply(*encode_event(config, 1))
    return registry


@pytest.fixture
def deps(producer, registry):
    return ApiDeps(
        settings=Settings(
            max_in_flight=4,
            max_batch_records=5,
            max_request_bytes=64 * 1024,
            auth=False,  # auth has its own tests (tests/api/test_auth.py)
        ),
        registry=registry,
        producer=producer,
        limiter=InFlightLimiter(4),
        clock=FakeClock(1_800_000_000_000),
        rand=lambda: 0.5,
    )


@pytest.fixture
async def client(api_client, deps):
    return await api_client(create_api(deps))
