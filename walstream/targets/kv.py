"""The kv target: a database table with last-write-wins upserts (SQLite, embedded).

One atomic statement per write decides and applies, so concurrent deliveries cannot interleave a
read and a write: the row changes only when the incoming (original_write_time, idempotency_token)
is greater than the stored one (walstream.core.lww is the specification; a test holds the SQL to
it). A duplicate delivery (same token) changes nothing. A delete keeps a tombstone with its
version, so a late put older than the delete cannot resurrect the row. The statement is plain
SQL with row-value comparison, which PostgreSQL runs as well (walstream.targets.kv_postgres).
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

__all__ = ["SqliteKvTarget", "kv_statements", "upsert_params"]


def kv_statements(table: str, dialect: str) -> tuple[str, str, str]:
    """(create table, last-write-wins upsert, read) for ``dialect`` "sqlite" or "postgresql".

    The statements are the same but for types and placeholders. On PostgreSQL the token column
    sorts bytewise (COLLATE "C"), as Python and SQLite compare strings: a locale collation would
    break ties differently from walstream.core.lww.
    """
    pg = dialect == "postgresql"
    blob, ms, token = ("BYTEA", "BIGINT", 'TEXT COLLATE "C"') if pg else ("BLOB", "INTEGER", "TEXT")
    params = ("$1", "$2", "$3", "$4", "$5") if pg else ("?",) * 5
    schema = f"""
CREATE TABLE IF NOT EXISTS "{table}" (
    key TEXT PRIMARY KEY,
    value {blob},
    deleted INTEGER NOT NULL DEFAULT 0,
    original_write_time_ms {ms} NOT NULL,
    idempotency_token {token} NOT NULL
)"""
    upsert = f"""
INSERT INTO "{table}" (key, value, deleted, original_write_time_ms, idempotency_token)
VALUES ({", ".join(params)})
ON CONFLICT (key) DO UPDATE SET
    value = excluded.value,
    deleted = excluded.deleted,
    original_write_time_ms = excluded.original_write_time_ms,
    idempotency_token = excluded.idempotency_token
WHERE (excluded.original_write_time_ms, excluded.idempotency_token)
    > ("{table}".original_write_time_ms, "{table}".idempotency_token)"""  # noqa: S608 - validated identifier
    read = (
        f'SELECT value, deleted, original_write_time_ms, idempotency_token FROM "{table}" '  # noqa: S608 - validated identifier
        f"WHERE key = {params[0]}"
    )
    return schema, upsert, read


def upsert_params(envelope: Envelope) -> tuple[str, bytes | None, int, int, str]:
    """The upsert's parameters for a record: a put, or a delete leaving a tombstone."""
    target = envelope.target
    deleted = target.get("op", "put") == "delete"
    return (
        target["key"],
        None if deleted else envelope.payload_bytes(),
        int(deleted),
        envelope.lifecycle.original_write_time_ms,
        envelope.idempotency_token,
    )


class SqliteKvTarget:
    """kv target on one SQLite database file. Table names come validated from the target spec."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self._conn = sqlite3.connect(
            path, timeout=busy_timeout_s, check_same_thread=False, isolation_level=None
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()  # one connection, used from worker threads in turn
        self._tables: dict[str, tuple[str, str, str]] = {}

    def _statements(self, table: str) -> tuple[str, str, str]:
        statements = self._tables.get(table)
        if statements is None:
            statements = self._tables[table] = kv_statements(table, "sqlite")
            self._conn.execute(statements[0])
        return statements

    def _run(self, table: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            self._conn.execute(self._statements(table)[1], params)

    async def deliver(self, envelope: Envelope) -> None:
        """Apply a put or delete with last-write-wins; a stale or duplicate write is a no-op."""
        table = envelope.target["table"]
        try:
            await asyncio.to_thread(self._run, table, upsert_params(envelope))
        except sqlite3.OperationalError as exc:  # locked, busy, disk I/O: may pass on retry
            raise TargetUnavailableError(f"kv {table}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # constraint, schema mismatch: retrying won't help
            raise TargetRejectedError(f"kv {table}: {exc}") from exc

    def read(self, table: str, key: str) -> tuple[bytes | None, bool, Version] | None:
        """The stored (value, deleted, version) of a key, or None (for tools and tests)."""
        with self._lock:
            row = self._conn.execute(self._statements(table)[2], (key,)).fetchone()
        if row is None:
            return None
        return row[0], bool(row[1]), Version(row[2], row[3])

    async def close(self) -> None:
        with self._lock:
            self._conn.close()
