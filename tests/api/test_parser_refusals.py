"""Requests aiohttp's parser refuses get the documented Error JSON (durable FALSE), and a list
of content codings is refused naming Content-Encoding (aiohttp decodes one coding alone).

Before: aiohttp answered in text/plain ("Please install `Brotli`" for ``br``), and the body of
``gzip, gzip`` reached the handler still encoded ("invalid JSON").
"""

from __future__ import annotations

import gzip

import orjson
import pytest

from walstream.records import decode_envelope
from walstream.testing import RawAnswer, raw_exchange

URL = b"/v1/namespaces/orders/log"
BODY = b'{"payload":{"a":1}}'


async def _raw(client, request: bytes) -> tuple[int, bytes, bytes]:
    answer = RawAnswer.parse(await raw_exchange(client.host, client.port, request))
    return answer.status, answer.head.lower(), answer.body


def _post(extra: bytes, body: bytes = BODY, target: bytes = URL) -> bytes:
    return (
        b"POST " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body
    )


def _post_json(extra: bytes, body: bytes) -> bytes:
    """A JSON write whose framing (Content-Length, Transfer-Encoding) ``extra`` gives."""
    return (
        b"POST " + URL + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\n" + extra + b"\r\n" + body
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


@pytest.mark.parametrize(
    ("extra", "body"),
    [
        (b"Content-Encoding: br\r\nContent-Length: %d\r\n" % len(BODY), BODY),
        (b"Content-Encoding: zstd\r\nContent-Length: %d\r\n" % len(BODY), BODY),
        (b"Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n"),
    ],
    ids=["br", "zstd", "bad-chunk"],
)
async def test_a_request_the_parser_refuses_gets_a_json_error(client, producer, extra, body):
    status, head, answer = await _raw(client, _post_json(extra, body))
    assert 400 <= status < 500, head
    assert b"application/json" in head.lower(), head + b"\r\n\r\n" + answer
    assert orjson.loads(answer)["durable"] == "FALSE"
    assert producer.sent == []


async def test_a_stacked_content_encoding_is_decoded_or_refused_naming_it(client, producer):
    twice = gzip.compress(gzip.compress(BODY))
    status, head, answer = await _raw(
        client,
        _post_json(b"Content-Encoding: gzip, gzip\r\nContent-Length: %d\r\n" % len(twice), twice),
    )
    if status == 200:  # decoded as RFC 9110 says: both codings, in order
        return
    assert status in (400, 415), head
    assert "Content-Encoding" in orjson.loads(answer)["message"], answer
