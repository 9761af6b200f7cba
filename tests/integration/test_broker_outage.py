"""Broker stopped: no write is answered TRUE; broker back: writes succeed, no API restart.

The DLQ routes too (issue 15 item 7): an unavailable broker is a 503 with Retry-After, not a 500
(``KafkaConnectionError`` unhandled, an ERROR traceback); and a redrive asked during the outage
leaves no unstarted redrive producer behind (one kept although its ``start()`` failed made every
later redrive in that process wait forever for metadata, even once the broker was back, and
held the API's shutdown).
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from walstream.api.app import build_api
from walstream.settings import Settings

from .conftest import apply_namespace

pytestmark = pytest.mark.integration

#: The DLQ tests' namespace.
DEAD = {"name": "dead", "target": {"type": "kafka", "topic": "o"}}


@pytest.mark.timeout(120)
async def test_no_true_while_the_broker_is_down_and_recovery_without_restart(
    api_client, own_broker
):
    settings = Settings(
        bootstrap_servers=own_broker.bootstrap_servers, write_timeout_s=1.5, auth=False
    )
    await apply_namespace(settings, {"name": "outage", "target": {"type": "kafka", "topic": "o"}})
    client = await api_client(build_api(settings))
    url = "/v1/namespaces/outage/log"
    assert (await client.post(url, json={"payload": "before"})).status == 200

    # the outage: killed after 1 s (Tansu waits 5 s on SIGTERM while the API is connected)
    await asyncio.to_thread(own_broker.stop, 1.0)
    answers = []
    for i in range(5):
        response = await client.post(url, json={"payload": f"during-{i}"})
        answers.append(((await response.json())["durable"], response.status))
    assert all(durable in {"FALSE", "UNKNOWN"} for durable, _ in answers), answers
    assert all(status in {503, 504} for _, status in answers), answers
    ready = await client.get("/readyz")
    assert ready.status == 503

    await asyncio.to_thread(own_broker.start)  # same port; memory storage starts empty
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        response = await client.post(url, json={"payload": "after"})
        if response.status == 200:
            assert (await response.json())["durable"] == "TRUE"
            break
        assert (await response.json())["durable"] in {"FALSE", "UNKNOWN"}
        assert loop.time() < deadline, "writes did not recover after the broker came back"
        await asyncio.sleep(0.5)
    # the API kept its namespace registry through the outage
    assert (await client.get("/v1/namespaces/outage")).status == 200


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
    await apply_namespace(settings, DEAD)
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
    await apply_namespace(settings, DEAD)
    client = await api_client(build_api(settings))
    await _kill(own_broker)
    # asked during the outage: refused (today a 500)
    response = await asyncio.wait_for(client.post("/v1/namespaces/dead/dlq:redrive", json={}), 60)
    assert response.status >= 400

    # the broker is back (on the same port; memory storage: empty) and the namespace applied
    await asyncio.to_thread(own_broker.start)
    await apply_namespace(settings, DEAD)
    assert (await client.get("/v1/namespaces/dead/dlq")).status == 200  # the broker serves

    try:
        response = await asyncio.wait_for(
            client.post("/v1/namespaces/dead/dlq:redrive", json={}), 30
        )
    except TimeoutError:
        pytest.fail("POST dlq:redrive did not answer within 30 s after the broker came back")
    assert response.status == 202, await response.text()
