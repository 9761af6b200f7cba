"""A region's memcached servers as one last-write-wins cache: get, and apply versioned operations.

Keys are spread over the servers by rendezvous hashing (:mod:`walstream.core.cache_ring`).
``apply_many`` takes a batch of operations in log order: each server gets its keys' reads in
one pipelined write (``mg <key> v c``), each key's operations are folded over what it holds
(:func:`walstream.core.cache_version.fold`), and the changed keys are written back in one
pipelined write, each with a CAS check (``ms <key> <n> T<exptime> C<cas>``), or in add mode
(``ME``) when the key held nothing. A write that lost a race (``EX``, ``NS``, ``NF``: another
writer changed the key between our read and our write) is folded again over a fresh read, up to
``max_rounds`` times; the highest version therefore ends on the key whatever the interleaving.
Each key's operations stay in their order; keys of a batch are in flight together; servers
are worked on concurrently.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from walstream.core.cache_ring import server_for
from walstream.core.cache_version import (
    CacheOp,
    Kind,
    OpOutcome,
    PoisonReason,
    Stored,
    StoredItem,
    check_key,
    check_op,
    decode,
    expired,
    fold,
)
from walstream.errors import TargetUnavailableError
from walstream.replication.memcached import MetaConnection, MetaReply

__all__ = ["ApplyOutcome", "ApplyResult", "RegionCache"]


class ApplyOutcome(enum.Enum):
    """What applying one operation came to."""

    APPLIED = "applied"
    STALE = "stale"  # older than what the key holds: skipped
    DUPLICATE = "duplicate"  # its idempotency token is what the key holds: skipped
    ABSENT = "absent"  # a touch of nothing (or of a tombstone): nothing to touch
    POISON = "poison"  # can never be applied: dead-letter it (``reason``)
    TRANSIENT = "transient"  # not applied now (outage, timeout, contention): retry it


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of one operation; ``reason`` says why for POISON and TRANSIENT."""

    outcome: ApplyOutcome
    reason: str = ""

    @property
    def poison(self) -> PoisonReason | None:
        """The typed reason of a POISON outcome."""
        if self.outcome is not ApplyOutcome.POISON:
            return None
        return PoisonReason(self.reason)


_FROM_FOLD = {
    OpOutcome.APPLIED: ApplyResult(ApplyOutcome.APPLIED),
    OpOutcome.STALE: ApplyResult(ApplyOutcome.STALE),
    OpOutcome.DUPLICATE: ApplyResult(ApplyOutcome.DUPLICATE),
    OpOutcome.ABSENT: ApplyResult(ApplyOutcome.ABSENT),
}
#: A write that lost to another writer: read again and fold again.
_LOST_RACE = frozenset({b"EX", b"NS", b"NF"})
_TOO_LARGE = b"object too large"
_ERRORS = frozenset({b"CLIENT_ERROR", b"SERVER_ERROR", b"ERROR"})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RegionCache:
    """One region's memcached servers (``host:port`` each), read and written with LWW.

    Args:
        servers: the region's servers; a key's server is chosen by rendezvous hashing.
        tombstone_ttl_s: how long a delete's tombstone lives; longer than the longest
            replication lag allowed, or a set older than the delete, arriving later than that,
            brings the value back.
        timeout_s: deadline of one pipelined exchange with a server.
        max_rounds: reads-and-writes of a key before a lost CAS race counts as TRANSIENT.
        max_batch: commands in one pipelined exchange with a server.
        clock: now, in ms since the epoch (whether a value a get reads has expired).
    """

    def __init__(
        self,
        servers: Sequence[str],
        *,
        tombstone_ttl_s: int,
        timeout_s: float = 2.0,
        max_rounds: int = 16,
        max_batch: int = 1_000,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        if not servers:
            raise ValueError("a region needs at least one memcached server")
        if tombstone_ttl_s <= 0:
            raise ValueError("tombstone_ttl_s must be > 0 (0 would keep tombstones for ever)")
        self.servers = tuple(servers)
        self.tombstone_ttl_s = tombstone_ttl_s
        self.max_rounds = max_rounds
        self.max_batch = max_batch
        self._clock = clock
        self._connections = {s: MetaConnection(s, timeout_s=timeout_s) for s in self.servers}

    async def __aenter__(self) -> RegionCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every server connection."""
        for connection in self._connections.values():
            await connection.close()

    def server_for(self, key: bytes) -> str:
        """The server (``host:port``) holding ``key``."""
        return server_for(key, self.servers)

    async def get(self, key: bytes) -> bytes | None:
        """The exact bytes last set on ``key``; None for a miss, a tombstone or a value past
        its expiry (by this region's clock: an expired value stays in memcached as a versioned
        marker for the tombstone TTL). Bytes walstream did not write come back as they are.

        Raises:
            ValueError: a key memcached would refuse.
            TargetUnavailableError: the key's server did not answer.
        """
        problem = check_key(key)
        if problem is not None:
            raise ValueError(f"bad memcached key: {problem.value}")
        [reply] = await self._connections[self.server_for(key)].execute([b"mg %s v\r\n" % key])
        stored = _stored(reply)
        if isinstance(stored, StoredItem):
            live = stored.kind is Kind.VALUE and not expired(stored, self._clock())
            return stored.value if live else None
        return stored.raw if stored is not None else None

    async def check(self, op: CacheOp) -> PoisonReason | None:
        """Why ``op`` can never be stored on its key's server (:func:`check_op` against that
        server's item size, as last read: no round trip once known, none waiting on a server
        that is away; read again when ``op`` is too large by it), or None: also when the
        server could not be asked (applying the operation will say why).
        """
        problem = check_key(op.key)
        if problem is not None:
            return problem
        connection = self._connections[self.server_for(op.key)]
        item_size_max = connection.last_item_size_max
        if item_size_max is not None and check_op(op, item_size_max=item_size_max) is None:
            return None
        try:  # not known yet, or too large by a size read earlier: the server says now
            item_size_max = await connection.item_size_max(fresh=item_size_max is not None)
        except TargetUnavailableError:
            return None
        return check_op(op, item_size_max=item_size_max)

    async def apply(self, op: CacheOp) -> ApplyResult:
        """Apply one operation with LWW (see :meth:`apply_many`)."""
        [result] = await self.apply_many([op])
        return result

    async def apply_many(self, ops: Sequence[CacheOp]) -> list[ApplyResult]:
        """Apply a batch of operations, each key's in the given order, with LWW.

        Never raises for an outage: the operations of a server that could not be reached, or
        of a key whose CAS race was lost ``max_rounds`` times, are TRANSIENT.

        Returns:
            One result per operation, in the order of ``ops``.
        """
        results: list[ApplyResult | None] = [None] * len(ops)
        by_server: dict[str, dict[bytes, list[int]]] = {}
        for index, op in enumerate(ops):
            problem = check_key(op.key)
            if problem is not None:
                results[index] = ApplyResult(ApplyOutcome.POISON, problem.value)
                continue
            keys = by_server.setdefault(self.server_for(op.key), {})
            keys.setdefault(op.key, []).append(index)
        await asyncio.gather(
            *(self._apply_on(server, keys, ops, results) for server, keys in by_server.items())
        )
        return [r if r is not None else ApplyResult(ApplyOutcome.TRANSIENT) for r in results]

    async def _apply_on(
        self,
        server: str,
        keys: dict[bytes, list[int]],
        ops: Sequence[CacheOp],
        results: list[ApplyResult | None],
    ) -> None:
        connection = self._connections[server]
        try:
            item_size_max = await connection.item_size_max()
            if any(check_op(ops[i], item_size_max=item_size_max) for i in _indexes(keys)):
                # poison by a size read earlier: ask the server again before a dead letter (a
                # memcached restarted with a larger -I holds what the old one refused)
                item_size_max = await connection.item_size_max(fresh=True)
            pending: dict[bytes, list[int]] = {}
            for key, indexes in keys.items():
                for index in indexes:
                    problem = check_op(ops[index], item_size_max=item_size_max)
                    if problem is not None:
                        results[index] = ApplyResult(ApplyOutcome.POISON, problem.value)
                pending[key] = [i for i in indexes if results[i] is None]
            for _ in range(self.max_rounds):
                pending = {key: indexes for key, indexes in pending.items() if indexes}
                if not pending:
                    return
                keys_now = list(pending)
                for start in range(0, len(keys_now), self.max_batch):
                    chunk = {key: pending[key] for key in keys_now[start : start + self.max_batch]}
                    settled = await self._round(connection, chunk, ops, results)
                    for key in settled:
                        del pending[key]
            for indexes in pending.values():
                for index in indexes:
                    results[index] = ApplyResult(
                        ApplyOutcome.TRANSIENT, f"lost the CAS race {self.max_rounds} times"
                    )
        except TargetUnavailableError as exc:
            for indexes in keys.values():
                for index in indexes:
                    if results[index] is None:
                        results[index] = ApplyResult(ApplyOutcome.TRANSIENT, str(exc))

    async def _round(
        self,
        connection: MetaConnection,
        chunk: dict[bytes, list[int]],
        ops: Sequence[CacheOp],
        results: list[ApplyResult | None],
    ) -> list[bytes]:
        """Read the chunk's keys, fold, write the changed ones; return the keys settled."""
        keys = list(chunk)
        reads = await connection.execute([b"mg %s v c\r\n" % key for key in keys])
        settled: list[bytes] = []
        writes: list[bytes] = []
        written: list[tuple[bytes, tuple[OpOutcome, ...]]] = []
        for key, reply in zip(keys, reads, strict=True):
            indexes = chunk[key]
            if reply.status in _ERRORS:
                _settle(results, indexes, _error_result(reply))
                settled.append(key)
                continue
            result = fold(
                _stored(reply), [ops[i] for i in indexes], tombstone_ttl_s=self.tombstone_ttl_s
            )
            if result.write is None:
                _settle(results, indexes, *(_FROM_FOLD[o] for o in result.outcomes))
                settled.append(key)
                continue
            cas = reply.flag(b"c")
            mode = b"C%s" % cas if cas is not None else b"ME"
            head = b"ms %s %d T%d %s\r\n" % (key, len(result.write), result.ttl_s, mode)
            writes.append(b"".join((head, result.write, b"\r\n")))
            written.append((key, result.outcomes))
        replies = await connection.execute(writes)
        for (key, outcomes), reply in zip(written, replies, strict=True):
            if reply.status in _LOST_RACE:
                continue  # another writer was first: read and fold again next round
            indexes = chunk[key]
            if reply.status == b"HD":
                _settle(results, indexes, *(_FROM_FOLD[o] for o in outcomes))
            else:
                _settle(results, indexes, _error_result(reply))
            settled.append(key)
        return settled


def _stored(reply: MetaReply) -> Stored:
    if reply.status == b"EN":
        return None
    if reply.status != b"VA" or reply.value is None:
        raise TargetUnavailableError(f"memcached answered {reply.status!r} to a read")
    return decode(reply.value)


def _error_result(reply: MetaReply) -> ApplyResult:
    message = b" ".join((reply.status, *reply.flags))
    if _TOO_LARGE in message:
        return ApplyResult(ApplyOutcome.POISON, PoisonReason.VALUE_TOO_LARGE.value)
    return ApplyResult(ApplyOutcome.TRANSIENT, message.decode(errors="replace"))


def _settle(results: list[ApplyResult | None], indexes: list[int], *outcomes: ApplyResult) -> None:
    """Give each operation its result (one result given for all applies to all)."""
    for n, index in enumerate(indexes):
        results[index] = outcomes[n] if len(outcomes) > 1 else outcomes[0]


def _indexes(keys: dict[bytes, list[int]]) -> Iterator[int]:
    for indexes in keys.values():
        yield from indexes
