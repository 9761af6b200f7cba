"""Record ids (also the idempotency token of a write that brings none).

Ids are UUIDv7-style, so they sort by creation time (useful for DLQ and replay windows). They come
from a PRNG seeded from the OS: they need uniqueness, not secrecy, and os.urandom costs a system
call per write on the API's hot path.
"""

from __future__ import annotations

import random

__all__ = ["new_id"]

_rng = random.Random()  # seeded from os.urandom at import  # noqa: S311 - uniqueness only


def new_id(now_ms: int, random_bits: int | None = None) -> str:
    """A 32-hex-digit time-ordered id (RFC 9562 UUIDv7 layout) for the given milliseconds."""
    rand = _rng.getrandbits(74) if random_bits is None else random_bits & ((1 << 74) - 1)
    value = (now_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand >> 62) << 64  # rand_a: 12 bits
    value |= 0b10 << 62  # RFC variant
    value |= rand & ((1 << 62) - 1)  # rand_b: 62 bits
    return f"{value:032x}"
