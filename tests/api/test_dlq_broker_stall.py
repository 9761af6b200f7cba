"""A DLQ listing whose broker stops answering after the reader started: aiokafka's
``position`` waits for as long as the broker gives no offset (it never raises), so the listing
hung forever; it is bounded by the reader's ``stall_s`` and answered 503 with Retry-After."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from walstream.api.app import create_api
from walstream.dlq import DlqAccess
from walstream.kafka import clients
from walstream.settings import Settings
from walstream.testing import api_deps


class _Silent:
    """A DLQ reader's consumer whose broker went silent once it started: it knows the topic's
    one partition and its end, and never learns where it is."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def topics(self) -> set[str]:
        return set()

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, tps: Any) -> None:
        pass

    async def seek_to_beginning(self, *tps: Any) -> None:
        pass

    async def getmany(self, *tps: Any, timeout_ms: int = 0, max_records: Any = None) -> dict:
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def highwater(self, tp: Any) -> int:
        return 1

    async def position(self, tp: Any) -> int:
        await asyncio.Event().wait()  # as aiokafka's, while the broker gives no offset
        raise AssertionError("unreachable")


@pytest.fixture
async def silent_client(api_client, registry, monkeypatch):
    monkeypatch.setattr(clients, "reader", lambda *args, **kwargs: _Silent())
    dlq = DlqAccess("127.0.0.1:9")
    dlq.reader.stall_s = 0.5
    deps = api_deps(Settings(auth=False), registry, dlq=dlq)
    client = await api_client(create_api(deps))
    yield client
    await dlq.close()


async def test_a_listing_whose_broker_goes_silent_is_a_503_after_the_stall_bound(silent_client):
    try:
        response = await asyncio.wait_for(silent_client.get("/v1/namespaces/orders/dlq"), 20)
    except TimeoutError:
        pytest.fail("GET dlq still waits for the broker 20 s later (stall bound: 0.5 s)")
    answer = await response.json()
    assert response.status == 503, answer
    assert response.headers.get("Retry-After") == "1"
    assert answer["durable"] == "FALSE"
    assert answer["error"] == "BrokerUnavailableError"
    assert "could not be read to its end" in answer["message"]
