"""OffsetLedger: the commit never passes a record handed over and not acked."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from walstream.core.offsets import OffsetLedger


def test_a_slow_record_holds_the_commit_while_later_ones_finish():
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.assign(["p"])
    for offset in (10, 11, 12):
        ledger.track("p", offset)
    ledger.ack("p", 11)
    ledger.ack("p", 12)
    assert ledger.committable("p") == 10  # 10 is still in flight: re-read after a crash
    ledger.ack("p", 10)
    assert ledger.committable("p") == 13


def test_from_offset_zero_with_nothing_committed_the_head_record_holds():
    # Faust's _new_offset ignores a head gap when nothing was committed yet (or 0)
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.assign(["p"])
    ledger.track("p", 0)
    ledger.track("p", 1)
    ledger.ack("p", 1)
    assert ledger.committable("p") == 0


def test_two_unacked_records_at_the_frontier_both_hold():
    # Faust's _new_offset skips exactly one unacked record at the frontier
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.assign(["p"])
    for offset in range(30, 36):
        ledger.track("p", offset)
    for offset in (30, 33, 34, 35):
        ledger.ack("p", offset)
    assert ledger.committable("p") == 31
    ledger.ack("p", 31)
    assert ledger.committable("p") == 32
    ledger.ack("p", 32)
    assert ledger.committable("p") == 36


def test_offsets_skipped_by_the_log_do_not_hold_the_commit():
    # compacted topics and transaction markers leave holes in the offsets handed over
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.assign(["p"])
    ledger.track("p", 5)
    ledger.track("p", 9)
    ledger.ack("p", 9)
    ledger.ack("p", 5)
    assert ledger.committable("p") == 10


def test_nothing_handed_over_commits_nothing():
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.assign(["p"])
    assert ledger.committable("p") is None
    assert ledger.committable("other") is None


def test_records_and_acks_of_unassigned_partitions_are_ignored():
    ledger: OffsetLedger[str] = OffsetLedger()
    assert not ledger.track("p", 1)
    ledger.assign(["p"])
    ledger.track("p", 1)
    ledger.revoke(["p"])
    assert not ledger.ack("p", 1)  # a late ack after the partition was revoked
    assert ledger.committable("p") is None
    assert not ledger.assigned("p")


def test_reassigning_forgets_the_previous_assignment():
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.assign(["p"])
    ledger.track("p", 7)
    ledger.assign(["p"])  # the partition is read again from its committed offset
    assert ledger.committable("p") is None
    assert ledger.outstanding("p") == 0
    assert not ledger.ack("p", 7)


def test_acks_twice_or_for_offsets_never_handed_over_change_nothing():
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.assign(["p"])
    ledger.track("p", 3)
    ledger.track("p", 4)
    assert not ledger.ack("p", 2)
    assert ledger.ack("p", 4)
    assert not ledger.ack("p", 4)
    assert ledger.committable("p") == 3
    assert ledger.outstanding("p") == 1


def test_a_record_handed_over_again_is_outstanding_again():
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.assign(["p"])
    ledger.track("p", 3)
    ledger.track("p", 3)
    ledger.ack("p", 3)
    assert ledger.committable("p") == 4
    ledger.track("p", 3)  # read again after a seek back
    assert ledger.committable("p") == 3


@st.composite
def _histories(draw):
    """Increasing offsets with holes, handed over, and a random subset acked in random order."""
    steps = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60))
    offsets = []
    offset = draw(st.integers(min_value=0, max_value=5))
    for step in steps:
        offsets.append(offset)
        offset += step
    acked = draw(st.lists(st.sampled_from(offsets), unique=True))
    # interleave: each ack happens after its record was handed over
    events: list[tuple[str, int]] = [("track", o) for o in offsets]
    for ack in acked:
        earliest = events.index(("track", ack)) + 1
        position = draw(st.integers(min_value=earliest, max_value=len(events)))
        events.insert(position, ("ack", ack))
    return offsets, events


@given(_histories())
def test_the_commit_never_passes_an_unacked_offset(history):
    offsets, events = history
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.assign(["p"])
    tracked: list[int] = []
    acked: set[int] = set()
    for kind, offset in events:
        if kind == "track":
            ledger.track("p", offset)
            tracked.append(offset)
        else:
            ledger.ack("p", offset)
            acked.add(offset)
        committable = ledger.committable("p")
        assert committable is not None
        unacked = [o for o in tracked if o not in acked]
        if unacked:
            assert committable == min(unacked)  # never past it, and no further back
        else:
            assert committable == max(tracked) + 1
    assert ledger.outstanding("p") == len(set(offsets) - acked)


def test_memory_follows_the_records_outstanding_behind_a_record_never_acked():
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.assign(["p"])
    ledger.track("p", 0)  # its handler raised: never acked
    for offset in range(1, 100_000):
        ledger.track("p", offset)
        ledger.ack("p", offset)
    assert ledger.committable("p") == 0
    assert ledger.outstanding("p") == 1
    assert len(ledger._partitions["p"].heap) < 200  # not every offset seen since
    ledger.ack("p", 0)
    assert ledger.committable("p") == 100_000
