"""Broker stopped: no write is answered TRUE; broker back: writes succeed, no API restart."""

from __future__ import annotations

import asyncio

import pytest

from walstream.api.app import build_api
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
async def test_no_true_while_the_broker_is_down_and_recovery_without_restart(
    api_client, own_broker
):
    settings = Settings(
        bootstrap_servers=own_broker.bootstrap_servers, write_timeout_s=1.5, auth=False
    )
    publisher = NamespacePublisher(settings)
    await publisher.start()
    await publisher.apply(
        parse_namespace({"name": "outage", "target": {"type": "kafka", "topic": "o"}})
    )
    await publisher.stop()
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
