"""A delay tier partition as the delay stage reads it (``core.tier_partition``): what it may
commit, how long the stage's loop waits, the earliest due time it holds."""

from __future__ import annotations

from walstream.core.delay import delay_headers
from walstream.core.tier_partition import TierPartition, commit_offsets, oldest_due_ms, sleep_ms
from walstream.testing import TierRecord


def test_a_partition_commits_below_what_is_pending_and_past_what_was_sent_on():
    part = TierPartition(tier_ms=10_000, next_offset=8)
    assert part.safe_offset() == 8  # nothing taken yet: where reading starts
    part.track(8)
    part.track(9)
    assert part.pending == {8, 9}
    assert part.safe_offset() == 8
    part.ack(8)
    assert part.safe_offset() == 9
    part.ack(9)
    assert part.safe_offset() == 10


def test_commit_offsets_are_the_safe_ones_that_moved_unless_forced():
    moved, same, fresh = (TierPartition(tier_ms=0, next_offset=n) for n in (5, 7, None))
    same.committed = 7
    parts = {"moved": moved, "same": same, "fresh": fresh}
    assert commit_offsets(parts) == {"moved": 5}  # fresh has nothing to commit
    assert commit_offsets(parts, force=True) == {"moved": 5, "same": 7}


def test_the_loop_waits_for_the_first_head_to_leave_or_the_first_timer_within_bounds():
    idle, waking = TierPartition(tier_ms=0), TierPartition(tier_ms=10_000)
    assert sleep_ms(1_000, [idle], None, lead_ms=500, max_ms=100) == 100  # nothing to wake for
    waking.wake_ms = 1_040
    assert sleep_ms(1_000, [idle, waking], None, lead_ms=500, max_ms=100) == 40
    assert sleep_ms(1_000, [idle], 1_520, lead_ms=500, max_ms=100) == 20  # handed over early
    assert sleep_ms(1_000, [waking], 1_200, lead_ms=500, max_ms=100) == 0  # overdue: at once
    waking.wake_ms = 5_000
    assert sleep_ms(1_000, [waking], None, lead_ms=500, max_ms=100) == 100  # at most max


def test_the_oldest_due_time_is_the_timers_or_a_tier_heads_with_valid_headers():
    empty, headed, garbled = (TierPartition(tier_ms=10_000) for _ in range(3))
    headed.buffer.append(TierRecord(1, due_ms=60_000))
    bad = TierRecord(2, due_ms=1)
    bad.headers = [("wal-due", b"soon")]
    garbled.buffer.append(bad)
    assert oldest_due_ms(None, [empty]) is None
    assert oldest_due_ms(None, [empty, headed, garbled]) == 60_000
    assert oldest_due_ms(30_000, [headed]) == 30_000
    headed.buffer[0].headers = delay_headers(20_000, "wal.ns.log", 0)
    assert oldest_due_ms(30_000, [headed]) == 20_000
