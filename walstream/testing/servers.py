"""HTTP on loopback for tests: an aiohttp app served for a block, raw servers giving the answers
a well-behaved app does not give, and a raw exchange sending what a well-behaved client does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

# -- HTTP servers ----------------------------------------------------------------------------


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[int]:
    """Serve ``app`` on a free loopback port for the block: that port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An asyncio server whose connections all end with it (3.11's ``Server`` leaves them)."""

    def __init__(self, handler: Handler, **kwargs: Any) -> None:
        self.handler = handler
        self.kwargs = kwargs
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("served outside a task")
        self.tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, **self.kwargs)
        return str(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        if self.server is None:
            return
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


class Rfc7230Upstream:
    """A raw HTTP/1.1 server that frames requests as RFC 7230 3.3.3 says (chunked wins over
    Content-Length) and answers each one 200 on the same keep-alive connection."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes]] = []  # (request line, body)
        self.connections = 0

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            line, headers = parse_head(head[:-4])
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = b""
                while True:
                    size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                    body += (await reader.readexactly(size + 2))[:-2]
                    if size == 0:
                        break
            else:
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            self.requests.append((line, body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()


# -- raw HTTP exchanges ----------------------------------------------------------------------


def parse_head(head: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """A message head (without its blank line): its start line, and its fields by lower-case
    name (the last of a repeated one)."""
    start, *lines = head.split(b"\r\n")
    fields: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    return start, fields


async def raw_exchange(host: str, port: int, request: bytes, *, within: float = 10.0) -> bytes:
    """Send ``request`` as it is on a connection of its own: all the server sends until it
    closes the connection (within ``within`` seconds)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        received = b""
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                received += chunk
        return received
    finally:
        writer.close()
        await writer.wait_closed()


@dataclass(frozen=True)
class RawAnswer:
    """An answer ``raw_exchange`` received, in its parts."""

    status: int
    #: The status line and the header lines, as received.
    head: bytes
    #: The header fields by lower-case name.
    headers: dict[bytes, bytes]
    body: bytes

    @classmethod
    def parse(cls, received: bytes) -> RawAnswer:
        head, _, body = received.partition(b"\r\n\r\n")
        status_line, headers = parse_head(head)
        return cls(int(status_line.split(b" ", 2)[1]), head, headers, body)
