"""Requests aiohttp's parser refuses get the documented Error JSON (durable FALSE), and a list
of content codings is refused naming Content-Encoding (aiohttp decodes one coding alone).

Before: aiohttp answered in text/plain ("Please install `Brotli`" for ``br``), and the body of
``gzip, gzip`` reached the handler still encoded ("invalid JSON").
"""

from __future__ import annotations

import asyncio
import gzip

import orjson
import pytest

from walstream.records import decode_envelope

URL = b"/v1/namespaces/orders/log"
BODY = b'{"payload":{"a":1}}'


async def _raw(client, request: bytes) -> tuple[int, bytes, bytes]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        received = b""
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):  # the server closes the connection
                received += chunk
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.lower(), body


def _post(extra: bytes, body: bytes = BODY, target: bytes = URL) -> bytes:
    return (
        b"POST " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body
    )


@pytest.mark.parametrize(
    ("request_bytes", "said"),
    [
        (_post(b"", target=URL + b"\xff"), "invalid char"),
        (_post(b"Bad Header: 1\r\n"), "invalid header"),
        (_post(b"Content-Length: 3\r\n"), "content-length"),  # a second, different one
        (_post(b"Content-Encoding: br\r\n"), "content-encoding 'br' is not supported"),
        (_post(b"Content-Encoding: zstd\r\n"), "content-encoding 'zstd' is not supported"),
    ],
    ids=["url", "header-name", "two-lengths", "br", "zstd"],
)
async def test_what_the_parser_refuses_is_answered_with_the_error_json(
    client, producer, request_bytes, said
):
    status, head, answer = await _raw(client, request_bytes)
    assert status == 400, head
    assert b"content-type: application/json" in head, head
    error = orjson.loads(answer)
    assert (error["durable"], error["error"], error["field"]) == (
        "FALSE",
        "BadRequestError",
        "request",
    )
    assert said in error["reason"].lower(), error
    assert "install" not in error["reason"]  # aiohttp's advice to its own operator
    assert producer.sent == []


@pytest.mark.parametrize("codings", ["gzip, gzip", "gzip,identity", "deflate, gzip"])
async def test_a_list_of_content_codings_is_refused_naming_it(client, producer, codings):
    status, head, answer = await _raw(
        client, _post(b"Content-Encoding: %s\r\n" % codings.encode(), gzip.compress(BODY))
    )
    assert status == 400, head
    error = orjson.loads(answer)
    assert error["field"] == "body"
    assert f"Content-Encoding {codings!r}" in error["reason"]
    assert producer.sent == []


@pytest.mark.parametrize(
    ("codings", "body"),
    [
        ("gzip", gzip.compress(BODY)),  # one coding: decoded by aiohttp
        ("identity, identity", BODY),  # no coding at all
        ("utf-8", BODY),  # a coding aiohttp does not know: the body as it is, as before
    ],
)
async def test_codings_the_api_reads_as_before(client, producer, codings, body):
    status, _, answer = await _raw(
        client, _post(b"Content-Encoding: %s\r\n" % codings.encode(), body)
    )
    assert status == 200, answer
    assert decode_envelope(producer.sent[0].value).payload == {"a": 1}
