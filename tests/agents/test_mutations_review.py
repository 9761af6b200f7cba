"""Review of issue 18's mutation agents (engineer R): defects proven over in-memory rows, a
recording emitter and a kv target that records what it applied. A crash is a BaseException
raised by a row write (the write it interrupts never reached the changelog), then a new stage
(a new worker) over the rows the changelog kept handles the unacked record again. Every record
the stage scheduled (wakes, Forgets, through the delay tiers or straight) is then delivered in
due order, as the delay tiers would.

Each test is a strict xfail until its owner fixes the defect named in its reason."""

from __future__ import annotations

import pytest

from walstream.core.placement import key_partition
from walstream.settings import Settings
from walstream.testing.mutation_rig import (
    DAY_MS,
    NS,
    Crash,
    Rig,
)


async def test_a_worker_killed_between_the_tombstone_and_the_deletes_leaves_no_rows_for_ever():
    rig = Rig()
    for seq in (1, 0):
        await rig.op("t1", seq)  # 3 chunks each
    marker = rig.marker_record("t1", 2)
    # killed once the tombstone is written, at the first chunk row's delete
    rig.rows.crash_at = lambda key, value: key.startswith("c:") and value is None
    with pytest.raises(Crash):
        await rig.handle_marker(marker, "t1")
    assert rig.kv.applied == [f"mut:{NS}:t1:00000000", f"mut:{NS}:t1:00000001"]
    rig.stage = rig.worker()  # a new worker reads the unacked marker again
    await rig.handle_marker(marker, "t1")
    await rig.drain(2 * DAY_MS)  # the deadline wake, then the Forget at the window's end
    assert rig.kv.applied == [f"mut:{NS}:t1:00000000", f"mut:{NS}:t1:00000001"]
    assert rig.txn_rows("t1") == []
    assert len(rig.stage.open) == 0


async def test_a_transaction_that_only_got_operations_leaves_no_rows_for_ever():
    rig = Rig()
    await rig.op("t2", 0, value=b"x" * 40)  # 10 chunk rows; its client dies: no marker
    await rig.drain(30 * DAY_MS)  # the deadline wake dead-letters it; nothing else is due
    dlq = rig.emitter.to(f"wal.{NS}.dlq")
    assert [dict(e.headers).get("wal-mutation") for e in dlq] == [b"marker"]
    assert rig.txn_rows("t2") == []


async def test_a_deleted_namespaces_rows_do_not_stay_for_ever():
    rig = Rig()
    await rig.op("t3", 0)
    await rig.handle_marker(rig.marker_record("t3", 1), "t3")  # committed: its tombstone
    await rig.op("t4", 0)  # open: waiting for its marker
    assert rig.kv.applied == [f"mut:{NS}:t3:00000000"]
    rig.registry.apply(NS.encode(), None)  # `walstream ns delete pds`
    await rig.drain(30 * DAY_MS)  # every wake and Forget delivered all the same
    assert sorted(k for k in rig.rows if f":{NS}:" in k) == []


async def test_a_record_on_another_partition_than_its_keys_is_refused():
    rig = Rig()
    partitions = Settings(app_id="app").default_partitions
    txn = next(f"t{i}" for i in range(100) if key_partition(f"t{i}".encode(), partitions) != 2)
    rig.partition = 2
    await rig.op(txn, 0)  # read on partition 2, not the key's
    await rig.handle_marker(rig.marker_record(txn, 1), txn)
    assert rig.kv.applied == []
    dlq = rig.emitter.to(f"wal.{NS}.dlq")
    assert {dict(e.headers).get("wal-error-class") for e in dlq} == {b"mutation_poison"}
