"""A stopped broker (issue 15 item 7): a write the broker did not take answers 503 with
Retry-After, saying the broker is unavailable, also for a topic the API never wrote to (which
aiokafka reports as UnknownTopicOrPartitionError although the topic exists)."""

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


def _unavailable(answer: dict, status: int, retry_after: str | None) -> None:
    assert status == 503, answer
    assert retry_after is not None, answer
    assert int(retry_after) >= 1, answer
    assert answer["durable"] == "FALSE"
    assert answer["error"] == "BrokerUnavailableError"
    assert answer["message"].startswith("broker unavailable"), answer
    assert "UnknownTopicOrPartition" not in answer["message"]


@pytest.mark.timeout(120)
async def test_a_stopped_broker_answers_503_with_retry_after(api_client, own_broker):
    settings = Settings(
        bootstrap_servers=own_broker.bootstrap_servers,
        write_timeout_s=2.0,
        shed_retry_after_s=3.0,
        auth=False,
    )
    publisher = NamespacePublisher(settings)
    await publisher.start()
    try:
        await publisher.apply(
            parse_namespace({"name": "written", "target": {"type": "kafka", "topic": "o"}})
        )
        client = await api_client(build_api(settings))
        assert (await client.post("/v1/namespaces/written/log", json={"payload": 1})).status == 200
        # a namespace made after the API's producer fetched its metadata: none for its topic
        await publisher.apply(
            parse_namespace({"name": "later", "target": {"type": "kafka", "topic": "o"}})
        )
    finally:
        await publisher.stop()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while (await client.get("/v1/namespaces/later")).status != 200:
        assert loop.time() < deadline, "the API never saw the namespace 'later'"
        await asyncio.sleep(0.2)

    pid = own_broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(own_broker.stop)  # reaps it

    # aiokafka finds no metadata for the topic (it says UnknownTopicOrPartitionError)
    response = await client.post("/v1/namespaces/later/log", json={"payload": 2})
    _unavailable(await response.json(), response.status, response.headers.get("Retry-After"))
    assert response.headers["Retry-After"] == "3"  # WALSTREAM_SHED_RETRY_AFTER_S
    response = await client.post(
        "/v1/namespaces/later/log:batch", json={"records": [{"payload": 3}]}
    )
    assert response.status == 200
    (result,) = (await response.json())["results"]
    assert result["status"] == 503
    assert result["error"] == "BrokerUnavailableError", result
    # the topic it wrote to: aiokafka takes the record into its buffer, where it may still be
    # sent when the broker is back (504 UNKNOWN), or refuses it before (503 + Retry-After)
    response = await client.post("/v1/namespaces/written/log", json={"payload": 2})
    answer = await response.json()
    if response.status == 503:
        _unavailable(answer, response.status, response.headers.get("Retry-After"))
    else:
        assert (response.status, answer["durable"]) == (504, "UNKNOWN"), answer
