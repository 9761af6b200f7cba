"""The delay stage's pure parts: its timer heap and its partition ledger (never commit past a
pending offset)."""

from __future__ import annotations

from walstream.core.delay import TimerHeap
from walstream.core.offsets import PartitionLedger


def test_timers_leave_earliest_due_first_in_arrival_order_among_equals():
    heap: TimerHeap[str] = TimerHeap()
    for due, item in ((30, "c"), (10, "a1"), (20, "b"), (10, "a2")):
        heap.push(due, "p0", item)
    assert (len(heap), heap.next_due_ms()) == (4, 10)
    assert heap.pop_due(9) is None  # nothing due yet: never early
    assert [heap.pop_due(20), heap.pop_due(20), heap.pop_due(20)] == [
        ("p0", "a1"),
        ("p0", "a2"),
        ("p0", "b"),
    ]
    assert heap.pop_due(29) is None
    assert heap.pop_due(30) == ("p0", "c")
    assert (len(heap), heap.next_due_ms(), heap.pop_due(10**12)) == (0, None, None)


def test_a_revoked_partitions_timers_leave_together():
    heap: TimerHeap[int] = TimerHeap()
    for n in range(6):
        heap.push(100 - n, f"p{n % 3}", n)
    heap.drop({"p0", "p2"})
    assert len(heap) == 2
    assert [heap.pop_due(1_000), heap.pop_due(1_000)] == [("p1", 4), ("p1", 1)]


def test_the_ledger_never_commits_past_a_pending_offset():
    part = PartitionLedger(next_offset=8)
    assert part.committable() == 8  # nothing taken yet: where reading resumes
    for offset in (8, 9, 10):
        part.track(offset)
    assert part.committable() == 8
    assert part.ack(9)
    assert part.committable() == 8  # 8 is still pending
    assert part.ack(8)
    assert part.committable() == 10
    part.track(10)  # sent again while pending: nothing changes
    assert part.outstanding == {10}
    assert part.ack(10)
    assert not part.ack(10)  # acked already
    assert part.committable() == 11


def test_an_offset_acked_and_taken_again_holds_the_commit_again():
    part = PartitionLedger()
    assert part.committable() is None  # nothing handed over since assigned
    part.track(3)
    part.track(5)
    assert part.ack(5)
    part.track(5)  # e.g. a timer record: released, then its hand-over is sent
    assert part.ack(3)
    assert part.committable() == 5
    assert part.ack(5)
    assert part.committable() == 6
