"""A bounded map of things kept per endpoint: least recently used first out, idle ones expire.

Records name their endpoints (http origins, Kafka clusters), so what a worker keeps per endpoint
(a client, a producer, a breaker) must be bounded by time and by count, whatever records say.
Pure: the caller passes the time and closes what comes out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["IdleCache"]

_K = TypeVar("_K")
_V = TypeVar("_V")


class IdleCache(Generic[_K, _V]):
    """Values by key with their last use; ``evict`` returns those idle over ``ttl_ms`` and the
    least recently used beyond ``max_size``."""

    def __init__(self, *, ttl_ms: int, max_size: int) -> None:
        if ttl_ms <= 0 or max_size <= 0:
            raise ValueError("ttl_ms and max_size must be > 0")
        self.ttl_ms = ttl_ms
        self.max_size = max_size
        self._items: OrderedDict[_K, tuple[_V, int]] = OrderedDict()

    def get(self, key: _K, now_ms: int) -> _V | None:
        """The value for ``key``, marked used now (None: not kept)."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items[key] = (item[0], now_ms)
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: _K, value: _V, now_ms: int) -> None:
        self._items[key] = (value, now_ms)
        self._items.move_to_end(key)

    def pop(self, key: _K) -> _V | None:
        item = self._items.pop(key, None)
        return None if item is None else item[0]

    def evict(self, now_ms: int) -> list[tuple[_K, _V]]:
        """Remove and return what has been idle longer than the TTL, then the least recently
        used while over ``max_size`` (oldest first)."""
        out: list[tuple[_K, _V]] = []
        items = self._items
        while items:
            key, (value, used) = next(iter(items.items()))
            if now_ms - used <= self.ttl_ms and len(items) <= self.max_size:
                break
            del items[key]
            out.append((key, value))
        return out

    def next_expiry_ms(self) -> int | None:
        """When the least recently used item expires (None: empty)."""
        for _, used in self._items.values():
            return used + self.ttl_ms
        return None

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[_K]:
        return iter(self._items)

    def items(self) -> Iterator[tuple[_K, _V]]:
        return ((k, v) for k, (v, _) in self._items.items())
