"""Which log records a replay re-delivers (walstream.core.replay): pure, no loop."""

from __future__ import annotations

from walstream.core.replay import ReplayPlan, Verdict

STARTED = 10_000


def verdict(plan: ReplayPlan, record_id: str, *, key=None, created=100, due=100, partition=0):
    return plan.verdict(
        partition=partition, record_id=record_id, key=key, created_at_ms=created, due_ms=due
    )


def test_the_window_is_by_write_time_and_half_open():
    plan = ReplayPlan(from_ms=100, to_ms=200, started_ms=STARTED)
    assert verdict(plan, "a", created=99) is Verdict.OUTSIDE
    assert verdict(plan, "b", created=100) is Verdict.DELIVER
    assert (
        verdict(plan, "c", created=199, due=5_000) is Verdict.DELIVER
    )  # due long after the window
    assert verdict(plan, "d", created=200) is Verdict.OUTSIDE


def test_never_early_a_record_due_after_the_start_is_left_to_the_worker():
    plan = ReplayPlan(from_ms=100, to_ms=200, started_ms=STARTED, skip_ids={"s"})
    assert verdict(plan, "a", due=STARTED) is Verdict.DELIVER
    assert verdict(plan, "b", due=STARTED + 1) is Verdict.PENDING
    assert verdict(plan, "s", due=STARTED + 1) is Verdict.PENDING  # cannot be skipped here
    assert verdict(plan, "s") is Verdict.SKIP


def test_in_a_key_ordered_namespace_later_records_of_a_waiting_key_wait_too():
    plan = ReplayPlan(from_ms=100, to_ms=200, started_ms=STARTED, key_ordered=True)
    # written before the window but not yet due: its key's records in the window wait behind it
    assert verdict(plan, "a", key="k", created=50, due=STARTED + 60_000) is Verdict.OUTSIDE
    assert verdict(plan, "b", key="k") is Verdict.PENDING
    assert verdict(plan, "c", key="k", partition=1) is Verdict.DELIVER  # another partition's k
    assert verdict(plan, "d", key="j") is Verdict.DELIVER
    assert verdict(plan, "e") is Verdict.DELIVER  # no key: not ordered


def test_without_key_ordering_a_waiting_record_holds_back_nothing_else():
    plan = ReplayPlan(from_ms=100, to_ms=200, started_ms=STARTED)
    assert verdict(plan, "a", key="k", due=STARTED + 1) is Verdict.PENDING
    assert verdict(plan, "b", key="k") is Verdict.DELIVER
