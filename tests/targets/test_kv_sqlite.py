"""kv target on a real SQLite database: last-write-wins, deduplication, tombstones."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walstream.core.lww import Outcome, Version, should_apply
from walstream.core.validate import MAX_FUTURE_SKEW_MS
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.targets.kv import SqliteKvTarget
from walstream.testing import kv_envelope as write


@pytest.fixture
async def kv(tmp_path):
    target = SqliteKvTarget(tmp_path / "kv.db")
    yield target
    await target.close()


async def test_writes_delivered_in_the_wrong_order_leave_the_newer_value(kv):
    await kv.deliver(write("new", 2_000, "t2"))
    await kv.deliver(write("old", 1_000, "t1"))
    assert kv.read("items", "k1") == (b'"new"', False, Version(2_000, "t2"))


async def test_duplicate_delivery_changes_nothing(kv):
    await kv.deliver(write("v", 1_000, "t1"))
    await kv.deliver(write("v-retried", 1_000, "t1"))  # same token: a redelivery
    assert kv.read("items", "k1") == (b'"v"', False, Version(1_000, "t1"))


async def test_late_put_after_a_newer_delete_does_not_resurrect(kv):
    await kv.deliver(write("v1", 1_000, "t1"))
    await kv.deliver(write(None, 3_000, "t3", op="delete"))
    await kv.deliver(write("late", 2_000, "t2"))
    assert kv.read("items", "k1") == (None, True, Version(3_000, "t3"))
    await kv.deliver(write("newer", 4_000, "t4"))
    assert kv.read("items", "k1") == (b'"newer"', False, Version(4_000, "t4"))


async def test_a_locked_database_is_a_retriable_error(tmp_path):
    target = SqliteKvTarget(tmp_path / "kv.db", busy_timeout_s=0.05)
    await target.deliver(write("v", 1, "t1"))
    blocker = sqlite3.connect(tmp_path / "kv.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TargetUnavailableError) as info:
            await target.deliver(write("w", 2, "t2"))
        assert info.value.retriable
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await target.deliver(write("w", 2, "t2"))
    row = target.read("items", "k1")
    assert row is not None
    assert row[0] == b'"w"'
    await target.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(st.integers(1, 10), st.booleans(), st.integers(0, 5)), min_size=1, max_size=15
    ),
    token_has_time=st.booleans(),
)
def test_the_sql_decides_exactly_like_the_lww_specification(tmp_path_factory, ops, token_has_time):
    """Any sequence of puts, deletes and redeliveries (a token reused with another write time
    too): the table equals the pure fold."""
    db = tmp_path_factory.mktemp("kv") / "kv.db"

    async def run():
        target = SqliteKvTarget(db)
        expected = None
        try:
            for owt, is_delete, write_no in ops:
                token = f"t{write_no}-{owt}-{int(is_delete)}" if token_has_time else f"t{write_no}"
                incoming = Version(owt, token)
                env = write(
                    None if is_delete else f"v{write_no}",
                    owt,
                    token,
                    op="delete" if is_delete else "put",
                )
                await target.deliver(env)
                if should_apply(expected and expected[0], incoming) is Outcome.APPLY:
                    expected = (incoming, is_delete)
            stored = target.read("items", "k1")
        finally:
            await target.close()
        assert stored is not None
        assert (stored[2], stored[1]) == expected

    asyncio.run(run())


# -- issue 14: hostile names, write-time bounds, the token rule, transient errors ---------------

HOSTILE_TABLES = [
    "x; DROP TABLE app_users; --",
    'x" (a INTEGER); DROP TABLE app_users; CREATE TABLE pwned (b INTEGER); --',
    'items" AS SELECT * FROM app_users; --',
    "",
    "x" * 64,
]
HOSTILE_KEYS = ["'); DROP TABLE app_users; --", 'k" OR 1=1; --', "é ✓ \n\x01"]


def catalog(path):
    conn = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
    finally:
        conn.close()


def users(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, name FROM app_users ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.fixture
def app_db(tmp_path):
    """A kv database that also holds an application's table (what an attacker is after)."""
    path = tmp_path / "kv.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE app_users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO app_users VALUES (1, 'alice'), (2, 'bob')")
    conn.commit()
    conn.close()
    return path


async def test_hostile_table_names_run_no_statement(app_db):
    target = SqliteKvTarget(app_db)
    try:
        for table in HOSTILE_TABLES:
            env = write("v", 1_000, "t1")
            env = env._replace(target={**env.target, "table": table})
            with pytest.raises(TargetRejectedError) as info:
                await target.deliver(env)
            assert info.value.error_class == "bad_table"
            assert not info.value.retriable
        assert catalog(app_db) == ["app_users"]  # nothing created, nothing dropped
        assert users(app_db) == [(1, "alice"), (2, "bob")]
    finally:
        await target.close()


async def test_hostile_keys_are_stored_as_they_are(app_db):
    target = SqliteKvTarget(app_db)
    try:
        for n, key in enumerate(HOSTILE_KEYS):
            await target.deliver(write(f"v{n}", 1_000, f"t{n}", key=key))
        for n, key in enumerate(HOSTILE_KEYS):
            assert target.read("items", key) == (f'"v{n}"'.encode(), False, Version(1_000, f"t{n}"))
        assert catalog(app_db) == ["app_users", "items", "sqlite_autoindex_items_1"]
        assert users(app_db) == [(1, "alice"), (2, "bob")]
    finally:
        await target.close()


async def test_a_key_holding_nul_is_refused_as_postgresql_would_refuse_it(kv):
    """One kv key rule for both databases (walstream.core.targets.kv_key_problem): SQLite could
    store NUL, PostgreSQL's text cannot, so a namespace moved between them keeps its records."""
    with pytest.raises(TargetRejectedError) as info:
        await kv.deliver(write("v", 1_000, "t1", key="k\x00nul"))
    assert info.value.error_class == "bad_key"
    assert not info.value.retriable
    assert "NUL" in str(info.value)
    assert kv.read("items", "k\x00nul") is None


@pytest.mark.parametrize("owt", [9_000_000_000_000_000, 9e15, 0, -1, "1", True])
async def test_an_original_write_time_outside_the_apis_bounds_is_refused(kv, owt):
    """A record produced straight into a log with original_write_time 9e15 would hold the key
    for good (every later write is older); the API's bounds hold here too."""
    await kv.deliver(write("v1", 1_000, "t1"))
    crafted = write("mine-forever", 1_000, "evil")
    crafted = crafted._replace(lifecycle=crafted.lifecycle._replace(original_write_time_ms=owt))
    with pytest.raises(TargetRejectedError) as info:
        await kv.deliver(crafted)
    assert info.value.error_class == "bad_write_time"
    now = int(time.time() * 1000)
    await kv.deliver(write("v2", now, "t2"))
    assert kv.read("items", "k1") == (b'"v2"', False, Version(now, "t2"))


async def test_an_original_write_time_up_to_an_hour_ahead_is_accepted(kv):
    ahead = int(time.time() * 1000) + MAX_FUTURE_SKEW_MS - 60_000
    await kv.deliver(write("v", ahead, "t1"))
    assert kv.read("items", "k1")[2] == Version(ahead, "t1")


async def test_the_same_token_with_a_later_write_time_is_a_duplicate(kv):
    """README and core/lww.py: a write carrying the token already applied changes nothing."""
    await kv.deliver(write("first", 1_000, "tok"))
    assert should_apply(Version(1_000, "tok"), Version(2_000, "tok")) is Outcome.DUPLICATE
    await kv.deliver(write("again", 2_000, "tok"))
    await kv.deliver(write(None, 3_000, "tok", op="delete"))
    assert kv.read("items", "k1") == (b'"first"', False, Version(1_000, "tok"))
    await kv.deliver(write("other", 2_000, "tok2"))  # another token still wins by time
    assert kv.read("items", "k1") == (b'"other"', False, Version(2_000, "tok2"))


async def test_a_create_that_failed_is_tried_again(tmp_path):
    """A CREATE refused while the database was locked must not be remembered as done (it was:
    every later write failed with 'no such table' until a restart)."""
    path = tmp_path / "kv.db"
    target = SqliteKvTarget(path, busy_timeout_s=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TargetUnavailableError):
            await target.deliver(write("v", 1_000, "t1"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await target.deliver(write("v", 1_000, "t1"))
    assert target.read("items", "k1") == (b'"v"', False, Version(1_000, "t1"))
    await target.close()


async def test_a_table_dropped_under_the_target_is_created_again(kv, tmp_path):
    await kv.deliver(write("v", 1_000, "t1"))
    conn = sqlite3.connect(tmp_path / "kv.db")
    conn.execute("DROP TABLE items")
    conn.commit()
    conn.close()
    with pytest.raises(TargetUnavailableError):  # transient: the retry creates it
        await kv.deliver(write("w", 2_000, "t2"))
    await kv.deliver(write("w", 2_000, "t2"))
    assert kv.read("items", "k1") == (b'"w"', False, Version(2_000, "t2"))


async def test_a_closed_connection_is_transient_and_reopened(kv):
    await kv.deliver(write("v", 1_000, "t1"))
    kv._conn.close()  # lost under the target
    with pytest.raises(TargetUnavailableError) as info:
        await kv.deliver(write("w", 2_000, "t2"))
    assert info.value.retriable
    await kv.deliver(write("w", 2_000, "t2"))
    assert kv.read("items", "k1") == (b'"w"', False, Version(2_000, "t2"))


async def test_a_closed_target_is_transient_never_permanent(tmp_path):
    target = SqliteKvTarget(tmp_path / "kv.db")
    await target.close()
    with pytest.raises(TargetUnavailableError):
        await target.deliver(write("v", 1_000, "t1"))
