"""Review of issue 15 item 7 (a broker outage under a running API), beyond WriteToLog: the DLQ
routes answer an unavailable broker with a 500 (``KafkaConnectionError`` unhandled, an ERROR
traceback), not a 503 with Retry-After; and a redrive asked during the outage leaves the API's
redrive producer unstarted (it is kept although its ``start()`` failed), so every later redrive
in that process waits forever for metadata, even once the broker is back, and holds the API's
shutdown (SIGTERM no longer stops it)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from walstream.api.app import build_api
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.settings import Settings

pytestmark = pytest.mark.integration

NS = {"name": "dead", "target": {"type": "kafka", "topic": "o"}}


async def _apply(settings: Settings) -> None:
    publisher = NamespacePublisher(settings)
    await publisher.start()
    try:
        await publisher.apply(parse_namespace(NS))
    finally:
        await publisher.stop()


async def _kill(broker) -> None:
    pid = broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(broker.stop)  # reaps it


@pytest.mark.timeout(120)
async def test_dlq_routes_answer_503_with_retry_after_while_the_broker_is_down(
    api_client, own_broker
):
    settings = Settings(bootstrap_servers=own_broker.bootstrap_servers, auth=False)
    await _apply(settings)
    client = await api_client(build_api(settings))
    assert (await client.get("/v1/namespaces/dead/dlq")).status == 200
    await _kill(own_broker)

    for method, path in [
        ("GET", "/v1/namespaces/dead/dlq"),
        ("POST", "/v1/namespaces/dead/dlq:redrive"),
    ]:
        response = await asyncio.wait_for(client.request(method, path, json={}), 60)
        answer = await response.json()
        assert response.status == 503, (method, path, response.status, answer)
        assert response.headers.get("Retry-After"), (method, path, answer)
        assert answer["durable"] == "FALSE"


@pytest.mark.timeout(180)
async def test_a_redrive_after_the_broker_came_back_is_answered(api_client, own_broker):
    settings = Settings(bootstrap_servers=own_broker.bootstrap_servers, auth=False)
    await _apply(settings)
    client = await api_client(build_api(settings))
    await _kill(own_broker)
    # asked during the outage: refused (today a 500)
    response = await asyncio.wait_for(client.post("/v1/namespaces/dead/dlq:redrive", json={}), 60)
    assert response.status >= 400

    # the broker is back (on the same port; memory storage: empty) and the namespace applied
    await asyncio.to_thread(own_broker.start)
    await _apply(settings)
    assert (await client.get("/v1/namespaces/dead/dlq")).status == 200  # the broker serves

    try:
        response = await asyncio.wait_for(
            client.post("/v1/namespaces/dead/dlq:redrive", json={}), 30
        )
    except TimeoutError:
        pytest.fail("POST dlq:redrive did not answer within 30 s after the broker came back")
    assert response.status == 202, await response.text()
