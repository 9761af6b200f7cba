"""The kv target: a database table with last-write-wins upserts (SQLite, embedded).

One atomic statement per write decides and applies, so concurrent deliveries cannot interleave a
read and a write: the row changes only when the incoming (original_write_time, idempotency_token)
is greater than the stored one and its token is not the stored one (walstream.core.lww is the
specification; a test holds the SQL to it). A duplicate delivery (same token, whatever its write
time) changes nothing. A delete keeps a tombstone with its version, so a late put older than the
delete cannot resurrect the row. The statement is plain SQL with row-value comparison, which
PostgreSQL runs as well (walstream.targets.kv_postgres).

A record may come from a topic rather than the API, so everything in it is checked again here
before any SQL runs: the table must be a plain identifier (walstream.core.target_policy
.IDENTIFIER), which is then quoted; the key and the payload are bound parameters, never text in
a statement; the original write time must be within the API's bounds (a far-future one would win
every later contest for the key). Statements are fixed templates: one statement each, never a
script.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from walstream.clock import Clock, SystemClock
from walstream.core.lww import Version
from walstream.core.target_policy import IDENTIFIER
from walstream.core.targets import kv_key_problem
from walstream.core.validate import original_write_time_problem
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.records import Envelope

__all__ = ["SqliteKvTarget", "kv_statements", "plain_table", "quote_table", "upsert_params"]

_MAX_KEY_CHARS = 1024


def plain_table(table: Any) -> str:
    """``table`` when it is a plain identifier (walstream.core.target_policy.IDENTIFIER).

    Raises:
        TargetRejectedError: ``bad_table``, for anything else (nothing ran).
    """
    if not isinstance(table, str) or not IDENTIFIER.fullmatch(table):
        raise TargetRejectedError(
            f"kv table {table!r} is not a plain identifier ({IDENTIFIER.pattern}): nothing ran",
            error_class="bad_table",
        )
    return table


def quote_table(table: Any) -> str:
    """``table`` as a quoted SQL identifier.

    Raises:
        TargetRejectedError: ``bad_table`` (plain_table).
    """
    # the pattern allows no quote; doubling one anyway keeps the quoting right on its own
    return '"' + plain_table(table).replace('"', '""') + '"'


def kv_statements(table: str, dialect: str) -> tuple[str, str, str]:
    """(create table, last-write-wins upsert, read) for ``dialect`` "sqlite" or "postgresql".

    The statements are the same but for types and placeholders. On PostgreSQL the token column
    sorts bytewise (COLLATE "C"), as Python and SQLite compare strings: a locale collation would
    break ties differently from walstream.core.lww.

    Raises:
        TargetRejectedError: ``bad_table`` (quote_table).
    """
    name = quote_table(table)
    pg = dialect == "postgresql"
    blob, ms, token = ("BYTEA", "BIGINT", 'TEXT COLLATE "C"') if pg else ("BLOB", "INTEGER", "TEXT")
    params = ("$1", "$2", "$3", "$4", "$5") if pg else ("?",) * 5
    schema = f"""
CREATE TABLE IF NOT EXISTS {name} (
    key TEXT PRIMARY KEY,
    value {blob},
    deleted INTEGER NOT NULL DEFAULT 0,
    original_write_time_ms {ms} NOT NULL,
    idempotency_token {token} NOT NULL
)"""
    upsert = f"""
INSERT INTO {name} (key, value, deleted, original_write_time_ms, idempotency_token)
VALUES ({", ".join(params)})
ON CONFLICT (key) DO UPDATE SET
    value = excluded.value,
    deleted = excluded.deleted,
    original_write_time_ms = excluded.original_write_time_ms,
    idempotency_token = excluded.idempotency_token
WHERE (excluded.original_write_time_ms, excluded.idempotency_token)
    > ({name}.original_write_time_ms, {name}.idempotency_token)
    AND excluded.idempotency_token <> {name}.idempotency_token"""  # noqa: S608 - quoted identifier
    read = (
        f"SELECT value, deleted, original_write_time_ms, idempotency_token FROM {name} "  # noqa: S608 - quoted identifier
        f"WHERE key = {params[0]}"
    )
    return schema, upsert, read


def upsert_params(envelope: Envelope, now_ms: int) -> tuple[str, bytes | None, int, int, str]:
    """The upsert's parameters for a record: a put, or a delete leaving a tombstone.

    Raises:
        TargetRejectedError: a key that is not a kv key (1..1024 characters, no NUL), an unknown
            op, or an original write time outside the API's bounds at ``now_ms`` (nothing ran).
    """
    target = envelope.target
    key = target.get("key")
    problem = kv_key_problem(key)
    if problem is not None or not isinstance(key, str):  # (a key not a string has a problem)
        raise TargetRejectedError(f"kv key {problem}", error_class="bad_key")
    op = target.get("op", "put")
    if op not in ("put", "delete"):
        raise TargetRejectedError(f"kv op {op!r} is not put or delete", error_class="bad_op")
    owt = envelope.lifecycle.original_write_time_ms
    problem = original_write_time_problem(owt, now_ms)
    if problem is not None:
        raise TargetRejectedError(
            f"original_write_time {owt!r} {problem}: refused, it would decide last-write-wins",
            error_class="bad_write_time",
        )
    token = envelope.idempotency_token
    if not isinstance(token, str) or not token:
        raise TargetRejectedError("idempotency_token must be a string", error_class="bad_token")
    deleted = op == "delete"
    return key, None if deleted else envelope.payload_bytes(), int(deleted), owt, token


class SqliteKvTarget:
    """kv target on one SQLite database file."""

    def __init__(
        self, path: Path, *, busy_timeout_s: float = 5.0, clock: Clock | None = None
    ) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()  # one connection, used from worker threads in turn
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        #: Tables created (or found) on this connection: only after the CREATE succeeded.
        self._tables: dict[str, tuple[str, str, str]] = {}
        with self._lock:
            self._connection()

    def _connection(self) -> sqlite3.Connection:
        """The open connection, opened again after it was lost (under ``_lock``)."""
        if self._closed:
            raise TargetUnavailableError("kv: the target is closed", error_class="closed")
        if self._conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                check_same_thread=False,
                isolation_level=None,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            self._conn, self._tables = conn, {}
        return self._conn

    def _statements(self, conn: sqlite3.Connection, table: str) -> tuple[str, str, str]:
        statements = self._tables.get(table)
        if statements is None:
            statements = kv_statements(table, "sqlite")
            conn.execute(statements[0])
            self._tables[table] = statements  # cached once it ran: a failed CREATE is tried again
        return statements

    def _run(self, table: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute(self._statements(conn, table)[1], params)
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # dropped under us: create it again next time
                    self._tables.pop(table, None)
                raise
            except sqlite3.ProgrammingError:  # e.g. closed: open a new connection next time
                self._conn = None
                raise

    async def deliver(self, envelope: Envelope) -> None:
        """Apply a put or delete with last-write-wins; a stale or duplicate write is a no-op."""
        table = plain_table(envelope.target.get("table"))  # refused before anything runs
        params = upsert_params(envelope, self._clock.now_ms())
        try:
            await asyncio.to_thread(self._run, table, params)
        except sqlite3.DatabaseError as exc:
            raise _classified(table, exc) from exc

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
        try:
            await asyncio.to_thread(self._run_many, writes)
        except sqlite3.DatabaseError as exc:
            raise _classified(", ".join(sorted({t for t, _ in writes})), exc) from exc

    def _run_many(self, writes: list[tuple[str, tuple[Any, ...]]]) -> None:
        with self._lock:
            conn = self._connection()
            try:
                # created outside the transaction: a rollback must not undo a table noted created
                upserts = {t: self._statements(conn, t)[1] for t, _ in writes}
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for table, params in writes:
                        conn.execute(upserts[table], params)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # dropped under us: created again next time
                    self._tables.clear()
                raise
            except sqlite3.ProgrammingError:
                self._conn = None
                raise

    def read(self, table: str, key: str) -> tuple[bytes | None, bool, Version] | None:
        """The stored (value, deleted, version) of a key, or None (for tools and tests)."""
        with self._lock:
            conn = self._connection()
            row = conn.execute(self._statements(conn, table)[2], (key,)).fetchone()
        if row is None:
            return None
        return row[0], bool(row[1]), Version(row[2], row[3])

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()


def _classified(
    table: str, exc: sqlite3.DatabaseError
) -> TargetRejectedError | TargetUnavailableError:
    """What a SQLite error means for a write: transient (retry) or permanent (DLQ)."""
    if isinstance(exc, sqlite3.OperationalError):  # locked, busy, disk I/O: may pass on retry
        return TargetUnavailableError(f"kv {table}: {exc}")
    if isinstance(exc, sqlite3.ProgrammingError):  # a closed connection: reopened on retry
        return TargetUnavailableError(f"kv {table}: {exc}", error_class="connection")
    # constraint, schema mismatch: retrying won't help
    return TargetRejectedError(f"kv {table}: {exc}")
