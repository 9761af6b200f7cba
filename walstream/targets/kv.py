"""The kv target: a database table with last-write-wins upserts (SQLite, embedded).

One atomic statement per write decides and applies, so concurrent deliveries cannot interleave a
read and a write: the row changes only when the incoming (original_write_time, idempotency_token)
is greater than the stored one (walstream.core.lww is the specification; a test holds the SQL to
it). A duplicate delivery (same token) changes nothing. A delete keeps a tombstone with its
version, so a late put older than the delete cannot resurrect the row. The statement is plain
SQL with row-value comparison, which PostgreSQL runs as well.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

from walstream.core.lww import Version
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.records import Envelope

__all__ = ["SqliteKvTarget"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS "{table}" (
    key TEXT PRIMARY KEY,
    value BLOB,
    deleted INTEGER NOT NULL DEFAULT 0,
    original_write_time_ms INTEGER NOT NULL,
    idempotency_token TEXT NOT NULL
)
"""

_UPSERT = """
INSERT INTO "{table}" (key, value, deleted, original_write_time_ms, idempotency_token)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    value = excluded.value,
    deleted = excluded.deleted,
    original_write_time_ms = excluded.original_write_time_ms,
    idempotency_token = excluded.idempotency_token
WHERE (excluded.original_write_time_ms, excluded.idempotency_token)
    > ("{table}".original_write_time_ms, "{table}".idempotency_token)
"""


class SqliteKvTarget:
    """kv target on one SQLite database file. Table names come validated from the target spec."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self._conn = sqlite3.connect(
            path, timeout=busy_timeout_s, check_same_thread=False, isolation_level=None
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()  # one connection, used from worker threads in turn
        self._tables: set[str] = set()

    def _run(self, table: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            if table not in self._tables:
                self._conn.execute(_SCHEMA.format(table=table))
                self._tables.add(table)
            self._conn.execute(_UPSERT.format(table=table), params)

    async def deliver(self, envelope: Envelope) -> None:
        """Apply a put or delete with last-write-wins; a stale or duplicate write is a no-op."""
        target = envelope.target
        table, key = target["table"], target["key"]
        deleted = target.get("op", "put") == "delete"
        value = None if deleted else envelope.payload_bytes()
        params = (
            key,
            value,
            int(deleted),
            envelope.lifecycle.original_write_time_ms,
            envelope.idempotency_token,
        )
        try:
            await asyncio.to_thread(self._run, table, params)
        except sqlite3.OperationalError as exc:  # locked, busy, disk I/O: may pass on retry
            raise TargetUnavailableError(f"kv {table}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # constraint, schema mismatch: retrying won't help
            raise TargetRejectedError(f"kv {table}: {exc}") from exc

    def read(self, table: str, key: str) -> tuple[bytes | None, bool, Version] | None:
        """The stored (value, deleted, version) of a key, or None (for tools and tests)."""
        with self._lock:
            row = self._conn.execute(
                f'SELECT value, deleted, original_write_time_ms, idempotency_token FROM "{table}" '  # noqa: S608 - validated identifier
                "WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return row[0], bool(row[1]), Version(row[2], row[3])

    async def close(self) -> None:
        with self._lock:
            self._conn.close()
