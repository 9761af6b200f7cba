"""Request headers holding bytes that are not UTF-8 (or latin-1 text): never a 500.

aiohttp hands such bytes to the API as lone surrogates. An ``Authorization`` header holding
them is no bearer token of any table (401, as any malformed header: the usual Error body and
``WWW-Authenticate``), on every guarded route (a 500 before: the token's digest was taken of
its UTF-8 encoding); the other headers the API reads (Content-Type, Content-Encoding, Expect)
or not (X-*) change nothing about the answer's form.
"""

from __future__ import annotations

import orjson
import pytest

from walstream.api.app import create_api
from walstream.api.auth import ROUTE_ACCESS
from walstream.core.auth import Access, bearer_token
from walstream.errors import UnauthorizedError
from walstream.settings import Settings
from walstream.testing import (
    API_TOKENS,
    RawAnswer,
    api_deps,
    api_tokens_setting,
    raw_exchange,
    registry_of,
)

BODY = b'{"payload":1}'


async def _raw(client, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send ``request`` as is; the answer's status, headers (lower-case names) and body."""
    answer = RawAnswer.parse(await raw_exchange(client.host, client.port, request))
    return answer.status, answer.headers, answer.body


def _request(method: str, path: str, *headers: bytes) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".encode()
        + b"".join(h + b"\r\n" for h in headers)
        + b"Content-Length: %d\r\n\r\n" % len(BODY)
        + BODY
    )


async def _api(api_client, *, auth: bool):
    settings = Settings(auth=auth, tokens=api_tokens_setting(), max_in_flight=4)
    api = create_api(api_deps(settings, registry_of({"name": "a"})))
    return api, await api_client(api)


def test_a_bearer_token_that_is_not_utf8_is_a_401():
    for header in ("Bearer \udcff\udcfe", "Bearer ok\udce9"):  # how aiohttp hands those bytes
        with pytest.raises(UnauthorizedError):
            bearer_token(header)
    # UTF-8 text beyond ASCII is a token as before (unknown to the table: a 403 then)
    assert bearer_token("Bearer t\u00f6ken") == "t\u00f6ken"


@pytest.mark.parametrize("token", [b"\xff\xfe", b"wal_\xe9t\xe9", b"\xc3"])
async def test_every_guarded_route_answers_401_to_a_token_that_is_not_utf8(api_client, token):
    api, client = await _api(api_client, auth=True)
    guarded = [
        r
        for r in api.router.routes()
        if ROUTE_ACCESS.get((r.method, r.pattern), Access.ADMIN) is not Access.OPEN
    ]
    assert len(guarded) >= 11
    for route in guarded:
        path = route.pattern.replace("{namespace}", "a")
        status, headers, body = await _raw(
            client, _request(route.method, path, b"Authorization: Bearer " + token)
        )
        assert status == 401, (route, body)
        assert headers[b"www-authenticate"] == b'Bearer realm="walstream"'
        assert headers[b"content-type"].startswith(b"application/json")
        answer = orjson.loads(body)
        assert answer["durable"] == "FALSE"
        assert answer["error"] == "UnauthorizedError"
    # a valid token still works on the same server (nothing was cached for the bad ones)
    status, _, body = await _raw(
        client,
        _request("GET", "/v1/namespaces", b"Authorization: Bearer " + API_TOKENS["admin"].encode()),
    )
    assert status == 200, body
    assert api.auth.verified_count() == 1


@pytest.mark.parametrize(
    "header",
    [b"Content-Type", b"Content-Encoding", b"Expect", b"Accept", b"X-Request-Id", b"Connection"],
)
@pytest.mark.parametrize("value", [b"\xff\xfe", b"\xe9t\xe9", b"application/json; charset=\xff"])
async def test_other_headers_that_are_not_utf8_never_make_a_500(api_client, header, value):
    _, client = await _api(api_client, auth=False)
    for method, path in (("POST", "/v1/namespaces/a/log"), ("POST", "/v1/namespaces/a/log:batch")):
        status, headers, body = await _raw(client, _request(method, path, header + b": " + value))
        assert 200 <= status < 500, (method, path, body)
        assert headers[b"content-type"].startswith(b"application/json"), body


@pytest.mark.parametrize(
    "request_line", [b"POST /v1/namespaces/a/log", b"GET /v1/namespaces", b"GET /v1/openapi.json"]
)
async def test_an_authorization_header_that_is_not_utf8_is_a_4xx(api_client, request_line):
    settings = Settings(auth=True, tokens=api_tokens_setting(), max_in_flight=4)
    client = await api_client(create_api(api_deps(settings, registry_of({"name": "a"}))))
    answer = await raw_exchange(
        client.host,
        client.port,
        request_line + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\xfe\r\nContent-Length: 13\r\n\r\n"
        b'{"payload":1}',
    )
    status = int(answer.split(b" ", 2)[1])
    assert status in (401, 403), answer[:300]
    # and a valid token still works on the same server
    ok = await client.get(
        "/v1/namespaces", headers={"Authorization": f"Bearer {API_TOKENS['admin']}"}
    )
    assert ok.status == 200
