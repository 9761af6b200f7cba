"""The DLQ routes under a broker that hangs (SIGSTOP: connections open, nothing answers): a 503
with Retry-After within the API's broker deadline (WALSTREAM_WRITE_TIMEOUT_S, each request to
the broker, the clients' start included), not a 500 after aiokafka's 40 s request timeout; and
a redrive asked while it hangs leaves no unstarted producer behind: once the broker answers
again, the next redrive is answered."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest

from walstream.api.app import build_api
from walstream.settings import Settings

from .conftest import apply_namespace

pytestmark = pytest.mark.integration

logger = logging.getLogger(__name__)

NS = {"name": "hung", "target": {"type": "kafka", "topic": "o"}}
#: far below aiokafka's 40 s request timeout, far above the 2 s deadline the API is given
ANSWER_WITHIN_S = 30


@pytest.mark.timeout(240)
async def test_dlq_routes_answer_503_while_the_broker_hangs_then_serve_again(
    api_client, own_broker
):
    settings = Settings(
        bootstrap_servers=own_broker.bootstrap_servers, auth=False, write_timeout_s=2.0
    )
    await apply_namespace(settings, NS)
    client = await api_client(build_api(settings))
    assert (await client.get("/v1/namespaces/hung/dlq")).status == 200
    pid = own_broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        for method, path in [
            ("GET", "/v1/namespaces/hung/dlq"),
            ("POST", "/v1/namespaces/hung/dlq:redrive"),
        ]:
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(
                    client.request(method, path, json={}), ANSWER_WITHIN_S
                )
            except TimeoutError:
                pytest.fail(f"{method} {path} not answered within {ANSWER_WITHIN_S} s")
            answer = await response.json()
            assert response.status == 503, (method, path, response.status, answer)
            assert response.headers.get("Retry-After") == "1", (method, path, answer)
            assert answer["durable"] == "FALSE"
            assert answer["error"] == "BrokerUnavailableError", answer
            logger.warning("%s %s: 503 after %.1f s", method, path, time.monotonic() - started)
    finally:
        os.kill(pid, signal.SIGCONT)

    # the broker answers again: the redrive producer whose start timed out was not kept
    try:
        response = await asyncio.wait_for(
            client.post("/v1/namespaces/hung/dlq:redrive", json={}), ANSWER_WITHIN_S
        )
    except TimeoutError:
        pytest.fail("POST dlq:redrive not answered once the broker answered again")
    assert response.status == 202, await response.text()
