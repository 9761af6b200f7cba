"""Replay over HTTP (issue 14: "a token for namespace A cannot ... replay namespace B"):
POST/GET/DELETE /v1/namespaces/{ns}/replay, namespace-admin or admin only, one per namespace."""

from __future__ import annotations

import asyncio

import jsonschema
import pytest

from walstream.api.app import create_api
from walstream.api.auth import ROUTE_ACCESS
from walstream.api.deps import ApiDeps
from walstream.api.openapi import SCHEMAS
from walstream.api.replays import Replays
from walstream.clock import FakeClock
from walstream.core.auth import Access
from walstream.core.limits import InFlightLimiter
from walstream.core.replay_request import REPLAY_FIELDS
from walstream.kafka.producer import MemoryLogProducer
from walstream.replay import ReplayResult
from walstream.settings import Settings
from walstream.testing import api_tokens_setting, bearer, registry_of

SETTING = api_tokens_setting()
NOW = 1_800_000_000_000
WINDOW = {"from": NOW - 3_600_000, "to": NOW}


class FakeReplay:
    """walstream.replay.replay's stand-in: records its calls, runs until released."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.release = asyncio.Event()
        self.result = ReplayResult(delivered=3, skipped=1, pending=2)

    async def __call__(self, servers, ns, pool, **kwargs):
        self.calls.append({"ns": ns.name, "pool": pool, **kwargs})
        kwargs["on_record"]()
        await self.release.wait()
        return self.result


class FakePool:
    closed = False

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake():
    return FakeReplay()


@pytest.fixture
def pool():
    return FakePool()


@pytest.fixture
async def client(api_client, fake, pool):
    settings = Settings(max_in_flight=4, tokens=SETTING, bootstrap_servers="127.0.0.1:9")
    registry = registry_of(
        {"name": "a", "target": {"type": "kafka", "topic": "a.out"}},
        {"name": "b", "target": {"type": "http", "url": "http://127.0.0.1:9/hook"}},
    )
    replays = Replays(settings, registry, FakeClock(NOW), run=fake, pool_factory=lambda: pool)
    deps = ApiDeps(
        settings=settings,
        registry=registry,
        producer=MemoryLogProducer(),
        limiter=InFlightLimiter(4),
        clock=FakeClock(NOW),
        replays=replays,
    )
    yield await api_client(create_api(deps))
    await replays.close()  # cancels what still runs, closes the pool


async def wait_until(predicate, within: float) -> None:
    """Poll ``predicate`` (sync or async) until true; fail after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _check(body):
    jsonschema.validate(body, SCHEMAS["Replay"], cls=jsonschema.Draft202012Validator)


def test_replay_routes_need_an_admin_or_namespace_admin_token():
    for method in ("POST", "GET", "DELETE"):
        assert ROUTE_ACCESS[(method, "/v1/namespaces/{namespace}/replay")] is Access.ADMIN


def test_the_request_schema_lists_exactly_the_accepted_fields():
    assert set(SCHEMAS["ReplayRequest"]["properties"]) == REPLAY_FIELDS


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("a_admin", 202),
        ("admin", 202),
        ("a_writer", 403),
        ("b_admin", 403),
        ("b_writer", 403),
        (None, 401),
    ],
)
async def test_who_may_replay_namespace_a(client, fake, who, status):
    response = await client.post("/v1/namespaces/a/replay", json=WINDOW, headers=bearer(who))
    assert response.status == status, await response.text()
    if status == 202:
        assert (await response.json())["state"] == "running"
        await wait_until(lambda: len(fake.calls) == 1, within=5)
        assert fake.calls[0]["ns"] == "a"
    else:
        assert fake.calls == []
    for method in ("GET", "DELETE"):  # watching and cancelling need the same token
        response = await client.request(method, "/v1/namespaces/a/replay", headers=bearer(who))
        assert response.status == (200 if status == 202 else status), method


async def test_a_token_for_a_cannot_replay_watch_or_cancel_b(client, fake):
    started = await client.post("/v1/namespaces/b/replay", json=WINDOW, headers=bearer("b_admin"))
    assert started.status == 202
    await wait_until(lambda: len(fake.calls) == 1, within=5)
    for method, body in (("POST", WINDOW), ("GET", None), ("DELETE", None)):
        response = await client.request(
            method, "/v1/namespaces/b/replay", json=body, headers=bearer("a_admin")
        )
        assert response.status == 403, (method, await response.text())
        assert (await response.json())["error"] == "ForbiddenError"
    # b's replay still runs, started once
    status = await client.get("/v1/namespaces/b/replay", headers=bearer("b_admin"))
    assert (await status.json())["state"] == "running"
    assert len(fake.calls) == 1


async def test_start_watch_finish_and_one_at_a_time(client, fake):
    body = {**WINDOW, "skip_ids": ["bad-1"], "resume_from": "0:5,2:7"}
    started = await client.post("/v1/namespaces/a/replay", json=body, headers=bearer("a_admin"))
    assert started.status == 202
    progress = await started.json()
    _check(progress)
    assert progress["namespace"] == "a"
    assert progress["from_ms"] == WINDOW["from"]
    assert progress["to_ms"] == WINDOW["to"]
    await wait_until(lambda: len(fake.calls) == 1, within=5)
    call = fake.calls[0]
    assert (call["from_ms"], call["to_ms"]) == (WINDOW["from"], WINDOW["to"])
    assert set(call["skip_ids"]) == {"bad-1"}
    assert call["resume_from"] == {0: 5, 2: 7}

    again = await client.post("/v1/namespaces/a/replay", json=WINDOW, headers=bearer("admin"))
    assert again.status == 409, await again.text()
    assert len(fake.calls) == 1
    other = await client.post("/v1/namespaces/b/replay", json=WINDOW, headers=bearer("admin"))
    assert other.status == 202  # one per namespace, not one per process

    watching = await (await client.get("/v1/namespaces/a/replay", headers=bearer("a_admin"))).json()
    assert watching["id"] == progress["id"]
    assert (watching["state"], watching["seen"]) == ("running", 1)

    fake.release.set()

    async def done() -> bool:
        r = await client.get("/v1/namespaces/a/replay", headers=bearer("a_admin"))
        return (await r.json())["state"] == "done"

    await wait_until(done, within=5)
    final = await (await client.get("/v1/namespaces/a/replay", headers=bearer("a_admin"))).json()
    _check(final)
    assert (final["delivered"], final["skipped"], final["pending"]) == (3, 1, 2)
    assert final["failed"] == []
    assert final["resume_from"] is None
    # finished: a new one may start
    next_one = await client.post("/v1/namespaces/a/replay", json=WINDOW, headers=bearer("a_admin"))
    assert next_one.status == 202


async def test_a_stopped_replay_reports_its_resume_cursor(client, fake):
    fake.result = ReplayResult(
        delivered=4, failed=["r-9: http 500"], error="KafkaError: gone", resume_from={1: 42}
    )
    fake.release.set()
    started = await client.post("/v1/namespaces/a/replay", json=WINDOW, headers=bearer("a_admin"))
    assert started.status == 202

    async def stopped() -> bool:
        r = await client.get("/v1/namespaces/a/replay", headers=bearer("a_admin"))
        return (await r.json())["state"] == "stopped"

    await wait_until(stopped, within=5)
    final = await (await client.get("/v1/namespaces/a/replay", headers=bearer("a_admin"))).json()
    _check(final)
    assert final["resume_from"] == "1:42"
    assert final["error"] == "KafkaError: gone"
    assert final["failed"] == ["r-9: http 500"]


async def test_cancel(client, fake):
    missing = await client.delete("/v1/namespaces/a/replay", headers=bearer("a_admin"))
    assert missing.status == 404
    started = await client.post("/v1/namespaces/a/replay", json=WINDOW, headers=bearer("a_admin"))
    assert started.status == 202
    await wait_until(lambda: len(fake.calls) == 1, within=5)
    cancelled = await client.delete("/v1/namespaces/a/replay", headers=bearer("a_admin"))
    assert cancelled.status == 200
    assert (await cancelled.json())["state"] == "cancelled"
    again = await client.post("/v1/namespaces/a/replay", json=WINDOW, headers=bearer("a_admin"))
    assert again.status == 202


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": NOW}, "from"),
        ({"from": NOW}, "to"),
        ({"from": "yesterday", "to": NOW}, "from"),
        ({"from": NOW, "to": NOW - 1}, "to"),
        ({**WINDOW, "skip_ids": "r-1"}, "skip_ids"),
        ({**WINDOW, "skip_ids": [1]}, "skip_ids"),
        ({**WINDOW, "resume_from": "0-5"}, "resume_from"),
        ({**WINDOW, "resume_from": 5}, "resume_from"),
        ({**WINDOW, "rate": 5}, "rate"),
        ([1], "body"),
    ],
)
async def test_a_bad_body_is_400_naming_the_field(client, fake, body, field):
    response = await client.post("/v1/namespaces/a/replay", json=body, headers=bearer("a_admin"))
    assert response.status == 400, await response.text()
    answer = await response.json()
    assert answer["field"] == field
    assert answer["durable"] == "FALSE"
    assert fake.calls == []


async def test_relative_times_and_iso_are_accepted(client, fake):
    body = {"from": "-2h", "to": "2027-01-15T08:00:00Z"}
    response = await client.post("/v1/namespaces/a/replay", json=body, headers=bearer("a_admin"))
    assert response.status == 202, await response.text()
    progress = await response.json()
    assert progress["from_ms"] == NOW - 7_200_000
    assert progress["to_ms"] == 1_800_000_000_000  # 2027-01-15T08:00:00Z
