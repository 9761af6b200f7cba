"""Read and idle timeouts (issue 15 item 8), over raw sockets to a live API: a connection that
sends nothing, a request head that never ends, an idle keep-alive connection and a body that
stops are all closed within their configured timeouts (set small here; aiohttp's own default
keeps them ~1 h). A malformed request or a client leaving mid-body is one log line, not an
ERROR with a traceback."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest

from walstream.api.app import create_api
from walstream.settings import Settings
from walstream.testing import api_deps

URL = "/v1/namespaces/orders/log"
#: Generous against a loaded machine, and far below aiohttp's default keep-alive (3,630 s).
WITHIN_S = 15.0


def _settings(**timeouts: Any) -> Settings:
    return Settings(max_in_flight=4, max_batch_records=4, auth=False, **timeouts)


@pytest.fixture
def timeouts():
    return {"header_read_timeout_s": 0.5, "keepalive_timeout_s": 1.0, "body_read_timeout_s": 0.5}


@pytest.fixture
async def api(api_client, producer, registry, timeouts):
    deps = api_deps(_settings(**timeouts), registry, producer)
    return await api_client(create_api(deps))


async def _open(client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(client.host, client.port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and how long that took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    received = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(65536):
            received += chunk
    return received, loop.time() - start


def _head(length: int | None = None) -> bytes:
    lines = [f"POST {URL} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_connection_that_sends_nothing_is_closed_after_the_keepalive_timeout(api):
    reader, writer = await _open(api)
    try:
        received, took = await _closed_within(reader, WITHIN_S)
    finally:
        writer.close()
    assert received == b""
    assert took >= 0.9  # not before its time (keepalive_timeout_s = 1)


@pytest.mark.parametrize("timeouts", [{"header_read_timeout_s": 0.5, "keepalive_timeout_s": 600.0}])
async def test_a_request_head_that_never_ends_is_closed_after_the_header_timeout(api, caplog):
    """A trickled head (slowloris) is closed by the header timeout, long before keep-alive."""
    caplog.set_level(logging.INFO)
    reader, writer = await _open(api)
    try:
        writer.write(_head()[:-2])  # all but the blank line that ends the head
        await writer.drain()

        async def trickle() -> None:  # valid header lines, a byte at a time, never the end
            for line in range(1_000):
                for byte in b"X-Slow-%d: 1\r\n" % line:
                    await asyncio.sleep(0.05)
                    writer.write(bytes([byte]))

        trickling = asyncio.create_task(trickle())
        try:
            received, took = await _closed_within(reader, WITHIN_S)
        finally:
            trickling.cancel()
            await asyncio.gather(trickling, return_exceptions=True)
    finally:
        writer.close()
    assert received == b""
    assert took < WITHIN_S
    assert any("headers did not arrive within 0.5 s" in r.getMessage() for r in caplog.records)


async def test_an_idle_keepalive_connection_is_closed_after_the_keepalive_timeout(api):
    reader, writer = await _open(api)
    try:
        body = orjson.dumps({"payload": 1})
        writer.write(_head(len(body)) + body)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN_S)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"connection: close" not in head.lower()  # kept alive
        received, took = await _closed_within(reader, WITHIN_S)  # the rest, then the close
    finally:
        writer.close()
    assert b"written" in received
    assert took >= 0.9


async def test_a_body_that_stops_is_answered_408_and_closed(api, producer):
    reader, writer = await _open(api)
    try:
        writer.write(_head(100) + b'{"payload":')
        await writer.drain()
        received, took = await _closed_within(reader, WITHIN_S)
    finally:
        writer.close()
    assert took < 10  # not after aiohttp's 10 s of lingering for the rest of the body
    assert received.startswith(b"HTTP/1.1 408"), received
    assert b'"field":"body"' in received
    assert producer.sent == []


def _errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: test\r\nBad Header\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: test\r\nContent-Length: x\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nHost: test\r\n\r\nGARBAGE\r\n\r\n",  # the second one
    ],
)
async def test_a_malformed_request_is_one_log_line(api, caplog, request_bytes):
    caplog.set_level(logging.DEBUG)
    reader, writer = await _open(api)
    try:
        writer.write(request_bytes)
        await writer.drain()
        received, _ = await _closed_within(reader, WITHIN_S)
    finally:
        writer.close()
    assert b" 400 " in received, received
    assert _errors(caplog) == []
    assert any(r.getMessage().startswith("bad request from") for r in caplog.records)


async def test_a_client_leaving_mid_body_is_one_log_line(api, caplog, producer):
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    _, writer = await _open(api)
    writer.write(_head(1000) + b'{"payload":')
    await writer.drain()
    writer.close()  # the head is parsed before the close arrives: the handler sees it mid-body
    await writer.wait_closed()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN_S
    while not any("before the body ended" in r.getMessage() for r in caplog.records):
        assert loop.time() < deadline, [r.getMessage() for r in caplog.records]
        await asyncio.sleep(0.05)
    assert _errors(caplog) == []
    assert producer.sent == []
