"""``GET .../mutations/{txn_id}`` asks the worker page (WALSTREAM_WORKER_URL), here a small
aiohttp server standing in for it: its report is passed on, its 404 is a 404, a worker that
cannot be reached or answers otherwise is a 503 with a message. And the routes' auth."""

from __future__ import annotations

import pytest
from aiohttp import web

from walstream.api.app import create_api
from walstream.api.worker_pages import WorkerPages
from walstream.broker import free_port
from walstream.settings import Settings
from walstream.testing import api_deps, api_tokens_setting, bearer, registry_of

KV = {"name": "a", "target": {"type": "kv", "table": "items", "key": "k"}, "mutations": {}}
OTHER = {"name": "b", "target": {"type": "kv", "table": "items", "key": "k"}, "mutations": {}}
DEAD = {
    "status": "dead_lettered",
    "reason": "apply failed: database said: relation secret_x is locked",
    "operations": 3,
    "received": 3,
    "progress": 1,
    "missing": [],
    "opened_at_ms": 5,
}


@pytest.fixture
async def worker(aiohttp_server):
    """The worker page: knows transaction t-1 of namespace a (dead-lettered), nothing else;
    t-500 makes it fail."""
    asked: list[str] = []

    async def page(request: web.Request) -> web.Response:
        asked.append(request.path)
        txn = request.match_info["txn_id"]
        if txn == "t-500":
            return web.Response(status=500, text="boom")
        if txn == "t-503":
            return web.json_response(
                {"error": "rebalancing"}, status=503, headers={"Retry-After": "2"}
            )
        if request.match_info["namespace"] == "a" and txn == "t-1":
            return web.json_response(DEAD)
        return web.json_response({"error": f"unknown transaction {txn}"}, status=404)

    app = web.Application()
    app.router.add_get("/walstream/mutations/{namespace}/{txn_id}", page)
    server = await aiohttp_server(app)
    return server, asked


async def _client(api_client, base_url: str, *, auth: bool = False):
    settings = Settings(auth=auth, tokens=api_tokens_setting() if auth else None)
    pages = WorkerPages(base_url, timeout_s=5)
    deps = api_deps(settings, registry_of(KV, OTHER), worker=pages)

    async def close_pages():
        yield
        await pages.close()

    deps.lifespan.append(close_pages)
    return await api_client(create_api(deps))


async def test_the_workers_report_is_the_answer(api_client, worker):
    server, asked = worker
    client = await _client(api_client, str(server.make_url("")))
    response = await client.get("/v1/namespaces/a/mutations/t-1")
    assert response.status == 200, await response.text()
    assert await response.json() == {**DEAD, "namespace": "a", "txn_id": "t-1"}
    assert asked == ["/walstream/mutations/a/t-1"]


async def test_a_transaction_the_worker_does_not_know_is_404(api_client, worker):
    server, _ = worker
    client = await _client(api_client, str(server.make_url("")))
    response = await client.get("/v1/namespaces/a/mutations/t-2")
    assert response.status == 404
    answer = await response.json()
    assert answer["error"] == "RouteNotFoundError"
    assert "'t-2'" in answer["message"]
    assert "unknown transaction t-2" in answer["message"]


async def test_a_worker_that_fails_or_cannot_be_reached_is_503(api_client, worker):
    server, _ = worker
    client = await _client(api_client, str(server.make_url("")))
    response = await client.get("/v1/namespaces/a/mutations/t-500")
    assert response.status == 503
    assert "answered 500" in (await response.json())["message"]
    assert "Retry-After" not in response.headers
    # a worker rebalancing: its Retry-After is the answer's
    response = await client.get("/v1/namespaces/a/mutations/t-503")
    assert (response.status, response.headers.get("Retry-After")) == (503, "2")
    assert "rebalancing" in (await response.json())["message"]
    nobody = f"http://127.0.0.1:{free_port()}"
    client = await _client(api_client, nobody)
    response = await client.get("/v1/namespaces/a/mutations/t-1")
    assert response.status == 503
    answer = await response.json()
    assert (answer["durable"], answer["error"]) == ("FALSE", "ServiceUnavailableError")
    assert nobody in answer["message"]
    assert "WALSTREAM_WORKER_URL" in answer["message"]


async def test_a_bad_txn_id_is_refused_before_asking(api_client, worker):
    server, asked = worker
    client = await _client(api_client, str(server.make_url("")))
    response = await client.get("/v1/namespaces/a/mutations/-t")
    assert response.status == 400
    assert (await response.json())["field"] == "txn_id"
    assert asked == []


async def test_an_api_without_a_worker_client_answers_503(api_client):
    deps = api_deps(Settings(auth=False), registry_of(KV))
    client = await api_client(create_api(deps))
    response = await client.get("/v1/namespaces/a/mutations/t-1")
    assert response.status == 503


MUTATE = (
    "POST",
    "/v1/namespaces/{ns}/mutations/t-1/0",
    {"op": "delete", "table": "items", "id": "k"},
)
COMPLETE = ("POST", "/v1/namespaces/{ns}/mutations/t-1:complete", {"count": 1})
ITEMS = (
    "POST",
    "/v1/namespaces/{ns}/mutations",
    {"txn_id": "t-1", "operations": [{"op": "delete", "table": "items", "id": "k"}]},
)
STATUS = ("GET", "/v1/namespaces/{ns}/mutations/t-1", None)


@pytest.mark.parametrize("route", [MUTATE, COMPLETE, ITEMS, STATUS])
@pytest.mark.parametrize(
    ("who", "status"),
    [
        (None, 401),
        ("unknown", 403),
        ("b_writer", 403),  # another namespace's tokens
        ("b_admin", 403),
        ("a_writer", 200),
        ("a_admin", 200),
        ("admin", 200),
    ],
)
async def test_the_routes_are_scoped_to_the_namespace_like_write_to_log(
    api_client, worker, route, who, status
):
    server, _ = worker
    client = await _client(api_client, str(server.make_url("")), auth=True)
    method, path, body = route
    response = await client.request(method, path.format(ns="a"), json=body, headers=bearer(who))
    assert response.status == status, await response.text()


async def test_a_dead_lettered_reason_is_shown_to_the_namespaces_admins_only(api_client, worker):
    server, _ = worker
    client = await _client(api_client, str(server.make_url("")), auth=True)
    path = "/v1/namespaces/a/mutations/t-1"
    admin = await (await client.get(path, headers=bearer("a_admin"))).json()
    assert admin["reason"] == DEAD["reason"]
    writer = await (await client.get(path, headers=bearer("a_writer"))).json()
    assert "secret_x" not in writer["reason"]
    assert writer["progress"] == 1  # the rest is the writer's to see
