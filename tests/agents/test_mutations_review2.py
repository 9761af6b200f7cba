"""Second review of issue 18's mutation agents (engineer R2): defects the first review missed or
its fixes opened, proven over in-memory rows, a recording emitter and a recording kv target (the
first review's ``Rig``: records are read on their key's partition, every record scheduled back to
the markers topic is delivered in due order).

Each test is a strict xfail until its owner fixes the defect named in its reason."""

from __future__ import annotations

import orjson
import pytest

from tests.agents.test_mutations_review import DAY_MS, NS, TOPICS, Rig
from walstream.core.delay import parse_delay_headers
from walstream.core.dlq.mutations import entry_marker
from walstream.core.mutations import encode_marker

HOUR_MS = 3_600_000


def _dlq(rig: Rig) -> list[dict[str, object]]:
    """The DLQ entries' values (each a transaction's marker or a record's bytes), decoded."""
    return [orjson.loads(e.value) for e in rig.emitter.to(f"wal.{NS}.dlq") if e.value]


def _last_scheduled_marker(rig: Rig) -> tuple[bytes, int]:
    """The value and due time of the record scheduled last-due back to the markers topic."""
    best: tuple[bytes, int] | None = None
    for e in rig.emitter.emitted:
        delay = parse_delay_headers(e.headers)
        if delay is None or delay.dest_topic != TOPICS.markers or e.value is None:
            continue
        if best is None or delay.due_ms >= best[1]:
            best = (e.value, delay.due_ms)
    assert best is not None
    return best


@pytest.mark.xfail(
    strict=True,
    reason=(
        "A redriven transaction's expiry wake read twice (at-least-once: a worker killed after "
        "it dropped the rows, before the ack; or a delay tier handing it over twice) opens a "
        "ghost transaction: on_marker (core/mutations/commit.py) only ignores a wake of no "
        "state when its redrive is 0, so the expiry of a transaction dead-lettered after a "
        "redrive (redrive >= 1) revives an empty state with the old count, which is "
        "dead-lettered again after the completion timeout (a second DLQ entry naming every "
        "seq missing) and stays a day more. Fix: a wake (wake != 0) of no state is ignored "
        "whatever its redrive; give the countless redrive form (today wake 1, redrive >= 1, "
        "the same bits as a genuine wake) a form of its own, e.g. wake 0 accepted with count 0 "
        "when redrive > 0"
    ),
)
async def test_a_redriven_transactions_expiry_read_again_opens_no_ghost() -> None:
    rig = Rig()
    await rig.op("t5", 0)
    await rig.handle_marker(rig.marker_record("t5", 2), "t5")  # seq 1 never comes
    await rig.drain(61_000)  # dead-lettered: incomplete (redrive 0)
    assert len(_dlq(rig)) == 1
    # the operator redrives it (walstream dlq redrive: redrive + 1, a client's marker)
    entry = entry_marker(rig.emitter.to(f"wal.{NS}.dlq")[0].value)
    redriven = entry._replace(redrive=entry.redrive + 1, wake=0)
    await rig.handle_marker(encode_marker(redriven), "t5")
    await rig.drain(61_000)  # still incomplete: dead-lettered again, at redrive 1
    assert len(_dlq(rig)) == 2
    expiry, due = _last_scheduled_marker(rig)
    assert due >= rig.clock.now_ms() + DAY_MS - 61_000  # the expiry wake, a window away
    # (Rig.drain gives up what is due past its horizon: the expiry is handed over here)
    rig.clock.advance(due - rig.clock.now_ms())
    await rig.handle_marker(expiry, "t5")  # the expiry drops the rows
    assert rig.txn_rows("t5") == []
    # the same expiry record read again (its worker killed before the ack)
    await rig.handle_marker(expiry, "t5")
    await rig.drain(61_000)
    assert rig.txn_rows("t5") == []  # fails: a ghost state (count 2, no operation)
    assert len(_dlq(rig)) == 2  # fails: a third entry, 'incomplete ... missing seqs [0, 1]'


@pytest.mark.xfail(
    strict=True,
    reason=(
        "A txn id reused after the idempotency window is silently discarded while its "
        "predecessor's Forget has not been handled yet (the delay stage behind, down, or "
        "rebalancing: the Forget is only due at the window's end, never before): on_chunk and "
        "on_marker (core/mutations/commit.py) take any tombstone as 'already committed', "
        "whatever its age, so the new transaction's operations are dropped, its marker is "
        "AlreadyCommitted, the API answered durable TRUE and the status page says committed. "
        "The window is measured by when a record is handled, not by the clock. Fix: a "
        "tombstone older than the idempotency window (committed_at_ms + window <= now) is "
        "gone: dropped and ignored by on_chunk/on_marker (the late Forget then finds none)"
    ),
)
async def test_a_txn_id_reused_after_the_window_is_applied_even_if_the_forget_is_late() -> None:
    rig = Rig()
    await rig.op("t6", 0, value=b"first")
    await rig.handle_marker(rig.marker_record("t6", 1), "t6")
    assert rig.kv.applied == [f"mut:{NS}:t6:00000000"]
    # the window passes; the delay stage is an hour behind: the Forget is not handled yet
    rig.clock.advance(DAY_MS + HOUR_MS)
    rig.delivered = len(rig.emitter.emitted)  # what was scheduled so far is still in the tiers
    await rig.op("t6", 0, value=b"second")  # a new transaction under the same id
    await rig.handle_marker(rig.marker_record("t6", 1), "t6")
    assert rig.kv.applied == [f"mut:{NS}:t6:00000000"] * 2  # fails: the second never applied
