"""Header values the http target sends, against a real upstream (an aiohttp app on loopback).

A control character other than CR, LF and NUL (``\\x01``, ``\\x0b``, ``\\x7f``) used to be sent,
and the upstream refused the request with a 400 ("Invalid header value char"): the record was
dead-lettered as if the upstream had refused it. The rule is now one
(``walstream.core.targets.has_unsendable_chars``): the API refuses such a token or target header
at the edge, and the client before sending (a record logged before the API did), so what the
client sends an upstream takes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from walstream.core.targets import has_unsendable_chars
from walstream.errors import TargetRejectedError
from walstream.records import Envelope, Lifecycle
from walstream.targets.http import HttpTarget
from walstream.targets.http_client import HttpClient
from walstream.testing import serve_app

#: Every ASCII character, and a few beyond (sent as UTF-8: obs-text, which RFC 9110 admits).
CHARS = [chr(c) for c in range(0x80)] + ["\u00e9", "\u0085", "\u2028", "\U0001f600"]


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}/hook", received


def _record(url: str, *, token: str, header: str) -> Envelope:
    return Envelope(
        id="r1",
        namespace="hooks",
        key=None,
        payload=1,
        payload_encoding="json",
        target={"type": "http", "url": url, "headers": {"X-Tenant": header}},
        lifecycle=Lifecycle(deliver_at_ms=0, original_write_time_ms=1),
        idempotency_token=token,
        created_at_ms=0,
    )


@pytest.mark.parametrize("where", ["token", "header"])
async def test_what_the_client_sends_the_upstream_takes(upstream, where):
    url, received = upstream
    client = HttpClient()
    target = HttpTarget(client)
    try:
        for char in CHARS:
            value = f"a{char}b"
            record = _record(
                url,
                token=value if where == "token" else "tok",
                header=value if where == "header" else "t",
            )
            received.clear()
            if has_unsendable_chars(value):
                with pytest.raises(TargetRejectedError) as refused:
                    await target.deliver(record)
                # refused before sending (not the upstream's http_400), and nothing was sent
                assert refused.value.error_class == "bad_request", repr(char)
                assert received == [], repr(char)
            else:
                await target.deliver(record)  # the upstream takes it (a 204)
                (headers,) = received
                name = "Idempotency-Key" if where == "token" else "X-Tenant"
                assert headers[name] == value, repr(char)  # as sent (UTF-8), tab inside kept
    finally:
        await client.close()
