"""Review of issue 15: a target's headers never replace walstream's delivery headers.

The API refuses such names (tests/api/test_reserved_headers.py); a record logged before it did
still goes out with walstream's values, each sent once: a real aiohttp server records the raw
header lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from walstream.core.targets import RESERVED_HEADERS
from walstream.records import Envelope, Lifecycle
from walstream.targets.base import delivery_headers
from walstream.targets.http import HttpTarget
from walstream.targets.http_client import HttpClient
from walstream.testing import serve_app


def _envelope(target: dict[str, object]) -> Envelope:
    return Envelope(
        "r-1", "orders", None, {"n": 1}, "json", target, Lifecycle(5, 7, 0), "tok-1", 5, attempt=3
    )


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[list[tuple[str, str]]]]]:
    seen: list[list[tuple[str, str]]] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        seen.append([(k.decode(), v.decode()) for k, v in request.raw_headers])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/in", handle)
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}/in", seen


def test_every_delivery_header_is_reserved() -> None:
    """A header added to delivery_headers is refused at the edge too."""
    names = {name.lower() for name in delivery_headers(_envelope({"type": "http"}))}
    assert names == RESERVED_HEADERS


async def test_logged_target_headers_do_not_replace_ours(
    upstream: tuple[str, list[list[tuple[str, str]]]],
) -> None:
    url, seen = upstream
    spoof = {
        "idempotency-key": "override",
        "X-WAL-ID": "spoof",
        "X-Wal-Namespace": "spoof",
        "x-wal-attempt": "99",
        "X-Wal-Original-Write-Time": "0",
        "X-Wal-Deliver-At": "0",
        "X-Custom": "kept",
        "Content-Type": "text/x-mine",
    }
    client = HttpClient()
    try:
        await HttpTarget(client).deliver(_envelope({"type": "http", "url": url, "headers": spoof}))
    finally:
        await client.close()
    [raw] = seen
    by_name: dict[str, list[str]] = {}
    for name, value in raw:
        by_name.setdefault(name.lower(), []).append(value)
    assert by_name["idempotency-key"] == ["tok-1"]
    assert by_name["x-wal-id"] == ["r-1"]
    assert by_name["x-wal-namespace"] == ["orders"]
    assert by_name["x-wal-attempt"] == ["3"]
    assert by_name["x-wal-original-write-time"] == ["7"]
    assert by_name["x-wal-deliver-at"] == ["5"]
    # the target's other headers still go, and it may still set Content-Type
    assert by_name["x-custom"] == ["kept"]
    assert by_name["content-type"] == ["text/x-mine"]
