"""The per-key locks the deliver and retry agents share, and which one a record takes.

A key-ordered namespace's records are handled one at a time per ordering key, across both
agents (``KeyTurns``): the ordering gate's transitions of a key (``walstream.agents.ordering_gate``)
are never interleaved. ``KeyLocks`` decides a record's lock: its namespace and ordering key, as
the ordering table keys the head.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable

from walstream.agents.ordering import KeyOrder
from walstream.agents.outcomes import Source
from walstream.errors import NamespaceNotFoundError
from walstream.namespaces.config import Ordering
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope

__all__ = ["KeyLocks", "KeyTurns"]


class KeyLocks:
    """The lock each record takes while handled, over one ``KeyTurns``."""

    def __init__(self, registry: NamespaceRegistry, order: KeyOrder) -> None:
        self.registry = registry
        self.order = order
        self.turns = KeyTurns()

    def locked(
        self, key: bytes | None, source: Source, env: Envelope | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """The lock a record of ``source`` takes while handled: its namespace and ordering key
        (a key-ordered namespace's, on its log and retry topics and in markers), none when it is
        not ordered. The ordering key is its envelope's (``env``: the gate orders by it, whatever
        record key a record produced to the log directly carries), else its record key (a
        marker, bytes that are not a record, an envelope without a key)."""
        return self.turns.hold(self._lock_key(key, source, env))

    def _lock_key(
        self, key: bytes | None, source: Source, env: Envelope | None
    ) -> tuple[str, str] | None:
        """(namespace, ordering key) as the table keys the head: the same lock for record keys
        whose bytes differ but name the same ordering key."""
        if env is not None and env.key is not None:
            order_key = env.key
        elif key is not None:
            order_key = key.decode(errors="replace")
        else:
            return None
        name = self.registry.namespace_of(source.topic)
        if name is None:
            return None
        try:
            ns = self.registry.get(name)
        except NamespaceNotFoundError:
            return None
        if ns.ordering is Ordering.KEY or self.order.blocked(ns.name, order_key):
            return (ns.name, order_key)
        return None


class KeyTurns:
    """One handler at a time per ordering key, across the deliver and retry agents.

    Each agent's dispatcher runs a key's records one at a time, but the two agents run side by
    side: a key's log record and a copy on its retry topic (a retry, a release marker, a stale
    copy a crash sent again) could interleave at every await. The ordering decisions assume a
    key's transitions do not: a record admitted with its key free, failing while a stale copy
    of an earlier record had meanwhile failed and become the head, was not made the head
    itself, and the key's next records went ahead of its retry (chaos test, seed 13013). A lock
    per key, held while one of its records is handled; the entry goes once nobody holds or
    waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable | None) -> AsyncIterator[None]:
        if key is None:
            yield
            return
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
