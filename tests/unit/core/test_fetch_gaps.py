"""A stage following a log never steps over a record it was not handed (core.fetch_gaps)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from walstream.core.fetch_gaps import Cut, GapGuard

P = "wal.ns.region.b[0]"


def test_a_partition_not_followed_yet_takes_its_first_fetch_whole():
    guard: GapGuard[str] = GapGuard()
    assert guard.cut(P, [40, 41, 42], now_ms=0) == Cut(0, 3)
    assert guard.cut(P, [], now_ms=0) == Cut(0, 0)


def test_a_batch_past_a_hole_is_read_again_from_the_hole_and_the_records_before_it_go():
    # the embedded broker's race: offsets 3-4 are acked but not stored yet when 5-6 are fetched
    guard: GapGuard[str] = GapGuard()
    guard.handled(P, 0)
    assert guard.cut(P, [1, 2, 5, 6], now_ms=0) == Cut(0, 2, seek_to=3)
    guard.handled(P, 2)
    assert guard.cut(P, [5, 6], now_ms=10) == Cut(0, 0, seek_to=3)
    assert guard.reread == 2
    assert guard.cut(P, [3, 4, 5, 6], now_ms=20) == Cut(0, 4)  # stored now: nothing lost
    assert guard.passed == 0


def test_a_hole_still_there_after_settle_ms_is_a_real_one_and_passed():
    # Kafka: a compacted record or a transaction marker leaves a hole for good
    guard: GapGuard[str] = GapGuard(settle_ms=1_000)
    guard.handled(P, 9)
    assert guard.cut(P, [12, 13], now_ms=0) == Cut(0, 0, seek_to=10)
    assert guard.cut(P, [12, 13], now_ms=999) == Cut(0, 0, seek_to=10)
    assert guard.cut(P, [12, 13], now_ms=1_000) == Cut(0, 2)
    assert guard.passed == 1


def test_a_new_hole_starts_its_own_wait():
    guard: GapGuard[str] = GapGuard(settle_ms=1_000)
    guard.handled(P, 9)
    assert guard.cut(P, [12], now_ms=0) == Cut(0, 0, seek_to=10)
    guard.handled(P, 10)  # 10 came; 11 is missing now, waited on from 900
    assert guard.cut(P, [12], now_ms=900) == Cut(0, 0, seek_to=11)
    assert guard.cut(P, [12], now_ms=1_500) == Cut(0, 0, seek_to=11)
    assert guard.cut(P, [12], now_ms=1_900) == Cut(0, 1)


def test_records_handled_already_are_skipped_and_a_rewind_expects_its_offset_again():
    guard: GapGuard[str] = GapGuard()
    guard.handled(P, 5)
    assert guard.cut(P, [4, 5, 6, 7], now_ms=0) == Cut(2, 2)
    guard.restart(P, 4)  # a failed batch is read again from 4
    assert guard.cut(P, [4, 5], now_ms=0) == Cut(0, 2)


def test_a_partition_assigned_afresh_expects_nothing():
    guard: GapGuard[str] = GapGuard()
    guard.handled(P, 5)
    assert guard.cut(P, [9], now_ms=0) == Cut(0, 0, seek_to=6)
    guard.forget([P])
    assert guard.cut(P, [9], now_ms=0) == Cut(0, 1)


@given(
    stored=st.lists(st.booleans(), min_size=1, max_size=60),
    chunk=st.integers(min_value=1, max_value=8),
)
def test_a_reader_handles_every_offset_exactly_once_in_order(stored, chunk):
    # some records are late (stored after later ones); the reader fetches from its position
    guard: GapGuard[str] = GapGuard(settle_ms=10**9)
    assert not guard.follows(P)
    guard.restart(P, 0)  # where the reader starts: the stage asks its group's commit
    assert guard.follows(P)
    late = {i for i, on_time in enumerate(stored) if not on_time}
    handled: list[int] = []
    position, now = 0, 0
    for _ in range(10 * len(stored) + 10):
        if len(handled) == len(stored):
            break
        now += 1
        if now % 3 == 0:
            late = set()  # the late ones are stored by now
        fetched = [o for o in range(position, len(stored)) if o not in late][:chunk]
        if not fetched:
            continue
        cut = guard.cut(P, fetched, now)
        kept = fetched[cut.skip : cut.skip + cut.keep]
        handled += kept
        if kept:
            guard.handled(P, kept[-1])
        position = cut.seek_to if cut.seek_to is not None else fetched[-1] + 1
    assert handled == list(range(len(stored)))
