"""Raw HTTP servers on loopback: the answers a well-behaved app does not give."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

# -- HTTP servers ----------------------------------------------------------------------------

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
            line, *fields = head[:-4].split(b"\r\n")
            headers: dict[bytes, bytes] = {}
            for line_field in fields:
                name, _, value = line_field.partition(b":")
                headers[name.strip().lower()] = value.strip()
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
