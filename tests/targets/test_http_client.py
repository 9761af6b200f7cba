"""The http target's client against real servers on loopback: an aiohttp app for ordinary
answers, raw asyncio servers for the answers a well-behaved app does not give (answers ended by
a close, idle connections closed, garbage, silence), and TLS with a certificate made here."""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from walstream.core.http_request import InvalidHeaderError
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.records import Envelope, Lifecycle
from walstream.targets.http import HttpTarget
from walstream.targets.http_client import HttpClient, HttpProtocolError
from walstream.testing import RawServer, Rfc7230Upstream, serve_app

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Recorder:
    """An aiohttp app answering POST /{status}: records what it got, and from which peer."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes, Any]] = []
        self.active = 0
        self.most_active = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            body = await request.read()
            peer = request.transport.get_extra_info("peername") if request.transport else None
            self.requests.append((request.path_qs, dict(request.headers), body, peer))
            if request.query.get("sleep"):
                await asyncio.sleep(float(request.query["sleep"]))
            status = int(request.match_info["status"])
            if request.query.get("chunked"):
                response = web.StreamResponse(status=status)
                response.enable_chunked_encoding()
                await response.prepare(request)
                for part in (b"first ", b"second ", b"third"):
                    await response.write(part)
                await response.write_eof()
                return response
            return web.Response(status=status, body=request.query.get("say", "").encode())
        finally:
            self.active -= 1


@pytest.fixture
async def app_server() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/{status}", recorder.handle)
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}", recorder


async def idle(reader: asyncio.StreamReader) -> None:
    """Keep the connection open until the client closes it."""
    await reader.read()


def replying(answer: bytes, *, close: bool) -> Handler:
    """A handler that reads one request, writes ``answer`` as it is, then closes the
    connection (``close``) or keeps it open until the client closes it."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        if close:
            writer.close()
        else:
            await idle(reader)

    return handler


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    yield http
    await http.close()


async def test_post_sends_body_and_headers_and_reuses_the_connection(
    client: HttpClient, app_server: tuple[str, Recorder]
) -> None:
    base, recorder = app_server
    headers = [("Content-Type", "application/json"), ("X-Wal-Id", "r-1"), ("X-Name", "Zoë")]
    first = await client.post(f"{base}/200?a=1", b'{"x":1}', headers, timeout_s=5)
    second = await client.post(f"{base}/201?say=made", b"two", headers, timeout_s=5)
    assert (first.status, second.status, second.body) == (200, 201, b"made")
    (path1, seen, body1, peer1), (path2, _, body2, peer2) = recorder.requests
    assert (path1, body1, path2, body2) == ("/200?a=1", b'{"x":1}', "/201?say=made", b"two")
    assert seen["X-Wal-Id"] == "r-1"
    assert seen["Content-Type"] == "application/json"
    assert seen["Host"] == base.removeprefix("http://")
    assert seen["X-Name"] == "Zoë"  # sent as UTF-8
    assert peer1 == peer2  # one keep-alive connection


async def test_chunked_answer(client: HttpClient, app_server: tuple[str, Recorder]) -> None:
    base, _ = app_server
    response = await client.post(f"{base}/503?chunked=1", b"", [], timeout_s=5)
    assert (response.status, response.body) == (503, b"first second third")
    again = await client.post(f"{base}/200", b"", [], timeout_s=5)  # the connection is intact
    assert again.status == 200


async def test_answer_ended_by_close(client: HttpClient) -> None:
    answer = b"HTTP/1.1 404 Not Found\r\n\r\nno such thing"
    async with RawServer(replying(answer, close=True)) as port:
        base = f"http://127.0.0.1:{port}"
        response = await client.post(f"{base}/x", b"a", [], timeout_s=5)
    assert (response.status, response.body) == (404, b"no such thing")


async def test_interim_100_continue_then_the_answer(client: HttpClient) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    async with RawServer(replying(answer, close=False)) as port:
        base = f"http://127.0.0.1:{port}"
        assert (await client.post(f"{base}/x", b"a", [], timeout_s=5)).status == 204


async def test_idle_connection_closed_by_the_server_is_replaced(client: HttpClient) -> None:
    """Keep-alive race: the server drops an idle connection; the next POST must not fail."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # keep-alive by default
        await writer.drain()
        writer.close()  # ...and then closed while idle

    async with RawServer(handler) as port:
        base = f"http://127.0.0.1:{port}"
        assert (await client.post(f"{base}/x", b"1", [], timeout_s=5)).status == 200
        await asyncio.sleep(0.05)
        assert (await client.post(f"{base}/x", b"2", [], timeout_s=5)).status == 200
    assert connections == 2


async def test_every_idle_connection_closed_by_the_server_is_replaced(
    client: HttpClient,
) -> None:
    """An upstream dropping all its idle connections (a restart): each one the client picks
    closes on its request, unanswered; the POST must still go through, on a new connection."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await read_request(reader)  # the next request on this connection: dropped unanswered

    async with RawServer(handler) as port:
        base = f"http://127.0.0.1:{port}"
        first = await asyncio.gather(
            *(client.post(f"{base}/x", b"1", [], timeout_s=5) for _ in range(3))
        )
        assert [r.status for r in first] == [200] * 3
        assert (await client.post(f"{base}/x", b"2", [], timeout_s=5)).status == 200
    assert connections == 4  # the three idle ones tried and dropped, then a new one


async def test_fresh_connection_closed_without_answer_is_an_error(client: HttpClient) -> None:
    async with RawServer(replying(b"", close=True)) as port:
        base = f"http://127.0.0.1:{port}"
        with pytest.raises(HttpProtocolError):
            await client.post(f"{base}/x", b"1", [], timeout_s=5)


async def test_garbage_answer_is_a_protocol_error(client: HttpClient) -> None:
    async with RawServer(replying(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", close=False)) as port:
        base = f"http://127.0.0.1:{port}"
        with pytest.raises(HttpProtocolError):
            await client.post(f"{base}/x", b"1", [], timeout_s=5)


async def test_silence_times_out_and_the_connection_is_not_reused(client: HttpClient) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        request = await read_request(reader)
        if b"/slow" in request:
            await asyncio.sleep(1)  # answers, but after the client gave up
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await idle(reader)

    async with RawServer(handler) as port:
        base = f"http://127.0.0.1:{port}"
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(TimeoutError):
            await client.post(f"{base}/slow", b"1", [], timeout_s=0.2)
        assert 0.15 < loop.time() - began < 0.8
        assert (await client.post(f"{base}/fast", b"2", [], timeout_s=5)).status == 200
    assert connections == 2  # the late answer could not be taken for the second request's


async def test_connection_refused_is_an_os_error(client: HttpClient) -> None:
    async with RawServer(lambda reader, writer: read_request(reader)) as port:  # type: ignore[arg-type,return-value]
        base = f"http://127.0.0.1:{port}"
    with pytest.raises(ConnectionRefusedError):
        await client.post(f"{base}/x", b"1", [], timeout_s=5)


@pytest.mark.parametrize(
    "header",
    [("X-Token", "a\r\nX-Evil: 1"), ("X-Token", "a\nb"), ("X-Token", "a\x00"), ("Bad Name", "v")],
)
async def test_header_that_would_break_framing_is_refused_before_sending(
    client: HttpClient, app_server: tuple[str, Recorder], header: tuple[str, str]
) -> None:
    base, recorder = app_server
    with pytest.raises(InvalidHeaderError):
        await client.post(f"{base}/200", b"1", [header], timeout_s=5)
    assert recorder.requests == []


async def test_connections_per_origin_are_limited_and_callers_queue(
    app_server: tuple[str, Recorder],
) -> None:
    base, recorder = app_server
    http = HttpClient(limit_per_origin=2)
    try:
        answers = await asyncio.gather(
            *(http.post(f"{base}/200?sleep=0.1", b"", [], timeout_s=5) for _ in range(6))
        )
    finally:
        await http.close()
    assert [a.status for a in answers] == [200] * 6
    assert recorder.most_active == 2
    assert len({peer for *_, peer in recorder.requests}) == 2


async def test_queued_caller_times_out_when_no_connection_frees(
    app_server: tuple[str, Recorder],
) -> None:
    base, _ = app_server
    http = HttpClient(limit_per_origin=1)
    try:
        slow = asyncio.create_task(http.post(f"{base}/200?sleep=0.5", b"", [], timeout_s=5))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await http.post(f"{base}/200", b"", [], timeout_s=0.1)
        assert (await slow).status == 200
        assert (await http.post(f"{base}/200", b"", [], timeout_s=5)).status == 200
    finally:
        await http.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (and its key), made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is missing: make system-deps installs it")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        body = request.split(b"\r\n\r\n", 1)[1]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await idle(reader)

    trusting = HttpClient(ssl_context=ssl.create_default_context(cafile=str(cert)))
    default = HttpClient()
    try:
        async with RawServer(handler, ssl=server_tls) as port:
            answer = await trusting.post(f"https://localhost:{port}/x", b"secret", [], timeout_s=5)
            assert (answer.status, answer.body) == (200, b"secret")
            with pytest.raises(ssl.SSLCertVerificationError):  # not trusted by default
                await default.post(f"https://localhost:{port}/x", b"secret", [], timeout_s=5)
    finally:
        await trusting.close()
        await default.close()


# -- the http target over the client -------------------------------------------------------


def envelope(target: dict[str, Any], token: str = "tok-1") -> Envelope:  # noqa: S107
    return Envelope("r-1", "orders", None, {"n": 1}, "json", target, Lifecycle(5, 7, 0), token, 5)


async def test_target_classifies_answers(
    client: HttpClient, app_server: tuple[str, Recorder]
) -> None:
    base, recorder = app_server
    target = HttpTarget(client)
    await target.deliver(envelope({"type": "http", "url": f"{base}/204"}))
    with pytest.raises(TargetUnavailableError) as unavailable:
        await target.deliver(envelope({"type": "http", "url": f"{base}/503?say=busy"}))
    assert unavailable.value.error_class == "http_503"
    assert "busy" in str(unavailable.value)
    with pytest.raises(TargetUnavailableError) as throttled:
        await target.deliver(envelope({"type": "http", "url": f"{base}/429"}))
    assert throttled.value.error_class == "http_429"
    with pytest.raises(TargetRejectedError) as rejected:
        await target.deliver(envelope({"type": "http", "url": f"{base}/422?say=bad+field+x"}))
    assert rejected.value.error_class == "http_422"
    assert "bad field x" in str(rejected.value)
    with pytest.raises(TargetUnavailableError) as slow:
        await target.deliver(
            envelope({"type": "http", "url": f"{base}/200?sleep=1", "timeout_ms": 100})
        )
    assert slow.value.error_class == "timeout"
    path, headers, body, _ = recorder.requests[0]
    assert (path, body) == ("/204", b'{"n":1}')
    assert headers["Idempotency-Key"] == "tok-1"
    assert headers["X-Wal-Attempt"] == "0"
    assert headers["X-Wal-Original-Write-Time"] == "7"


async def test_target_headers_replace_ours_whatever_their_case(
    client: HttpClient, app_server: tuple[str, Recorder]
) -> None:
    base, recorder = app_server
    spec = {"type": "http", "url": f"{base}/200", "headers": {"content-type": "text/x-mine"}}
    await HttpTarget(client).deliver(envelope(spec))
    _, headers, _, _ = recorder.requests[0]
    assert headers["Content-Type"] == "text/x-mine"
    assert len([k for k in headers if k.lower() == "content-type"]) == 1


async def test_target_refuses_unsendable_header_for_good(
    client: HttpClient, app_server: tuple[str, Recorder]
) -> None:
    base, recorder = app_server
    with pytest.raises(TargetRejectedError) as rejected:
        await HttpTarget(client).deliver(
            envelope({"type": "http", "url": f"{base}/200"}, token="a\r\nb")
        )
    assert rejected.value.error_class == "bad_request"
    assert recorder.requests == []


async def test_target_down_is_transient(client: HttpClient) -> None:
    async with RawServer(lambda reader, writer: read_request(reader)) as port:  # type: ignore[arg-type,return-value]
        base = f"http://127.0.0.1:{port}"
    with pytest.raises(TargetUnavailableError) as down:
        await HttpTarget(client).deliver(envelope({"type": "http", "url": f"{base}/200"}))
    assert down.value.error_class == "connection"


SMUGGLED = b"0\r\n\r\nPOST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n"


@pytest.mark.parametrize(
    "extra",
    [
        {"Transfer-Encoding": "chunked"},
        {"transfer-ENCODING": "chunked"},
        {"Content-Length": "5"},
        {"Host": "other.example"},
        {"Connection": "close"},
        {"Upgrade": "h2c"},
        {"Expect": "100-continue"},
    ],
)
async def test_smuggling_headers_are_refused_and_the_next_record_arrives_intact(
    client: HttpClient, extra: dict[str, str]
) -> None:
    """A record whose target headers would reframe its request is never sent (a permanent
    failure), and the next record on the same pooled connection is its own request."""
    upstream = Rfc7230Upstream()
    async with RawServer(upstream.handler) as port:
        base = f"http://127.0.0.1:{port}"
        target = HttpTarget(client)
        await target.deliver(envelope({"type": "http", "url": f"{base}/warm"}))  # pools one
        evil = envelope({"type": "http", "url": f"{base}/evil", "headers": extra})
        evil = evil._replace(payload=base64.b64encode(SMUGGLED).decode(), payload_encoding="base64")
        with pytest.raises(TargetRejectedError) as refused:
            await target.deliver(evil)
        assert refused.value.error_class == "bad_request"
        assert next(iter(extra)) in str(refused.value)
        good = envelope({"type": "http", "url": f"{base}/next"})
        await target.deliver(good._replace(payload={"n": 2}))
        await asyncio.wait_for(_until(lambda: len(upstream.requests) >= 2), 5)
    assert upstream.requests == [
        (b"POST /warm HTTP/1.1", b'{"n":1}'),
        (b"POST /next HTTP/1.1", b'{"n":2}'),
    ]
    assert upstream.connections == 1  # the same pooled connection carried both


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.01)


async def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    """Idle keep-alive connections do not live forever: each is closed after the idle timeout
    (the server sees the close), and the origin's pool is dropped once it holds none."""
    closed: list[float] = []
    answered: list[float] = []
    loop = asyncio.get_running_loop()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        answered.append(loop.time())
        await reader.read()  # returns when the client closes
        closed.append(loop.time())

    http = HttpClient(idle_timeout_s=0.3)
    try:
        async with RawServer(handler) as port:
            base = f"http://127.0.0.1:{port}"
            await asyncio.gather(*(http.post(f"{base}/x", b"", [], timeout_s=5) for _ in range(3)))
            assert http.origins == 1
            await asyncio.wait_for(_until(lambda: len(closed) == 3), 10)
            idle_for = [c - a for a, c in zip(sorted(answered), sorted(closed), strict=True)]
            assert all(t >= 0.25 for t in idle_for), idle_for
            assert http.origins == 0
            # a later POST opens a new connection and works
            assert (await http.post(f"{base}/x", b"", [], timeout_s=5)).status == 200
            assert len(answered) == 4
    finally:
        await http.close()
