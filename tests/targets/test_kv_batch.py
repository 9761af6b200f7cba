"""The kv target's batch apply (issue 18: a transaction's run of operations in one database
transaction), on SQLite and on a real PostgreSQL server: in order, all or nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

import asyncpg
import pytest

from walstream.core.lww import Version
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.targets.kv import SqliteKvTarget
from walstream.targets.kv_postgres import PostgresKvTarget
from walstream.testing import kv_envelope as write


def to(table, env):
    return env._replace(target={**env.target, "table": table})


@pytest.fixture(params=["sqlite", "postgresql"])
async def kv(request, tmp_path):
    target: SqliteKvTarget | PostgresKvTarget
    if request.param == "sqlite":
        target = SqliteKvTarget(tmp_path / "kv.db")
    else:
        target = PostgresKvTarget(request.getfixturevalue("postgres"))
    yield target
    await target.close()


async def read(kv, table, key):
    got = kv.read(table, key)
    return await got if isinstance(kv, PostgresKvTarget) else got


async def run_sql(kv, statement):
    """One statement on the target's database, from a connection of the test's own."""
    if isinstance(kv, PostgresKvTarget):
        conn = await asyncpg.connect(kv.dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()
    else:
        with sqlite3.connect(kv.path, isolation_level=None) as conn:
            conn.execute(statement)
        conn.close()


def names():
    return f"a_{uuid.uuid4().hex[:8]}", f"b_{uuid.uuid4().hex[:8]}"


async def test_a_batch_applies_in_order_over_several_tables(kv):
    a, b = names()
    await kv.deliver_many(
        [
            to(a, write("v1", 1_000, "t1")),
            to(b, write("w", 1_000, "t2", key="k2")),
            to(a, write("v2", 1_000, "t3")),  # same key, same time: the later token wins
            to(b, write(None, 1_000, "t4", key="k2", op="delete")),
        ]
    )
    assert await read(kv, a, "k1") == (b'"v2"', False, Version(1_000, "t3"))
    assert await read(kv, b, "k2") == (None, True, Version(1_000, "t4"))


async def test_a_batch_applied_again_changes_nothing(kv):
    a, _ = names()
    batch = [to(a, write("v1", 1_000, "t1")), to(a, write("v2", 2_000, "t2", key="k2"))]
    await kv.deliver_many(batch)
    await kv.deliver(to(a, write("newer", 3_000, "t3")))
    await kv.deliver_many(batch)
    assert await read(kv, a, "k1") == (b'"newer"', False, Version(3_000, "t3"))
    assert await read(kv, a, "k2") == (b'"v2"', False, Version(2_000, "t2"))


async def test_a_failing_write_rolls_the_whole_batch_back(kv):
    a, _ = names()
    await kv.deliver(to(a, write("seed", 1_000, "t0", key="seed")))  # the table exists
    pg = isinstance(kv, PostgresKvTarget)
    if pg:
        await run_sql(
            kv,
            f"""CREATE FUNCTION {a}_refuse() RETURNS trigger AS $$ BEGIN
                IF NEW.key = 'bad' THEN RAISE EXCEPTION 'refused' USING ERRCODE = '40001';
                END IF; RETURN NEW; END $$ LANGUAGE plpgsql""",
        )
        await run_sql(
            kv,
            f"CREATE TRIGGER refuse BEFORE INSERT ON {a} FOR EACH ROW "
            f"EXECUTE FUNCTION {a}_refuse()",
        )
    else:  # a runtime error in a trigger: SQLITE_ERROR, transient like a busy database
        await run_sql(
            kv,
            f"CREATE TRIGGER refuse BEFORE INSERT ON {a} WHEN NEW.key = 'bad' "
            "BEGIN SELECT json('not json'); END",
        )
    batch = [
        to(a, write("v1", 2_000, "t1")),
        to(a, write("v2", 2_000, "t2", key="k2")),
        to(a, write("x", 2_000, "t3", key="bad")),
    ]
    with pytest.raises(TargetUnavailableError):
        await kv.deliver_many(batch)
    assert await read(kv, a, "k1") is None
    assert await read(kv, a, "k2") is None
    await kv.deliver_many(batch[:2])  # the connection is usable after the rollback
    assert await read(kv, a, "k2") == (b'"v2"', False, Version(2_000, "t2"))


async def test_a_bad_record_refuses_the_batch_before_any_sql(kv):
    a, _ = names()
    bad = write("x", 1_000, "t2")._replace(target={"type": "kv", "table": "no;pe", "key": "k"})
    with pytest.raises(TargetRejectedError):
        await kv.deliver_many([to(a, write("v1", 1_000, "t1")), bad])
    await kv.deliver_many([])  # nothing to do
    await kv.deliver(to(a, write("v", 1_000, "t0", key="other")))
    assert await read(kv, a, "k1") is None


async def test_batches_writing_the_same_keys_in_other_orders_do_not_deadlock(postgres):
    # each row write holds its lock 0.3 s before the next: without a lock order, the two
    # batches each hold one key and wait for the other's (PostgreSQL fails one: 40P01)
    kv = PostgresKvTarget(postgres)
    a, _ = names()
    try:
        await kv.deliver(to(a, write("seed", 1_000, "t0", key="seed")))
        await run_sql(
            kv,
            f"""CREATE FUNCTION {a}_slow() RETURNS trigger AS $$ BEGIN
                PERFORM pg_sleep(0.3); RETURN NEW; END $$ LANGUAGE plpgsql""",
        )
        await run_sql(
            kv,
            f"CREATE TRIGGER slow AFTER INSERT OR UPDATE ON {a} FOR EACH ROW "
            f"EXECUTE FUNCTION {a}_slow()",
        )
        one = [to(a, write("1", 2_000, "a1", key="x")), to(a, write("1", 2_000, "a2", key="y"))]
        two = [to(a, write("2", 2_000, "b1", key="y")), to(a, write("2", 2_000, "b2", key="x"))]
        await asyncio.gather(kv.deliver_many(one), kv.deliver_many(two))
        x, y = await kv.read(a, "x"), await kv.read(a, "y")
        assert x is not None
        assert y is not None
        assert (x[0], y[0]) == (b'"2"', b'"2"')
    finally:
        await kv.close()
