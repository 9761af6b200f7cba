"""kv target on a real SQLite database: last-write-wins, deduplication, tombstones."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walstream.core.lww import Outcome, Version, should_apply
from walstream.errors import TargetUnavailableError
from walstream.records import Envelope, Lifecycle
from walstream.targets.kv import SqliteKvTarget


def write(value, owt, token, *, key="k1", op="put"):
    return Envelope(
        id=f"id-{token}",
        namespace="ns",
        key=key,
        payload=value,
        payload_encoding="json",
        target={"type": "kv", "table": "items", "key": key, "op": op},
        lifecycle=Lifecycle(deliver_at_ms=owt, original_write_time_ms=owt, delay_ms=0),
        idempotency_token=token,
        created_at_ms=owt,
    )


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
    assert target.read("items", "k1")[0] == b'"w"'
    await target.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 9), st.booleans(), st.integers(0, 5)), min_size=1, max_size=15
    )
)
def test_the_sql_decides_exactly_like_the_lww_specification(tmp_path_factory, ops):
    """Any sequence of puts, deletes and redeliveries: the table equals the pure fold."""
    db = tmp_path_factory.mktemp("kv") / "kv.db"

    async def run():
        target = SqliteKvTarget(db)
        expected = None
        try:
            for owt, is_delete, write_no in ops:
                token = f"t{write_no}-{owt}-{int(is_delete)}"
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
