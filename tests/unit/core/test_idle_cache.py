"""IdleCache: what is kept per endpoint goes when idle past its TTL, or least recently used
first beyond the maximum count."""

from __future__ import annotations

import pytest

from walstream.core.idle_cache import IdleCache


def test_idle_items_expire_after_the_ttl_and_used_ones_stay():
    cache: IdleCache[str, int] = IdleCache(ttl_ms=1_000, max_size=10)
    cache.put("a", 1, 0)
    cache.put("b", 2, 0)
    assert cache.evict(1_000) == []  # exactly the TTL: still kept
    assert cache.get("a", 900) == 1  # a used: its idle time starts again
    assert cache.evict(1_001) == [("b", 2)]
    assert cache.next_expiry_ms() == 1_900
    assert cache.evict(1_900) == []
    assert cache.evict(1_901) == [("a", 1)]
    assert len(cache) == 0
    assert cache.next_expiry_ms() is None


def test_beyond_the_maximum_the_least_recently_used_go_first():
    cache: IdleCache[str, int] = IdleCache(ttl_ms=60_000, max_size=3)
    for i, key in enumerate("abcd"):
        cache.put(key, i, i)
    cache.get("a", 10)  # a is now the most recently used
    assert cache.evict(11) == [("b", 1)]
    cache.put("e", 4, 12)
    assert cache.evict(12) == [("c", 2)]
    assert list(cache) == ["d", "a", "e"]


def test_pop_and_bad_limits():
    cache: IdleCache[str, int] = IdleCache(ttl_ms=1, max_size=1)
    cache.put("a", 1, 0)
    assert cache.pop("a") == 1
    assert cache.pop("a") is None
    with pytest.raises(ValueError, match="must be > 0"):
        IdleCache(ttl_ms=0, max_size=1)
