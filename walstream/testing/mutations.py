"""Multi-partition mutations in tests (issue 18): the table's rows in memory, transactions written
with the core builders through a real producer, and the model of what the database must hold.

* ``MemoryRows`` — a ``Rows`` (``walstream.agents.mutation_rows.TableRows`` in the worker).
* ``MutationWriter`` — writes operations and markers as the API does (``chunks.op_chunks``,
  ``wire.encode_op_chunk``/``encode_marker``, keyed by the txn id) with a plain aiokafka producer
  (acks=all), in any order the test picks.
* ``SqliteDb`` / ``PgDb`` — the kv database as a test reads it: rows, an apply-order log and
  failures injected by triggers (``prepare``, ``fail``, ``heal``, ``applied``).
* ``random_transactions`` / ``model`` — transactions of puts and deletes over a few tables and
  keys, and the rows they leave: each transaction applied in seq order, transactions ordered by
  their versions (the marker's time, then the token), as last-write-wins decides.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from walstream.core.mutations import (
    Marker,
    Operation,
    encode_marker,
    encode_op_chunk,
    op_chunks,
    op_token,
)
from walstream.targets.kv import kv_statements
from walstream.topology import mutation_topics

__all__ = [
    "MemoryRows",
    "MutationWriter",
    "PgDb",
    "SqliteDb",
    "Txn",
    "model",
    "random_transactions",
]


class MemoryRows(dict[str, bytes]):
    """The mutation table's rows in a dict; ``writes`` counts puts, ``durable`` the acked ones."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, bytes | None, bool]] = []

    async def put(self, key: str, value: bytes | None, *, durable: bool = False) -> None:
        self.writes.append((key, value, durable))
        if value is None:
            self.pop(key, None)
        else:
            self[key] = value

    def items(self) -> Iterator[tuple[str, bytes]]:  # type: ignore[override]
        return iter(list(super().items()))


@dataclass
class Txn:
    """One transaction: its id, operations (seq = index) and marker time."""

    txn_id: str
    operations: list[Operation]
    at_ms: int
    digest: str | None = None


def random_transactions(
    rng: random.Random,
    count: int,
    *,
    tables: Sequence[str],
    keys: int,
    ops: tuple[int, int] = (2, 10),
    now_ms: int,
    prefix: str = "t",
) -> list[Txn]:
    """``count`` transactions of ``ops`` puts and deletes over ``tables`` x ``keys`` keys; marker
    times spread over the last minute (unique, so the model's order is the versions')."""
    times = rng.sample(range(now_ms - 60_000, now_ms), count)
    out = []
    for i in range(count):
        operations = []
        for seq in range(rng.randint(*ops)):
            table, key = rng.choice(tables), f"k{rng.randrange(keys)}"
            if rng.random() < 0.2:
                operations.append(Operation(op="delete", table=table, id=key, value=None))
            else:
                value = orjson.dumps({"txn": i, "seq": seq, "r": rng.random()})
                operations.append(Operation(op="put", table=table, id=key, value=value))
        out.append(Txn(f"{prefix}{i:05d}", operations, times[i]))
    return out


def model(namespace: str, txns: Iterable[Txn]) -> dict[tuple[str, str], bytes | None]:
    """(table, key) -> the value the database holds (None: deleted) after every transaction."""
    versions = []
    for txn in txns:
        for seq, op in enumerate(txn.operations):
            version = (txn.at_ms, op_token(namespace, txn.txn_id, seq))
            versions.append((version, op))
    rows: dict[tuple[str, str], bytes | None] = {}
    for _, op in sorted(versions, key=lambda v: v[0]):
        rows[(op.table, op.id)] = op.value
    return rows


class MutationWriter:
    """Writes a namespace's mutation records with a real producer (``async with``)."""

    def __init__(self, servers: str, namespace: str, *, chunk_bytes: int = 256 * 1024) -> None:
        self.namespace = namespace
        self.topics = mutation_topics(namespace)
        self.chunk_bytes = chunk_bytes
        self.producer = AIOKafkaProducer(
            bootstrap_servers=servers, acks="all", max_request_size=2_000_000, linger_ms=2
        )

    async def __aenter__(self) -> MutationWriter:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    def op_records(self, txn: Txn, seq: int) -> list[bytes]:
        """The values of operation ``seq``'s records, in chunk order."""
        chunks = op_chunks(self.namespace, txn.txn_id, seq, txn.operations[seq], self.chunk_bytes)
        return [encode_op_chunk(c) for c in chunks]

    def marker(
        self, txn: Txn, count: int | None = None, *, wake: int = 0, redrive: int = 0
    ) -> bytes:
        count = len(txn.operations) if count is None else count
        return encode_marker(
            Marker(self.namespace, txn.txn_id, count, txn.at_ms, txn.digest, wake, redrive)
        )

    async def send(self, topic: str, txn_id: str, values: Iterable[bytes]) -> None:
        """Send ``values`` keyed by ``txn_id`` and wait for every ack."""
        futures = [await self.producer.send(topic, v, key=txn_id.encode()) for v in values]
        for future in futures:
            await future

    async def send_many(self, records: Iterable[tuple[str, str, bytes]]) -> None:
        """Send (topic, txn id, value) records in this order, then wait for every ack."""
        futures = [
            await self.producer.send(topic, value, key=txn_id.encode())
            for topic, txn_id, value in records
        ]
        for future in futures:
            await future

    def interleaved(
        self, txns: Sequence[Txn], rng: random.Random, *, markers: bool = True
    ) -> list[tuple[str, str, bytes]]:
        """Every record of ``txns``: operations interleaved across transactions and out of order
        within each (a value's chunks in order), each marker somewhere among them."""
        pending = []
        for txn in txns:
            seqs = list(range(len(txn.operations)))
            rng.shuffle(seqs)
            items = [
                (self.topics.mutations, txn.txn_id, v)
                for s in seqs
                for v in self.op_records(txn, s)
            ]
            if markers:
                items.insert(
                    rng.randrange(len(items) + 1),
                    (self.topics.markers, txn.txn_id, self.marker(txn)),
                )
            pending.append(items)
        out = []
        while pending:
            items = rng.choice(pending)
            out.append(items.pop(0))
            if not items:
                pending.remove(items)
        return out


# -- the kv database, as a test reads it and injects failures into it ---------------------------


class SqliteDb:
    """The kv target's SQLite database (``url`` for WALSTREAM_KV_URL), read from the test:
    rows, an apply-order log filled by triggers, failures injected by a trigger (a runtime error
    in a trigger is SQLITE_ERROR: transient, like a busy database)."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    async def execute(self, *statements: str) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()

    async def query(self, statement: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            return conn.execute(statement).fetchall()
        finally:
            conn.close()

    async def rows(self, tables: Iterable[str]) -> dict[tuple[str, str], bytes | None]:
        """(table, key) -> value (None: a tombstone) of every row of ``tables`` that exist."""
        out: dict[tuple[str, str], bytes | None] = {}
        for table in tables:
            try:
                found = await self.query(f"SELECT key, value, deleted FROM {table}")  # noqa: S608
            except (sqlite3.Error, OSError, asyncpg.PostgresError):
                continue  # no such table: nothing was written to it
            for key, value, deleted in found:
                out[(table, key)] = None if deleted else bytes(value)
        return out

    async def prepare(self, tables: Iterable[str]) -> None:
        """Create ``tables`` as the kv target does, with triggers logging each applied write
        (``apply_log``) and failing writes of the (table, key) rows listed in ``fail``."""
        statements = [_LOG_TABLE[self.dialect], "CREATE TABLE fail (tbl TEXT, key TEXT)"]
        if self.dialect == "postgresql":
            statements += [_PG_INJECT, _PG_RECORD]
        for table in tables:
            statements.append(kv_statements(table, self.dialect)[0])
            statements += [s.format(t=table) for s in _TRIGGERS[self.dialect]]
        await self.execute(*statements)

    async def fail(self, rows: Iterable[tuple[str, str]]) -> None:
        # test-made names only (tables and keys of the test's own transactions)
        await self.execute(*(f"INSERT INTO fail VALUES ('{t}', '{k}')" for t, k in rows))  # noqa: S608

    async def heal(self) -> None:
        await self.execute("DELETE FROM fail")

    async def applied(self) -> list[tuple[str, str, str]]:
        """(table, key, token) of every write applied, in the order the database applied them."""
        found = await self.query("SELECT tbl, key, token FROM apply_log ORDER BY id")
        return [(str(t), str(k), str(tok)) for t, k, tok in found]


class PgDb(SqliteDb):
    """A database of its own on a PostgreSQL server (``create`` / ``drop``), as ``SqliteDb``."""

    dialect = "postgresql"

    def __init__(self, server: str) -> None:
        self.name = f"t_{uuid.uuid4().hex[:10]}"
        self.server = server
        self.url = server.rsplit("/", 1)[0] + "/" + self.name

    async def _run(self, dsn: str, statements: Sequence[str]) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            if len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT"):
                return [tuple(r) for r in await conn.fetch(statements[0])]
            for statement in statements:
                await conn.execute(statement)
            return []
        finally:
            await conn.close()

    async def create(self) -> None:
        await self._run(self.server, [f"CREATE DATABASE {self.name}"])

    async def drop(self) -> None:
        await self._run(self.server, [f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"])

    async def execute(self, *statements: str) -> None:
        await self._run(self.url, statements)

    async def query(self, statement: str) -> list[tuple[Any, ...]]:
        return await self._run(self.url, [statement])


_LOG_TABLE = {
    "sqlite": "CREATE TABLE apply_log "
    "(id INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT, key TEXT, token TEXT)",
    "postgresql": "CREATE TABLE apply_log "
    "(id BIGSERIAL PRIMARY KEY, tbl TEXT, key TEXT, token TEXT)",
}
_PG_INJECT = """CREATE FUNCTION inject() RETURNS trigger AS $$ BEGIN
    IF EXISTS (SELECT 1 FROM fail WHERE tbl = TG_TABLE_NAME AND key = NEW.key) THEN
        RAISE EXCEPTION 'injected failure' USING ERRCODE = '40001';
    END IF;
    RETURN NEW; END $$ LANGUAGE plpgsql"""
_PG_RECORD = """CREATE FUNCTION record_apply() RETURNS trigger AS $$ BEGIN
    INSERT INTO apply_log (tbl, key, token) VALUES (TG_TABLE_NAME, NEW.key, NEW.idempotency_token);
    RETURN NULL; END $$ LANGUAGE plpgsql"""
_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER {t}_fail BEFORE INSERT ON {t} WHEN EXISTS "
        "(SELECT 1 FROM fail WHERE tbl = '{t}' AND key = NEW.key) "
        "BEGIN SELECT json('injected failure'); END",
        "CREATE TRIGGER {t}_ins AFTER INSERT ON {t} BEGIN INSERT INTO apply_log (tbl, key, token) "
        "VALUES ('{t}', NEW.key, NEW.idempotency_token); END",
        "CREATE TRIGGER {t}_upd AFTER UPDATE ON {t} BEGIN INSERT INTO apply_log (tbl, key, token) "
        "VALUES ('{t}', NEW.key, NEW.idempotency_token); END",
    ],
    "postgresql": [
        "CREATE TRIGGER {t}_fail BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION inject()",
        "CREATE TRIGGER {t}_log AFTER INSERT OR UPDATE ON {t} FOR EACH ROW "
        "EXECUTE FUNCTION record_apply()",
    ],
}
