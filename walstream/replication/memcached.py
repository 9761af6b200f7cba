"""memcached's meta protocol on one kept-alive, pipelined asyncio connection per server.

Why our own: LWW needs ``mg … c`` (read with the CAS) and ``ms … C<cas>`` (compare-and-set)
in batches. aiomcache and emcache speak the classic text protocol one command per round trip
(emcache batches only gets); meta-memcache speaks meta commands, but on blocking sockets.

A batch is written at once and its replies read in order, then a ``mn`` (meta no-op) whose
``MN`` must come right after the last reply: a count that does not match (a server that read
part of a value as a command) closes the connection instead of pairing replies with the wrong
requests. A connect has a deadline, and a batch one of silence: it fails once the server has
neither answered nor taken in any of the batch's bytes for ``timeout_s`` (a deadline on the
whole batch would fail a batch of large values over a slow link on every try, for ever: each
try takes as long). A timeout, a reset or a refused connect raises
:class:`~walstream.errors.TargetUnavailableError` (retriable) and drops the connection, and
the next batch connects again. A batch cancelled while it waits for its replies drops the
connection too, so its replies can never be read as the next batch's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from walstream.errors import TargetUnavailableError

__all__ = ["MetaConnection", "MetaReply"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class MetaReply:
    """One reply: its status (``VA``, ``HD``, ``EN``, ``NS``, ``EX``, ``NF``, or an error line's
    first word: ``CLIENT_ERROR``, ``SERVER_ERROR``, ``ERROR``), its flags, its value (VA only).
    For an error line, ``flags`` holds the message's words."""

    status: bytes
    flags: tuple[bytes, ...] = ()
    value: bytes | None = None

    def flag(self, name: bytes) -> bytes | None:
        """The token of a returned flag (``c`` → the CAS), or None when absent."""
        for flag in self.flags:
            if flag[:1] == name:
                return flag[1:]
        return None


_NOOP = b"mn\r\n"
_READ_BYTES = 256 * 1024


class MetaConnection:
    """A pipelined connection to one memcached server (``host:port``, ``[v6]:port``),
    reconnected on demand.

    Batches on one connection take turns (a lock); a batch is any number of meta commands.
    """

    def __init__(self, address: str, *, timeout_s: float = 2.0) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        # an IPv6 address comes in brackets ([::1]:11211, as a region's config names it)
        self._host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        self._port = int(port)
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._item_size_max: int | None = None
        #: the item size last read (kept while disconnected; None: never read)
        self.last_item_size_max: int | None = None

    async def execute(self, commands: list[bytes]) -> list[MetaReply]:
        """Send ``commands`` (each a full meta command with its CRLF and data block) in one
        write; return their replies in order.

        Raises:
            TargetUnavailableError: no connection, a timeout, a reset, or out-of-step replies.
        """
        if not commands:
            return []
        async with self._lock:
            return await self._guarded(lambda r, w: self._exchange(r, w, commands))

    async def item_size_max(self, *, fresh: bool = False) -> int:
        """The server's ``item_size_max`` (``stats settings``), read once per connection (again
        with ``fresh``: the server behind a kept-alive connection may have been restarted with
        another size, which only an exchange on it finds out); a server running without CAS
        (``-C``) is unavailable for writes (they need it).

        Raises:
            TargetUnavailableError: as :meth:`execute`.
        """
        async with self._lock:
            if self._item_size_max is None or fresh:
                self._item_size_max = await self._guarded(self._read_item_size_max)
                self.last_item_size_max = self._item_size_max
            return self._item_size_max

    async def close(self) -> None:
        """Close the connection (the next batch opens another)."""
        async with self._lock:
            await self._drop()

    async def _guarded(
        self, exchange: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[_T]]
    ) -> _T:
        try:
            streams = self._streams
            if streams is None:
                async with asyncio.timeout(self.timeout_s):
                    streams = await self._connect()
            return await exchange(*streams)
        except TimeoutError:
            await self._drop()
            raise TargetUnavailableError(
                f"memcached {self.address}: no answer in {self.timeout_s}s"
            ) from None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self._drop()
            raise TargetUnavailableError(f"memcached {self.address}: {exc!r}") from exc
        except asyncio.CancelledError:
            # the batch's replies may still come: they must not be read as the next batch's
            self._abort()
            raise

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self._streams = await asyncio.open_connection(self._host, self._port)
        self._item_size_max = None
        return self._streams

    def _abort(self) -> asyncio.StreamWriter | None:
        """Forget the connection and close it at once, its unsent bytes discarded (a graceful
        close waits for them to reach the server: to a hung one, for as long as it hangs); the
        writer, to wait for, or None."""
        streams, self._streams = self._streams, None
        if streams is None:
            return None
        streams[1].transport.abort()
        return streams[1]

    async def _drop(self) -> None:
        writer = self._abort()
        if writer is not None:
            # the peer may be gone already: closing is all that is left to do
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, commands: list[bytes]
    ) -> list[MetaReply]:
        # write everything before reading: draining first could wait on a server blocked on
        # replies nobody reads yet; the transport sends the rest while the replies come in
        writer.write(b"".join((*commands, _NOOP)))
        replies = await _read_replies(lambda: self._receive(reader, writer))
        if len(replies) != len(commands):
            raise ValueError(f"{len(replies)} replies to {len(commands)} commands")
        async with asyncio.timeout(self.timeout_s):
            await writer.drain()
        return replies

    async def _receive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        """The next bytes of the replies. It waits as long as the server makes progress: sends
        replies, or takes in the batch (the bytes still to send shrink); TimeoutError once it
        did neither for ``timeout_s``."""
        transport = writer.transport
        unsent = transport.get_write_buffer_size()
        while True:
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await reader.read(_READ_BYTES)
            except TimeoutError:
                left = transport.get_write_buffer_size()
                if left >= unsent:
                    raise
                unsent = left

    async def _read_item_size_max(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> int:
        writer.write(b"stats settings\r\n")
        size = None
        cas_off = False
        async with asyncio.timeout(self.timeout_s):
            while (line := await reader.readuntil(b"\r\n")) != b"END\r\n":
                words = line.split()
                if words[:2] == [b"STAT", b"item_size_max"]:
                    size = int(words[2])
                elif words[:3] == [b"STAT", b"cas_enabled", b"no"]:
                    # every compare-and-set would be answered EX: a key's first write (add)
                    # stored, no later one ever
                    cas_off = True
        if size is None:
            raise ValueError("stats settings without item_size_max")
        if cas_off:
            raise ValueError("runs without CAS (-C): last-write-wins needs compare-and-set")
        return size


async def _read_replies(receive: Callable[[], Awaitable[bytes]]) -> list[MetaReply]:
    """Replies up to the batch's closing ``MN``: parsed from large reads, not line by line."""
    buffer = bytearray()
    pos = 0
    replies: list[MetaReply] = []
    while True:
        end = buffer.find(b"\r\n", pos)
        reply = None
        if end >= 0:
            words = bytes(buffer[pos:end]).split()
            if not words:
                raise ValueError("empty reply line")
            if words[0] != b"VA":
                reply, pos = MetaReply(words[0], tuple(words[1:])), end + 2
            elif len(buffer) >= (stop := end + 2 + int(words[1])) + 2:
                if buffer[stop : stop + 2] != b"\r\n":
                    raise ValueError("value block without its CRLF")
                reply = MetaReply(words[0], tuple(words[2:]), bytes(buffer[end + 2 : stop]))
                pos = stop + 2
        if reply is None:  # incomplete: read more
            del buffer[:pos]
            pos = 0
            data = await receive()
            if not data:
                raise asyncio.IncompleteReadError(bytes(buffer), None)
            buffer += data
        elif reply.status == b"MN":
            if pos != len(buffer):
                raise ValueError("bytes after the batch's MN")
            return replies
        else:
            replies.append(reply)
