"""kv target on a real PostgreSQL server: the same last-write-wins guarantees as on SQLite."""

from __future__ import annotations

import uuid

import pytest

from walstream.core.lww import Version
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.targets.kv_postgres import PostgresKvTarget

from .test_kv_sqlite import write

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
