"""Issue 17 review: last-write-wins decisions of core.cache_version.fold that leave regions
holding different states for the same operations (pure: each region's key is folded batch by
batch, its write read back as the next batch's stored state)."""

from __future__ import annotations

from walstream.core.cache_version import CacheOp, OpKind, decode, fold
from walstream.core.lww import Version

TOMB = 3_600


def _region(ops_in_arrival_order: list[CacheOp]) -> tuple[bytes | None, int]:
    """What a region ends with (its item's bytes and TTL) when each operation arrives in a batch
    of its own, in this order."""
    raw: bytes | None = None
    ttl = 0
    for op in ops_in_arrival_order:
        result = fold(decode(raw) if raw is not None else None, [op], tombstone_ttl_s=TOMB)
        if result.write is not None:
            raw, ttl = result.write, result.ttl_s
    return raw, ttl


def test_two_touches_arriving_in_either_order_leave_the_newer_touchs_ttl() -> None:
    value = CacheOp(kind=OpKind.SET, key=b"k", version=Version(1_000, "s"), value=b"v", ttl_s=60)
    older = CacheOp(kind=OpKind.TOUCH, key=b"k", version=Version(2_000, "a"), ttl_s=30)
    newer = CacheOp(kind=OpKind.TOUCH, key=b"k", version=Version(3_000, "b"), ttl_s=0)
    # region a made the older touch, region b the newer; the log holds the newer first, so
    # region a applies its own, then b's; b applies its own, then a's; c the log's order
    in_a = _region([value, older, newer])
    in_b = _region([value, newer, older])
    in_c = _region([value, newer, older])
    assert in_a == in_b == in_c
    assert in_a[1] == 0  # the newer touch: no expiry
