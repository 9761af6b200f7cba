"""kv target on a real PostgreSQL server: the same last-write-wins guarantees as on SQLite."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from walstream.core.lww import Version
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.targets.kv_postgres import PostgresKvTarget
from walstream.testing import kv_envelope as write

pytestmark = pytest.mark.integration


@pytest.fixture
async def kv(postgres):
    target = PostgresKvTarget(postgres)
    yield target
    await target.close()


@pytest.fixture
def table():
    return f"items_{uuid.uuid4().hex[:8]}"


def to(table, env):
    return env._replace(target={**env.target, "table": table})


async def test_writes_delivered_in_the_wrong_order_leave_the_newer_value(kv, table):
    await kv.deliver(to(table, write("new", 2_000, "t2")))
    await kv.deliver(to(table, write("old", 1_000, "t1")))
    assert await kv.read(table, "k1") == (b'"new"', False, Version(2_000, "t2"))


async def test_duplicate_delivery_changes_nothing(kv, table):
    await kv.deliver(to(table, write("v", 1_000, "t1")))
    await kv.deliver(to(table, write("v-retried", 1_000, "t1")))
    assert await kv.read(table, "k1") == (b'"v"', False, Version(1_000, "t1"))


async def test_late_put_after_a_newer_delete_does_not_resurrect(kv, table):
    await kv.deliver(to(table, write("v1", 1_000, "t1")))
    await kv.deliver(to(table, write(None, 3_000, "t3", op="delete")))
    await kv.deliver(to(table, write("late", 2_000, "t2")))
    assert await kv.read(table, "k1") == (None, True, Version(3_000, "t3"))


async def test_ties_break_on_the_token_bytewise_like_python(kv, table):
    # a locale collation would sort "B" after "a"; Python and SQLite sort it first
    await kv.deliver(to(table, write("from-a", 1_000, "a")))
    await kv.deliver(to(table, write("from-B", 1_000, "B")))
    assert await kv.read(table, "k1") == (b'"from-a"', False, Version(1_000, "a"))


async def test_a_server_that_is_not_there_is_transient_a_bad_table_permanent(kv, table):
    down = PostgresKvTarget("postgresql://postgres@127.0.0.1:9/postgres", timeout_s=2)
    with pytest.raises(TargetUnavailableError):
        await down.deliver(to(table, write("v", 1, "t")))
    await down.close()
    await kv.deliver(to(table, write("v", 1, "t")))
    pool = await kv._connection_pool()
    async with pool.acquire() as conn:
        await conn.execute(f'ALTER TABLE "{table}" ADD COLUMN must INTEGER NOT NULL DEFAULT 0')
        await conn.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT never CHECK (must > 0) NOT VALID')
    with pytest.raises(TargetRejectedError):
        await kv.deliver(to(table, write("w", 2, "t2")))


# -- issue 14: hostile names, write-time bounds, the token rule, transient errors ---------------


@pytest.fixture
async def app_schema(postgres):
    """A schema of its own holding an application's table (what an attacker is after); the
    target's connections use it first (search_path)."""
    schema = f"app_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(postgres)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {schema}.app_users (id INTEGER PRIMARY KEY, name TEXT)")
        await conn.execute(f"INSERT INTO {schema}.app_users VALUES (1, 'alice'), (2, 'bob')")  # noqa: S608 - the test's own name
    finally:
        await conn.close()
    sep = "&" if "?" in postgres else "?"
    return schema, f"{postgres}{sep}search_path={schema}"  # a server setting for asyncpg


async def pg_catalog(dsn, schema):
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        rows = await conn.fetch(f"SELECT id, name FROM {schema}.app_users ORDER BY id")  # noqa: S608 - the test's own name
        everywhere = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_name = 'pwned'"
        )
    finally:
        await conn.close()
    return sorted(r[0] for r in tables), [tuple(r) for r in rows], everywhere


async def test_hostile_table_names_run_no_statement(postgres, app_schema):
    schema, dsn = app_schema
    kv = PostgresKvTarget(dsn)
    outcomes = []
    try:
        for table in [
            "x; DROP TABLE app_users; --",
            # what the review ran: the rest of the template completes the last statement
            'x" (a INTEGER); DROP TABLE app_users; CREATE TABLE pwned (b INTEGER); CREATE TABLE "y',
            'x" (a INTEGER); CREATE TABLE pwned AS SELECT * FROM app_users; CREATE TABLE "z',
            "",
        ]:
            try:
                await kv.deliver(to(table, write("v", 1_000, "t1")))
            except TargetRejectedError as exc:
                outcomes.append(exc.error_class)
            else:
                outcomes.append("delivered")
        tables, rows, pwned = await pg_catalog(postgres, schema)
        assert pwned == []
        assert tables == ["app_users"]  # nothing created, nothing dropped
        assert rows == [(1, "alice"), (2, "bob")]
        assert outcomes == ["bad_table"] * 4
    finally:
        await kv.close()


async def test_hostile_keys_are_stored_as_they_are(postgres, app_schema):
    schema, dsn = app_schema
    kv = PostgresKvTarget(dsn)
    keys = ["'); DROP TABLE app_users; --", 'k" OR 1=1; --', "é ✓ \n", "$1"]
    try:
        for n, key in enumerate(keys):
            await kv.deliver(to("items", write(f"v{n}", 1_000, f"t{n}", key=key)))
        for n, key in enumerate(keys):
            assert await kv.read("items", key) == (
                f'"v{n}"'.encode(),
                False,
                Version(1_000, f"t{n}"),
            )
        tables, rows, _ = await pg_catalog(postgres, schema)
        assert tables == ["app_users", "items"]
        assert rows == [(1, "alice"), (2, "bob")]
    finally:
        await kv.close()


async def test_an_original_write_time_outside_the_apis_bounds_is_refused(kv, table):
    await kv.deliver(to(table, write("v1", 1_000, "t1")))
    crafted = to(table, write("mine-forever", 1_000, "evil"))
    for owt in (9_000_000_000_000_000, 9e15, 0):
        bad = crafted._replace(lifecycle=crafted.lifecycle._replace(original_write_time_ms=owt))
        with pytest.raises(TargetRejectedError) as info:
            await kv.deliver(bad)
        assert info.value.error_class == "bad_write_time"
    now = int(time.time() * 1000)
    await kv.deliver(to(table, write("v2", now, "t2")))
    assert await kv.read(table, "k1") == (b'"v2"', False, Version(now, "t2"))


async def test_the_same_token_with_a_later_write_time_is_a_duplicate(kv, table):
    await kv.deliver(to(table, write("first", 1_000, "tok")))
    await kv.deliver(to(table, write("again", 2_000, "tok")))
    await kv.deliver(to(table, write(None, 3_000, "tok", op="delete")))
    assert await kv.read(table, "k1") == (b'"first"', False, Version(1_000, "tok"))
    await kv.deliver(to(table, write("other", 2_000, "tok2")))
    assert await kv.read(table, "k1") == (b'"other"', False, Version(2_000, "tok2"))


async def test_concurrent_first_writes_to_a_new_table_all_succeed(postgres):
    """Issue 14 item 7: CREATE TABLE IF NOT EXISTS races (a unique violation on pg_type) must
    not dead-letter a good record. 10 fresh tables, 64 first writes each from 4 processes'
    worth of pools at once."""
    targets = [PostgresKvTarget(postgres, max_size=16) for _ in range(4)]
    try:
        for _ in range(10):
            table = f"race_{uuid.uuid4().hex[:8]}"
            writes = [
                targets[n % 4].deliver(to(table, write(f"v{n}", 1_000 + n, f"t{n}", key=f"k{n}")))
                for n in range(64)
            ]
            results = await asyncio.gather(*writes, return_exceptions=True)
            assert [r for r in results if r is not None] == []
            for n in (0, 63):
                row = await targets[0].read(table, f"k{n}")
                assert row is not None
                assert row[0] == f'"v{n}"'.encode()
    finally:
        for target in targets:
            await target.close()


async def test_a_table_dropped_under_the_target_is_created_again(kv, table, postgres):
    await kv.deliver(to(table, write("v", 1_000, "t1")))
    conn = await asyncpg.connect(postgres)
    try:
        await conn.execute(f'DROP TABLE "{table}"')
    finally:
        await conn.close()
    with pytest.raises(TargetUnavailableError):  # transient: the retry creates it
        await kv.deliver(to(table, write("w", 2_000, "t2")))
    await kv.deliver(to(table, write("w", 2_000, "t2")))
    assert await kv.read(table, "k1") == (b'"w"', False, Version(2_000, "t2"))


async def test_connections_closed_by_the_server_are_transient_never_permanent(kv, table, postgres):
    await kv.deliver(to(table, write("v", 1_000, "t1")))
    conn = await asyncpg.connect(postgres)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database()"
        )
    finally:
        await conn.close()
    try:
        await kv.deliver(to(table, write("w", 2_000, "t2")))
    except TargetUnavailableError:
        await kv.deliver(to(table, write("w", 2_000, "t2")))  # the retry reconnects
    assert await kv.read(table, "k1") == (b'"w"', False, Version(2_000, "t2"))
