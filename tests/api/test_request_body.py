"""Request bodies (issue 14 item 9): each route's limit is refused on Content-Length before a byte
is read, enforced while a chunked body is read, and a slow body holds no in-flight write slot.

The requests go over raw sockets so a test controls what has been sent when the answer comes.
"""

from __future__ import annotations

import asyncio
import gc

import orjson
import pytest

from walstream.api.app import create_api
from walstream.api.body import REQUEST_OVERHEAD_BYTES, SMALL_BODY_BYTES
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import encode_event
from walstream.settings import Settings
from walstream.testing import api_deps

SLOTS = 4
#: Defaults but the in-flight slots: WALSTREAM_MAX_REQUEST_BYTES is its 16 MiB.
SETTINGS = Settings(
    max_in_flight=SLOTS,
    max_batch_records=SLOTS,
    body_read_timeout_s=30.0,
    auth=False,  # auth has its own tests (tests/api/test_auth.py); it answers before the body too
)
RECORD_LIMIT = SETTINGS.max_record_bytes + REQUEST_OVERHEAD_BYTES
URL = "/v1/namespaces/orders/log"


@pytest.fixture
def settings():
    return SETTINGS


@pytest.fixture
def body_deps(producer, registry, settings):
    return api_deps(settings, registry, producer, slots=SLOTS)


@pytest.fixture
async def api(api_client, body_deps):
    return await api_client(create_api(body_deps))


class Conn:
    """One raw HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client) -> Conn:
        return cls(*await asyncio.open_connection(client.host, client.port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self, path: str, headers: dict[str, str], method: str = "POST") -> None:
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: test",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def response(self, within: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(within):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode().split("\r\n")
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            status = int(status_line.split()[1])
            body = b""
            if "content-length" in headers:
                body = await self.reader.readexactly(int(headers["content-length"]))
            return status, headers, body

    def close(self) -> None:
        self.writer.close()


async def test_a_16_mib_single_write_is_refused_from_its_content_length_unread(api, producer):
    client = api
    assert SETTINGS.max_request_bytes == 16 * 1024 * 1024
    conn = await Conn.open(client)
    try:
        # the headers only: an answer proves the API did not wait for (or read) the body
        await conn.head(URL, {"Content-Length": str(16 * 1024 * 1024)})
        status, _, body = await conn.response()
    finally:
        conn.close()
    assert status == 413
    answer = orjson.loads(body)
    assert answer["field"] == "body"
    assert answer["durable"] == "FALSE"
    assert f"limit of {RECORD_LIMIT} bytes" in answer["reason"]
    assert str(16 * 1024 * 1024) in answer["reason"]
    assert producer.sent == []


async def test_limits_are_per_route(api, producer):
    """A single write is bounded by the largest record, a batch by the request limit, and admin
    routes (and routes without a body) by a small limit."""
    client = api
    assert RECORD_LIMIT < 1_100_000
    for method, path, length, status in [
        ("POST", URL, RECORD_LIMIT + 1, 413),
        ("POST", URL + ":batch", RECORD_LIMIT + 1, None),  # read: the batch limit is 16 MiB
        ("POST", URL + ":batch", SETTINGS.max_request_bytes + 1, 413),
        ("POST", "/v1/namespaces/orders/dlq:redrive", SMALL_BODY_BYTES + 1, 413),
        ("GET", "/v1/namespaces/orders", SMALL_BODY_BYTES + 1, 413),
    ]:
        conn = await Conn.open(client)
        try:
            await conn.head(path, {"Content-Length": str(length)}, method)
            if status is None:  # not refused: the API waits for the body
                with pytest.raises(TimeoutError):
                    await conn.response(within=0.5)
                continue
            got, _, body = await conn.response()
            assert (method, path, got) == (method, path, status)
            assert orjson.loads(body)["field"] == "body"
        finally:
            conn.close()
    assert producer.sent == []


async def test_a_batch_over_the_single_write_limit_is_written(api, producer):
    client = api
    records = [{"payload": "x" * 900, "key": str(i)} for i in range(SLOTS)]
    pad = b" " * (RECORD_LIMIT + 1)  # whitespace: the batch is over a single write's limit
    body = orjson.dumps({"records": records})[:-1] + pad + b"}"
    response = await client.post(URL + ":batch", data=body)
    assert response.status == 200
    assert len(producer.sent) == SLOTS


async def test_a_chunked_body_is_read_only_up_to_the_limit(api, producer):
    """Without a Content-Length, reading stops (413) once the body is over the limit, while the
    client is still sending."""
    client = api
    conn = await Conn.open(client)
    try:
        await conn.head(URL, {"Transfer-Encoding": "chunked"})
        piece = b"x" * 65536
        chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        sent = 0
        while sent <= RECORD_LIMIT:
            await conn.send(chunk)
            sent += len(piece)
        # no last chunk: the body never ends, yet the API answers
        status, _, body = await conn.response()
    finally:
        conn.close()
    assert status == 413
    assert f"limit of {RECORD_LIMIT} bytes" in orjson.loads(body)["reason"]
    assert producer.sent == []


async def test_a_body_sent_in_pieces_is_read_whole(api, producer):
    client = api
    conn = await Conn.open(client)
    try:
        body = orjson.dumps({"payload": {"n": 1}, "key": "k"})
        await conn.head(URL, {"Content-Length": str(len(body)), "Content-Type": "application/json"})
        for i in range(0, len(body), 5):
            await conn.send(body[i : i + 5])
            await asyncio.sleep(0.01)
        status, _, answer = await conn.response()
    finally:
        conn.close()
    assert status == 200, answer
    assert orjson.loads(answer)["durable"] == "TRUE"
    assert len(producer.sent) == 1


async def test_expect_100_continue(api, producer):
    """A client that waits for 100 Continue is told to send a body within the limit, and is
    refused before sending one over it."""
    client = api
    body = orjson.dumps({"payload": 1})
    conn = await Conn.open(client)
    try:
        await conn.head(URL, {"Content-Length": str(len(body)), "Expect": "100-continue"})
        status, _, _ = await conn.response()
        assert status == 100
        await conn.send(body)
        status, _, _ = await conn.response()
        assert status == 200
        await conn.head(URL, {"Content-Length": str(RECORD_LIMIT + 1), "Expect": "100-continue"})
        status, _, _ = await conn.response()
        assert status == 413
    finally:
        conn.close()
    assert len(producer.sent) == 1


async def test_slow_bodies_hold_no_write_slot(api, body_deps, producer):
    """64 clients that send their headers and part of a body, then stall, do not keep a fast
    client's write from its slot (there are only 4)."""
    client = api
    server = client.server.runner.server
    before = server.requests_count
    slow = [await Conn.open(client) for _ in range(64)]
    try:
        for conn in slow:
            await conn.head(URL, {"Content-Length": "100"})
            await conn.send(b'{"payload": "')
        # every slow request has reached the API and is waiting for the rest of its body
        async with asyncio.timeout(20):
            while server.requests_count - before < 64:
                await asyncio.sleep(0.02)
        response = await client.post(URL, json={"payload": "fast"})
        assert response.status == 200  # was 503: the slow bodies held all 4 slots
        assert (await response.json())["durable"] == "TRUE"
        assert len(producer.sent) == 1
        assert body_deps.limiter.in_flight == 0
    finally:
        for conn in slow:
            conn.close()


@pytest.mark.parametrize(
    "settings", [SETTINGS.replace(body_read_timeout_s=0.5)], ids=["timeout=0.5s"]
)
async def test_a_body_that_does_not_arrive_in_time_is_408(api, body_deps, producer):
    client = api
    conn = await Conn.open(client)
    try:
        await conn.head(URL, {"Content-Length": "100"})
        await conn.send(b'{"payload": "')
        status, _, body = await conn.response(within=10)
    finally:
        conn.close()
    assert status == 408
    answer = orjson.loads(body)
    assert answer["field"] == "body"
    assert "0.5 s" in answer["reason"]
    assert body_deps.limiter.in_flight == 0
    assert producer.sent == []


def _lists(n: int) -> bytes:
    """``[[],[],...]``: JSON whose decoded objects take ~25x its bytes."""
    return b"[" + b"[]," * (n - 1) + b"[]]"


def _tracked_lists() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is list)


@pytest.mark.parametrize("route", ["log", "log:batch"])
async def test_a_write_awaiting_its_ack_holds_its_records_not_its_decoded_body(
    api, body_deps, producer, registry, route
):
    """Many writes may await the broker at once: each holds its encoded records (about its body's
    bytes), not the decoded body (a list per 3 bytes here)."""
    config = parse_namespace({"name": "big", "target": {"type": "kafka", "topic": "out"}})
    registry.apply(*encode_event(config, 2))  # the default payload limit (1 MiB)
    if route == "log":
        decoded, body = 290_000, b'{"payload":' + _lists(290_000) + b"}"
    else:
        record = b'{"payload":' + _lists(70_000) + b"}"
        decoded, body = 70_000 * SLOTS, b'{"records":[' + b",".join([record] * SLOTS) + b"]}"
    producer.block = asyncio.Event()
    before = _tracked_lists()
    try:
        pending = asyncio.create_task(
            api.post(
                f"/v1/namespaces/big/{route}",
                data=body,
                headers={"Content-Type": "application/json"},
            )
        )
        async with asyncio.timeout(30):
            while body_deps.limiter.in_flight == 0:  # taken right before the broker send
                await asyncio.sleep(0.01)
        # the handler now awaits the broker's ack
        held = _tracked_lists() - before
    finally:
        producer.block.set()
    response = await pending
    assert response.status == 200, await response.text()
    assert held < decoded / 100, f"{held} lists held while awaiting the ack (decoded: {decoded})"
    assert sum(len(r.value) for r in producer.sent) > 0.9 * len(body)


@pytest.mark.parametrize("settings", [SETTINGS.replace(auth=True)], ids=["auth"])
async def test_without_a_token_a_16_mib_write_is_refused_unread(api, producer):
    """Auth answers before the body is read too (401, not 413: the client learns what to fix)."""
    conn = await Conn.open(api)
    try:
        await conn.head(URL, {"Content-Length": str(16 * 1024 * 1024)})
        status, headers, _ = await conn.response()
    finally:
        conn.close()
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert producer.sent == []
