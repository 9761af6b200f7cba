"""API fixtures: the real aiohttp app over an in-memory producer and a FakeClock."""

from __future__ import annotations

import pytest

from walstream.api.app import create_api
from walstream.kafka.producer import MemoryLogProducer
from walstream.settings import Settings
from walstream.testing import api_deps, registry_of


@pytest.fixture
def producer():
    return MemoryLogProducer()


@pytest.fixture
def registry():
    return registry_of(
        {
            "name": "orders",
            "max_payload_bytes": 1024,
            "max_delay_ms": 60_000,
            "target": {"type": "kafka", "topic": "orders.out"},
        }
    )


@pytest.fixture
def deps(producer, registry):
    settings = Settings(
        max_in_flight=4,
        max_batch_records=5,
        max_request_bytes=64 * 1024,
        auth=False,  # auth has its own tests (tests/api/test_auth.py)
    )
    return api_deps(settings, registry, producer)


@pytest.fixture
async def client(api_client, deps):
    return await api_client(create_api(deps))
