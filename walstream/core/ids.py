"""Record ids: UUIDv7-style, so ids sort by creation time (useful for DLQ and replay windows)."""

from __future__ import annotations

import os

__all__ = ["new_id", "new_token"]


def new_id(now_ms: int, random_bytes: bytes | None = None) -> str:
    """A 32-hex-digit time-ordered id (RFC 9562 UUIDv7 layout) for the given milliseconds."""
    rand = random_bytes if random_bytes is not None else os.urandom(10)
    value = (now_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    rand_int = int.from_bytes(rand[:10], "big")
    value |= ((rand_int >> 68) & 0xFFF) << 64  # rand_a: 12 bits
    value |= 0b10 << 62  # RFC variant
    value |= rand_int & ((1 << 62) - 1)
    return f"{value:032x}"


def new_token() -> str:
    """A random idempotency token for a request that did not bring one."""
    return os.urandom(16).hex()
