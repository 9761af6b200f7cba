"""Cache operations for tests of the replication stages (issue 17): envelopes with a memcached
target, as the replicating client and WriteToLog log them (issue 17's record
contract), and their Kafka records."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Sequence
from typing import Any

from walstream.records import Envelope, Lifecycle, encode_envelope

__all__ = ["cache_envelope", "cache_record", "plain_exchange", "plain_get", "plain_ttls"]


def cache_envelope(
    op: str,
    key: str,
    value: bytes | None = None,
    *,
    ns: str = "cache",
    origin: str = "a",
    ttl: int | None = None,
    owt_ms: int | None = None,
    token: str = "tok-1",  # noqa: S107 - an idempotency token
) -> Envelope:
    """A ``op`` (set, delete, touch) of ``key`` logged in region ``origin`` at ``owt_ms`` (now
    by default: a region writer dead-letters a set older than its tombstone TTL, so a fixed
    time would turn every test's sets into dead letters once the calendar passed it) with
    idempotency token ``token`` (id ``id-<token>``); a set carries ``value`` (base64)."""
    if owt_ms is None:
        owt_ms = time.time_ns() // 1_000_000
    target: dict[str, Any] = {"type": "memcached", "op": op, "key": key, "origin_region": origin}
    if ttl is not None:
        target["ttl"] = ttl
    payload = base64.b64encode(value).decode() if value is not None else None
    return Envelope(
        id=f"id-{token}",
        namespace=ns,
        key=key,
        payload=payload,
        payload_encoding="base64" if value is not None else "json",
        target=target,
        lifecycle=Lifecycle(owt_ms, owt_ms, 0),
        idempotency_token=token,
        created_at_ms=owt_ms,
    )


def cache_record(env: Envelope) -> tuple[bytes, bytes]:
    """The Kafka key and value of ``env`` in its namespace's log (key: the memcached key)."""
    return str(env.target["key"]).encode(), encode_envelope(env)


def plain_get(
    address: str, keys: Sequence[bytes], *, per_get: int = 50, timeout_s: float = 10.0
) -> dict[bytes, bytes]:
    """What a plain memcached client reads (text protocol ``get k1 k2 ...``, pipelined on a
    socket of its own): the item bytes ``address`` stores for each key it holds (walstream's
    header and the value, as one blob), keyed by key; a key it does not hold is left out."""
    host, port = address.rsplit(":", 1)
    commands = [
        b"get %s\r\n" % b" ".join(keys[start : start + per_get])
        for start in range(0, len(keys), per_get)
    ]
    found: dict[bytes, bytes] = {}
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(b"".join(commands))
        buffer = b""
        ends = 0
        while ends < len(commands):
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                buffer += _received(sock)
                continue
            line = buffer[:line_end]
            if line == b"END":
                ends += 1
                buffer = buffer[line_end + 2 :]
                continue
            parts = line.split()
            if len(parts) < 4 or parts[0] != b"VALUE":
                raise AssertionError(f"memcached answered {line[:200]!r} to get")
            size = int(parts[3])
            start = line_end + 2
            while len(buffer) < start + size + 2:
                buffer += _received(sock)
            if buffer[start + size : start + size + 2] != b"\r\n":
                raise AssertionError(f"item of {parts[1]!r} is not {size} bytes")
            found[parts[1]] = buffer[start : start + size]
            buffer = buffer[start + size + 2 :]
    return found


def plain_exchange(address: str, request: bytes, until: bytes, *, timeout_s: float = 5.0) -> bytes:
    """A plain memcached client: ``request`` on a socket of its own, its answer read up to (and
    with) ``until``."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(request)
        data = b""
        while not data.endswith(until):
            data += _received(sock)
        return data


def _received(sock: socket.socket) -> bytes:
    chunk = sock.recv(1 << 20)
    if not chunk:
        raise AssertionError("memcached closed the connection")
    return chunk


def plain_ttls(address: str, keys: Sequence[bytes], *, timeout_s: float = 10.0) -> dict[bytes, int]:
    """Each held key's remaining TTL in seconds on ``address`` (meta ``mg <key> k t``, pipelined;
    -1: no expiry); a key the server does not hold is left out."""
    host, port = address.rsplit(":", 1)
    ttls: dict[bytes, int] = {}
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(b"".join(b"mg %s k t\r\n" % key for key in keys) + b"mn\r\n")
        buffer = b""
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                buffer += _received(sock)
                continue
            line, buffer = buffer[:line_end], buffer[line_end + 2 :]
            if line == b"MN":
                return ttls
            flags = line.split()
            if flags[0] == b"EN":  # a miss (1.6.18 echoes the k flag on it)
                continue
            if flags[0] != b"HD":
                raise AssertionError(f"memcached answered {line[:200]!r} to mg")
            named = {flag[:1]: flag[1:] for flag in flags[1:]}
            ttls[named[b"k"]] = int(named[b"t"])
