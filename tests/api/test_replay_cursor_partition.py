"""``POST .../replay`` with a ``resume_from`` naming a partition the namespace's log does not
have (every namespace has WALSTREAM_DEFAULT_PARTITIONS) is a 400 naming ``resume_from``, and
starts nothing; it used to start a replay that read nothing and said ``done``."""

from __future__ import annotations

import pytest

from walstream.api.app import create_api
from walstream.api.replays import Replays
from walstream.clock import FakeClock
from walstream.replay import ReplayResult
from walstream.settings import Settings
from walstream.testing import api_deps, registry_of

NOW = 1_800_000_000_000
WINDOW = {"from": NOW - 3_600_000, "to": NOW}


@pytest.fixture
async def started():
    return []


@pytest.fixture
async def client(api_client, started):
    async def run(servers, ns, pool, **kwargs):
        started.append(kwargs["resume_from"])
        return ReplayResult()

    settings = Settings(auth=False, default_partitions=4, bootstrap_servers="127.0.0.1:9")
    registry = registry_of({"name": "a", "target": {"type": "kafka", "topic": "a.out"}})
    replays = Replays(settings, registry, FakeClock(NOW), run=run, pool_factory=lambda: None)
    yield await api_client(create_api(api_deps(settings, registry, replays=replays)))
    await replays.close()


@pytest.mark.parametrize("cursor", ["99:5", "4:0", "0:1,4:2"])
async def test_a_partition_the_log_does_not_have_is_a_400(client, started, cursor):
    response = await client.post("/v1/namespaces/a/replay", json={**WINDOW, "resume_from": cursor})
    body = await response.json()
    assert response.status == 400, body
    assert body["field"] == "resume_from"
    assert "which the log does not have (it has partitions 0-3)" in body["reason"]
    assert (await client.get("/v1/namespaces/a/replay")).status == 404  # nothing started
    assert started == []


async def test_a_cursor_of_the_logs_partitions_starts(client, started):
    response = await client.post(
        "/v1/namespaces/a/replay", json={**WINDOW, "resume_from": "0:1,3:2"}
    )
    assert response.status == 202, await response.text()
