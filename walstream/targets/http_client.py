"""A lean HTTP/1.1 client for the http target: keep-alive POSTs over a pool per origin.

Why not aiohttp's ClientSession: a POST through it costs about 95 us of CPU on generality the
target never uses (cookies, redirects, tracing, proxies, multipart, content decoding), which is
half of a delivery's CPU when a record fails once. This client writes the request itself
(walstream.core.http_request encodes it) and parses the response with llhttp (httptools, the
parser uvicorn uses): about 40 us a POST.

What it does: http and https, keep-alive with a connection limit per origin (callers queue
beyond it), idle connections closed after ``idle_timeout_s`` (and an origin's pool dropped once
it holds none: records choose origins, so what is kept for them must go away), Content-Length
and chunked responses, responses ended by the connection closing, a
total timeout per request (connect included), a transparent retry on another connection when a
reused idle one turns out closed by the server before any answer (after an upstream restart,
every idle one may be). What it leaves out, on purpose: redirects (the target does not follow
them), proxies, cookies, compression, HTTP/2.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import httptools

from walstream.core.http_request import Endpoint, encode_request, parse_endpoint

__all__ = ["HttpClient", "HttpProtocolError", "HttpResponse"]

#: What the client keeps of a response body (error messages quote it; the rest is read and
#: dropped so the connection can be reused).
BODY_KEPT_BYTES = 1024
#: Connections open at once to one origin (in use and idle); callers beyond it queue.
DEFAULT_LIMIT_PER_ORIGIN = 100
#: An idle keep-alive connection is closed after this long.
DEFAULT_IDLE_TIMEOUT_S = 30.0


class HttpProtocolError(ConnectionError):
    """The server's answer is not HTTP/1.x, or the connection ended before a status line."""


class HttpResponse(NamedTuple):
    status: int
    #: the first BODY_KEPT_BYTES of the body
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, answered in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._answered = False  # any byte of the current response seen
        self._status = 0
        self._body = bytearray()
        self._headers_done = False
        self.idle_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpProtocolError(f"bad HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._headers_done:  # a body ended by the close: the status is what counts
                self._waiter.set_result(HttpResponse(self._status, bytes(self._body)))
            elif not self._answered:
                self._waiter.set_exception(_StaleConnection("closed before any answer"))
            else:
                self._fail(HttpProtocolError("connection closed mid-response"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        room = BODY_KEPT_BYTES - len(self._body)
        if room > 0:
            self._body += body[:room]

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if self._status < 200:  # 1xx interim answer: the real one follows
            self._headers_done = False
            return
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(HttpResponse(self._status, bytes(self._body)))

    # -- use -------------------------------------------------------------------------------

    def send(self, request: bytes, waiter: asyncio.Future[HttpResponse]) -> None:
        self._waiter = waiter
        self._answered = self._headers_done = False
        self._status = 0
        self._body.clear()
        if self.closed or self.transport is None or self.transport.is_closing():
            waiter.set_exception(_StaleConnection("closed while idle"))
            return
        self.transport.write(request)

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def reusable(self) -> bool:
        return not self.closed and self._waiter is not None and self._waiter.done()


class _StaleConnection(ConnectionError):
    """An idle keep-alive connection the server had closed: try again on a new one."""


class _OriginPool:
    """The connections to one origin: at most ``limit`` open, idle ones reused newest first and
    closed after ``idle_timeout_s``; ``on_empty`` is called when none is left open or wanted."""

    def __init__(
        self,
        limit: int,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        on_empty: Callable[[_OriginPool], None] | None = None,
    ) -> None:
        self.limit = limit
        self.idle_timeout_s = idle_timeout_s
        self.on_empty = on_empty
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def slot(self) -> _Connection | None:
        """An idle connection, or None with a slot reserved for a new one."""
        while True:
            while self.idle:
                conn = self.idle.pop()
                if conn.idle_timer is not None:
                    conn.idle_timer.cancel()
                    conn.idle_timer = None
                if not conn.closed:
                    return conn
                self.open -= 1
            if self.open < self.limit:
                self.open += 1
                return None
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if not waiter.cancelled() and waiter.done():
                    self._wake()  # pass on a wake-up we will not use
                raise

    def release(self, conn: _Connection | None) -> None:
        """Give back a connection (or a slot whose connect failed: ``conn`` None)."""
        if conn is not None and conn.reusable:
            self.idle.append(conn)
            conn.idle_timer = asyncio.get_running_loop().call_later(
                self.idle_timeout_s, self._expire, conn
            )
        else:
            if conn is not None:
                conn.close()
            self.open -= 1
        self._wake()

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _expire(self, conn: _Connection) -> None:
        """An idle connection's time is up: close it (and tell the owner if none is left)."""
        conn.idle_timer = None
        try:
            self.idle.remove(conn)
        except ValueError:
            return  # taken meanwhile
        conn.close()
        self.open -= 1
        self._wake()
        if self.open == 0 and not self.waiters and self.on_empty is not None:
            self.on_empty(self)

    def close(self) -> None:
        for conn in self.idle:
            if conn.idle_timer is not None:
                conn.idle_timer.cancel()
            conn.close()
        self.idle.clear()


class HttpClient:
    """POSTs bodies to URLs; one instance per process, shared by every http target."""

    def __init__(
        self,
        *,
        limit_per_origin: int = DEFAULT_LIMIT_PER_ORIGIN,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._limit = limit_per_origin
        self._idle_timeout_s = idle_timeout_s
        self._ssl = ssl_context
        self._pools: dict[tuple[str, str, int], _OriginPool] = {}

    async def post(
        self, url: str, body: bytes, headers: list[tuple[str, str]], *, timeout_s: float
    ) -> HttpResponse:
        """POST ``body``; the response's status and the start of its body.

        Raises:
            TimeoutError: no full answer within ``timeout_s`` (connecting included).
            OSError: connecting failed, or the connection broke (HttpProtocolError included).
            InvalidUrlError, InvalidHeaderError (walstream.core.http_request): nothing was
                sent.
        """
        endpoint = parse_endpoint(url)
        request = encode_request(endpoint, body, headers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pool = self._pools.get(endpoint.origin)
        if pool is None:
            pool = self._pools[endpoint.origin] = _OriginPool(
                self._limit, self._idle_timeout_s, self._forget
            )
        while True:  # again only after a stale idle connection, which the pool then drops
            conn = await self._acquire(pool, endpoint, deadline)
            reused = conn is not None
            try:
                if conn is None:
                    conn = await self._connect(endpoint, loop, deadline)
                return await self._exchange(conn, request, loop, deadline)
            except _StaleConnection:
                if not reused:
                    raise HttpProtocolError("closed before any answer") from None
            finally:
                pool.release(conn)

    async def _acquire(
        self,
        pool: _OriginPool,
        endpoint: Endpoint,
        deadline: float,
    ) -> _Connection | None:
        if pool.idle or pool.open < pool.limit:
            return await pool.slot()  # does not wait
        try:
            async with asyncio.timeout_at(deadline):
                return await pool.slot()
        except TimeoutError:
            raise TimeoutError(f"no free connection to {endpoint.origin[1]}") from None

    async def _connect(
        self, endpoint: Endpoint, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> _Connection:
        _, host, port = endpoint.origin
        tls: ssl.SSLContext | None = None
        if endpoint.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        async with asyncio.timeout_at(deadline):
            _, conn = await loop.create_connection(
                _Connection, host, port, ssl=tls, server_hostname=host if tls else None
            )
        return conn

    @staticmethod
    async def _exchange(
        conn: _Connection, request: bytes, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> HttpResponse:
        waiter: asyncio.Future[HttpResponse] = loop.create_future()
        conn.send(request, waiter)
        expiry = loop.call_at(deadline, _expire, waiter)
        try:
            return await waiter
        except BaseException:
            conn.close()  # an answer may still come: the connection is not reusable
            raise
        finally:
            expiry.cancel()

    def _forget(self, pool: _OriginPool) -> None:
        for origin, kept in self._pools.items():
            if kept is pool:
                del self._pools[origin]
                return

    @property
    def origins(self) -> int:
        """Origins with a pool (some connection open or wanted)."""
        return len(self._pools)

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _expire(waiter: asyncio.Future[HttpResponse]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no answer in time"))
