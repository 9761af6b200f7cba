"""While the namespace registry loads, every namespace endpoint answers 503 + Retry-After, not
404 (issue 14 item 11; on 9e4a94b only writes did); a namespace whose last control event is
unreadable answers 503 naming why (item 10)."""

from __future__ import annotations

import orjson
import pytest

ROUTES = [
    ("GET", "/v1/namespaces"),
    ("GET", "/v1/namespaces/later"),
    ("GET", "/v1/namespaces/later/dlq"),
    ("POST", "/v1/namespaces/later/dlq:redrive"),
    ("GET", "/v1/namespaces/later/dlq:redrive"),
    ("DELETE", "/v1/namespaces/later/dlq:redrive"),
    ("POST", "/v1/namespaces/later/log"),
    ("POST", "/v1/namespaces/later/log:batch"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_namespace_endpoints_answer_503_with_retry_after_while_loading(
    client, deps, method, path
):
    deps.registry_loaded = lambda: False
    response = await client.request(method, path, json={})
    assert response.status == 503, await response.text()
    assert int(response.headers["Retry-After"]) >= 1
    assert "loading" in (await response.json())["message"]


async def test_once_loaded_an_unknown_namespace_is_404(client):
    response = await client.get("/v1/namespaces/later")
    assert response.status == 404


async def test_a_namespace_with_an_unreadable_last_event_answers_503_naming_why(client, registry):
    registry.apply(b"orders", orjson.dumps({"v": 2, "config": {"name": "orders"}}))
    for method, path in [("GET", "/v1/namespaces/orders"), ("POST", "/v1/namespaces/orders/log")]:
        response = await client.request(method, path, json={"payload": 1})
        assert response.status == 503
        assert "unreadable" in (await response.json())["message"]
