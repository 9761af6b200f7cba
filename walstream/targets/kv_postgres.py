"""The kv target on PostgreSQL: the same last-write-wins upsert as on SQLite (targets.kv).

Every statement goes through the extended protocol (prepared, one statement, parameters bound):
asyncpg's ``execute`` without arguments would use the simple-query protocol, which runs whatever
statements a text holds. The table name is checked and quoted first (targets.kv.quote_table).

Connection trouble, timeouts and serialization or deadlock conflicts are transient; so is a
table another session is creating at the same moment (``CREATE TABLE IF NOT EXISTS`` is not
race-safe: the loser gets a unique violation on ``pg_type``; it exists once that is raised) and
one dropped under us (created again on the retry). Anything else PostgreSQL refuses (a
constraint, a mismatched table) is permanent for that record.

``deliver_many`` (a run of writes in one transaction, in their order) first takes a
transaction-scoped advisory lock per row it writes, in sorted order: batches touching the same
keys in different orders would otherwise deadlock (PostgreSQL finds it after
``deadlock_timeout``, 1 s, and fails one of them).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import asyncpg

from walstream.clock import Clock, SystemClock
from walstream.core.lww import Version
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.records import Envelope
from walstream.targets.kv import kv_statements, plain_table, upsert_params

__all__ = ["PostgresKvTarget"]

_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"})
#: What a CREATE TABLE IF NOT EXISTS racing another one for the same table may raise: the table
#: (or its row type) was created by the other session, which has committed.
_CREATED_MEANWHILE = (
    asyncpg.UniqueViolationError,  # 23505 on pg_type's name index
    asyncpg.DuplicateTableError,  # 42P07
    asyncpg.DuplicateObjectError,  # 42710: type "..." already exists
)
_UNDEFINED_TABLE = "42P01"
#: Transaction-scoped advisory locks, taken in the array's order (a function scan of unnest
#: yields its elements in order).
_LOCK_KEYS = "SELECT count(pg_advisory_xact_lock(id)) FROM unnest($1::bigint[]) AS id"


def _lock_ids(writes: Sequence[tuple[str, tuple[Any, ...]]]) -> list[int]:
    """The advisory lock ids of the (table, key) rows a batch writes, sorted: a signed 64-bit
    digest of each (a collision only makes two batches wait for each other)."""
    ids = set()
    for table, params in writes:
        digest = hashlib.blake2b(f"{table}\0{params[0]}".encode(), digest_size=8).digest()
        ids.add(int.from_bytes(digest, "big", signed=True))
    return sorted(ids)


class PostgresKvTarget:
    """kv target on a PostgreSQL database (a pool of connections)."""

    def __init__(
        self,
        dsn: str,
        *,
        timeout_s: float = 10.0,
        max_size: int = 8,
        clock: Clock | None = None,
    ) -> None:
        self.dsn = dsn
        self._timeout_s = timeout_s
        self._max_size = max_size
        self._clock = clock or SystemClock()
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()
        #: Tables known to exist: only once a CREATE ran or found one.
        self._tables: dict[str, tuple[str, str, str]] = {}

    async def _connection_pool(self) -> Any:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn, min_size=1, max_size=self._max_size, timeout=self._timeout_s
                )
            return self._pool

    async def _statements(self, conn: Any, table: str) -> tuple[str, str, str]:
        statements = self._tables.get(table)
        if statements is None:
            statements = kv_statements(table, "postgresql")
            try:
                await conn.fetch(statements[0])  # prepared: one statement, extended protocol
            except _CREATED_MEANWHILE:
                # another session created it at the same moment and has committed: the same
                # CREATE ... IF NOT EXISTS now finds it (anything else is raised as usual)
                await conn.fetch(statements[0])
            self._tables[table] = statements
        return statements

    async def deliver(self, envelope: Envelope) -> None:
        """Apply a put or delete with last-write-wins; a stale or duplicate write is a no-op."""
        table = plain_table(envelope.target.get("table"))  # refused before anything runs
        params = upsert_params(envelope, self._clock.now_ms())
        try:
            async with asyncio.timeout(self._timeout_s):
                pool = await self._connection_pool()
                async with pool.acquire() as conn:
                    upsert = (await self._statements(conn, table))[1]
                    await conn.execute(upsert, *params)
        except Exception as exc:
            classified = self._classified(table, exc)
            if classified is exc:
                raise
            raise classified from exc

    async def deliver_many(self, envelopes: Sequence[Envelope]) -> None:
        """Apply puts and deletes in order, in one database transaction: all of them or none
        (each with last-write-wins, as ``deliver``). Every record is checked before any SQL runs.

        Raises:
            TargetRejectedError, TargetUnavailableError: as ``deliver``; nothing was applied.
        """
        now_ms = self._clock.now_ms()
        writes = [
            (plain_table(env.target.get("table")), upsert_params(env, now_ms)) for env in envelopes
        ]
        if not writes:
            return
        tables = ", ".join(sorted({t for t, _ in writes}))
        try:
            async with asyncio.timeout(self._timeout_s):
                pool = await self._connection_pool()
                async with pool.acquire() as conn:
                    # created before the transaction: a rollback must not undo a table noted
                    upserts = {t: (await self._statements(conn, t))[1] for t, _ in writes}
                    async with conn.transaction():
                        # the rows' locks in one order for every batch: two batches writing
                        # the same keys in other orders wait for each other, never deadlock
                        await conn.fetchval(_LOCK_KEYS, _lock_ids(writes))
                        for table, params in writes:
                            await conn.execute(upserts[table], *params)
        except Exception as exc:
            classified = self._classified(tables, exc)
            if classified is exc:
                raise
            raise classified from exc

    def _classified(self, table: str, exc: Exception) -> Exception:
        """What a failed write raises: transient (retry) or permanent (DLQ); anything not a
        database or connection error as it is."""
        if isinstance(exc, TimeoutError):
            return TargetUnavailableError(f"kv {table}: timed out", error_class="timeout")
        if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)):
            # InternalClientError ("cannot switch to state …"): asyncpg met a connection the
            # server had just closed mid-protocol; a fresh connection on the retry is the cure
            return TargetUnavailableError(f"kv {table}: {exc}", error_class="connection")
        if isinstance(exc, asyncpg.PostgresError):
            state = getattr(exc, "sqlstate", "") or ""
            if state == _UNDEFINED_TABLE:  # dropped under us: created again on the retry
                self._tables.clear()
            if state in _TRANSIENT_SQLSTATES or state.startswith("08") or state == _UNDEFINED_TABLE:
                return TargetUnavailableError(f"kv {table}: {exc}", error_class=f"pg_{state}")
            return TargetRejectedError(f"kv {table}: {exc}", error_class=f"pg_{state}")
        return exc

    async def read(self, table: str, key: str) -> tuple[bytes | None, bool, Version] | None:
        """The stored (value, deleted, version) of a key, or None (for tools and tests)."""
        pool = await self._connection_pool()
        async with pool.acquire() as conn:
            row = await conn.fetchrow((await self._statements(conn, table))[2], key)
        if row is None:
            return None
        return row[0], bool(row[1]), Version(row[2], row[3])

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
