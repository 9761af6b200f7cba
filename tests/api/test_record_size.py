"""The API accepts a record only if the worker can write it again with its history: records are
bounded by the worker's producer limit less the history bound and the worker's allowance."""

from __future__ import annotations

import orjson
import pytest

from walstream.api.app import create_api
from walstream.errors import ConfigError
from walstream.kafka.producer import MemoryLogProducer
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.settings import Settings
from walstream.testing import api_deps

SETTINGS = Settings(
    max_in_flight=4, max_batch_records=4, max_request_bytes=4 * 1024 * 1024, auth=False
)


@pytest.fixture
def producer():
    return MemoryLogProducer()


@pytest.fixture
async def client(api_client, producer):
    registry = NamespaceRegistry()
    # the namespace allows 1 MiB payloads: more than the worker could write again
    config = parse_namespace({"name": "big", "target": {"type": "kafka", "topic": "out"}})
    registry.apply(*encode_event(config, 1))
    deps = api_deps(SETTINGS, registry, producer)
    return await api_client(create_api(deps))


def body(payload_chars: int) -> bytes:
    return orjson.dumps({"payload": "x" * payload_chars, "key": "k"})


async def test_the_largest_record_accepted_leaves_room_for_history(client, producer):
    limit = SETTINGS.max_record_bytes
    assert limit <= (SETTINGS.producer_max_request_bytes - SETTINGS.history_max_bytes - 32 * 1024)
    probe = await client.post("/v1/namespaces/big/log", data=body(1000))
    assert probe.status == 200
    [sent] = producer.sent
    overhead = len(sent.value) + len(sent.key) - 1000
    fits = await client.post("/v1/namespaces/big/log", data=body(limit - overhead))
    assert fits.status == 200
    assert len(producer.sent[-1].value) + len(producer.sent[-1].key) == limit
    over = await client.post("/v1/namespaces/big/log", data=body(limit - overhead + 1))
    assert over.status == 413
    assert (await over.json())["field"] == "payload"
    assert len(producer.sent) == 2  # nothing written


async def test_a_payload_under_aiokafkas_limit_but_over_the_workers_is_413(client, producer):
    """Before: accepted up to aiokafka's 1,048,576 bytes; the worker's producer refuses over
    1,000,000, so such a record could never be retried or dead-lettered by the worker."""
    response = await client.post("/v1/namespaces/big/log", data=body(1_000_000))
    assert response.status == 413
    assert producer.sent == []


async def test_the_batch_refuses_an_oversize_record_alone(client, producer):
    records = [{"payload": "x" * 1_000_000}, {"payload": "small"}]
    response = await client.post(
        "/v1/namespaces/big/log:batch", data=orjson.dumps({"records": records})
    )
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [413, 200]
    assert len(producer.sent) == 1


def test_settings_refuse_a_history_bound_that_leaves_no_room_for_records():
    with pytest.raises(ConfigError, match="PRODUCER_MAX_REQUEST_BYTES"):
        Settings.from_env({"WALSTREAM_HISTORY_MAX_BYTES": "990000"})
