"""Per-key ordering decisions: a key's records are delivered in arrival order whatever fails,
other keys never wait, dead-lettering releases or holds the key as configured."""

from __future__ import annotations

from collections import deque
from random import Random

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.core.ordering import (
    AlreadyParked,
    Free,
    Go,
    KeyHead,
    KeyState,
    OnDlq,
    Overflow,
    Park,
    ParkAt,
    RecordRef,
    ReleaseNext,
    admit,
    arrive,
    blocked_by_failure,
    dead_lettered,
    dead_lettered_head,
    hand_to,
    head_from_json,
    head_to_json,
    hold,
    settled,
    settled_head,
    state_from_json,
    state_to_json,
)


def ref(record_id: str, offset: int = 0) -> RecordRef:
    return RecordRef(record_id, "wal.ns.log", 0, offset)


def test_a_free_key_goes_and_a_blocked_key_parks_later_records_once():
    assert arrive(None, ref("a")) == Go()
    state = blocked_by_failure(None, "a", now_ms=10)
    parked = arrive(state, ref("b", 1))
    assert isinstance(parked, Park)
    assert parked.state.behind == ("b",)
    assert arrive(parked.state, ref("b", 1)) == Park(parked.state)  # re-read after a restart
    assert arrive(parked.state, ref("a")) == Go()  # the head back from retry


def test_settling_the_head_hands_over_the_next_and_frees_the_key_at_the_end():
    state: KeyState | None = KeyState(head="a", since_ms=10, waiting=(ref("b", 1), ref("c", 2)))
    assert state is not None
    state, nxt = settled(state, "a", now_ms=20)
    assert nxt == ref("b", 1)
    assert state == KeyState(head="b", since_ms=20, waiting=(ref("c", 2),))
    assert state is not None
    state, nxt = settled(state, "b", now_ms=30)
    assert (state, nxt) == (KeyState(head="c", since_ms=30), ref("c", 2))
    assert state is not None
    assert settled(state, "c", now_ms=40) == (None, None)
    assert settled(None, "x", now_ms=40) == (None, None)  # a free key: nothing to release


def test_a_stale_copy_settling_changes_nothing():
    state = KeyState(head="a", since_ms=10, waiting=(ref("b", 1),))
    assert settled(state, "old", now_ms=20) == (state, None)
    # a stale copy failing while another record heads the key: the key keeps its head
    assert blocked_by_failure(state, "old", now_ms=20) == state


def test_state_round_trips_through_its_table_form():
    state = KeyState(head="a", since_ms=10, waiting=(ref("b", 1), ref("c", 2)), held=True)
    assert state_from_json(orjson.loads(orjson.dumps(state_to_json(state)))) == state


def test_dead_lettering_releases_or_holds_as_configured():
    state = KeyState(head="a", since_ms=10, waiting=(ref("b", 1),))
    released, nxt = dead_lettered(state, "a", OnDlq.RELEASE, now_ms=20)
    assert (released, nxt) == (KeyState(head="b", since_ms=20), ref("b", 1))

    held, nxt = dead_lettered(state, "a", OnDlq.HOLD, now_ms=20)
    assert nxt is None
    assert held is not None
    assert held.held
    assert held.behind == ("b",)  # the DLQ entry names them
    assert isinstance(arrive(held, ref("c", 2)), Park)  # still blocked
    # redriven: the head comes back, goes, and a new failure makes it an ordinary head again
    assert arrive(held, ref("a")) == Go()
    assert not blocked_by_failure(held, "a", now_ms=30).held
    # discarded instead: settled, the next one goes
    assert settled(held, "a", now_ms=30) == (KeyState(head="b", since_ms=30), ref("b", 1))
    # a first attempt dead-lettered at once (a 4xx) with hold blocks a key that was free
    assert dead_lettered(None, "z", OnDlq.HOLD, now_ms=5) == (
        KeyState(head="z", since_ms=5, held=True),
        None,
    )


class Simulation:
    """A worker over many keys driven by the pure functions, one record at a time."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.failures = dict(failures)  # record id -> transient failures before it succeeds
        self.states: dict[str, KeyState | None] = {}
        self.delivered: list[str] = []
        self.retry: deque[tuple[str, str]] = deque()  # (key, id) waiting in retry

    def attempt(self, key: str, record_id: str, now: int) -> None:
        if self.failures.get(record_id, 0) > 0:
            self.failures[record_id] -= 1
            self.states[key] = blocked_by_failure(self.states.get(key), record_id, now)
            self.retry.append((key, record_id))
            return
        self.delivered.append(record_id)
        state, nxt = settled(self.states.get(key), record_id, now)
        self.states[key] = state
        if nxt is not None:
            self.attempt(key, nxt.id, now)

    def arrive(self, key: str, record_id: str, now: int) -> None:
        decision = arrive(self.states.get(key), ref(record_id))
        if isinstance(decision, Park):
            self.states[key] = decision.state
        else:
            self.attempt(key, record_id, now)


def run_interleaved(sim: Simulation, ids: list[tuple[str, str, int]], rng: Random) -> None:
    """Arrivals (in order) and retries (in the order they were asked for) interleaved at
    random, each a millisecond after the last, until nothing is left."""
    now = 0
    pending = deque(ids)
    while pending or sim.retry:
        now += 1
        if pending and (not sim.retry or rng.random() < 0.5):
            key, record_id, _ = pending.popleft()
        else:
            key, record_id = sim.retry.popleft()
        sim.arrive(key, record_id, now)


@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 3)), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
)
def test_any_failure_pattern_keeps_every_keys_arrival_order(records, rng):
    ids = [(key, f"{key}{n}", fails) for n, (key, fails) in enumerate(records)]
    sim = Simulation({record_id: fails for _, record_id, fails in ids})
    run_interleaved(sim, ids, rng)
    for key in "abcd":
        expected = [record_id for k, record_id, _ in ids if k == key]
        assert [d for d in sim.delivered if d.startswith(key)] == expected
    assert all(state is None for state in sim.states.values())  # every key free at the end


# -- the table form: head record + one entry per parked record (issue 13 item 5) -------------


def test_a_park_numbers_its_entry_and_counts_it_in_the_head():
    head = hold(None, "a", now_ms=10)
    assert head == KeyHead(head="a", since_ms=10)
    parked = admit(head, ref("b", 1), max_parked=10)
    assert isinstance(parked, ParkAt)
    assert (parked.seq, parked.head.parked, parked.head.next) == (0, 1, 1)
    again = admit(parked.head, ref("c", 2), max_parked=10)
    assert isinstance(again, ParkAt)
    assert (again.seq, again.head.parked) == (1, 2)
    # read again after a crash: at or below the last offset parked from its partition
    assert admit(again.head, ref("b", 1), max_parked=10) == AlreadyParked()
    assert admit(again.head, RecordRef("b", "wal.ns.retry", 0, 1), max_parked=10) != AlreadyParked()
    assert admit(again.head, ref("a", 0), max_parked=10) == Go()  # the head itself


def test_past_max_parked_a_record_overflows_and_is_remembered():
    head = KeyHead(head="a", since_ms=10, first=5, next=7)
    over = admit(head, ref("z", 9), max_parked=2)
    assert isinstance(over, Overflow)
    assert over.head.parked == 2  # nothing parked
    assert admit(over.head, ref("z", 9), max_parked=2) == AlreadyParked()


def test_settling_the_head_releases_entry_first_and_frees_the_key_at_the_end():
    head = KeyHead(head="a", since_ms=10, first=3, next=5)
    assert settled_head(head, "other") is None  # a stale copy: nothing changes
    assert settled_head(head, "a") == ReleaseNext(3)
    nxt = hand_to(head, 3, ref("b", 1), now_ms=20)
    assert (nxt.head, nxt.since_ms, nxt.first, nxt.parked, nxt.via) == ("b", 20, 4, 1, None)
    inline = hand_to(head, 3, ref("b", 1), now_ms=20, via="a")
    assert (inline.via, inline.ref) == ("a", ref("b", 1))
    last = KeyHead(head="c", since_ms=30, first=5, next=5)
    assert settled_head(last, "c") == Free()
    assert settled_head(None, "c") is None


def test_dead_lettering_the_head_releases_or_holds():
    head = KeyHead(head="a", since_ms=10, next=1, via="x", ref=ref("a"))
    assert dead_lettered_head(head, "a", OnDlq.RELEASE, 20) == ReleaseNext(0)
    held = dead_lettered_head(head, "a", OnDlq.HOLD, 20)
    assert isinstance(held, KeyHead)
    assert held.held
    assert held.via is None  # a marker read again must not resume a held head
    assert dead_lettered_head(None, "z", OnDlq.HOLD, 5) == KeyHead(head="z", since_ms=5, held=True)
    again = hold(held, "a", 30)
    assert again is not None
    assert not again.held  # redriven and failing again: an ordinary head
    assert hold(held, "b", 30) is held  # another record: the head stays


def test_head_records_round_trip_and_the_old_form_is_told_apart():
    head = KeyHead(
        head="a",
        since_ms=10,
        held=True,
        first=4,
        next=9,
        tails=(("wal.ns.log", 0, 77),),
        via="m",
        ref=RecordRef("a", "wal.ns.log", 0, 70),
    )
    assert head_from_json(orjson.loads(orjson.dumps(head_to_json(head)))) == head
    old = state_to_json(KeyState(head="a", since_ms=10, waiting=(ref("b", 1),)))
    with pytest.raises(ValueError, match="not a head record"):
        head_from_json(old)


class TableSimulation(Simulation):
    """As ``Simulation``, over head records and numbered entries, like the worker's table."""

    def __init__(self, failures: dict[str, int]) -> None:
        super().__init__(failures)
        self.heads: dict[str, KeyHead | None] = {}
        self.entries: dict[tuple[str, int], RecordRef] = {}
        self.offsets = 0

    def attempt(self, key: str, record_id: str, now: int) -> None:
        if self.failures.get(record_id, 0) > 0:
            self.failures[record_id] -= 1
            self.heads[key] = hold(self.heads.get(key), record_id, now)
            self.retry.append((key, record_id))
            return
        self.delivered.append(record_id)
        head = self.heads.get(key)
        step = settled_head(head, record_id)
        if isinstance(step, Free):
            self.heads[key] = None
        elif isinstance(step, ReleaseNext):
            nxt = self.entries.pop((key, step.seq))
            assert head is not None
            self.heads[key] = hand_to(head, step.seq, nxt, now)
            self.attempt(key, nxt.id, now)

    def arrive(self, key: str, record_id: str, now: int) -> None:
        self.offsets += 1
        decision = admit(self.heads.get(key), ref(record_id, self.offsets), max_parked=1_000)
        if isinstance(decision, ParkAt):
            self.entries[(key, decision.seq)] = ref(record_id, self.offsets)
            self.heads[key] = decision.head
        else:
            assert decision == Go()
            self.attempt(key, record_id, now)


@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 3)), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
)
def test_the_table_form_keeps_every_keys_arrival_order_too(records, rng):
    ids = [(key, f"{key}{n}", fails) for n, (key, fails) in enumerate(records)]
    sim = TableSimulation({record_id: fails for _, record_id, fails in ids})
    run_interleaved(sim, ids, rng)
    for key in "abcd":
        expected = [record_id for k, record_id, _ in ids if k == key]
        assert [d for d in sim.delivered if d.startswith(key)] == expected
    assert all(head is None for head in sim.heads.values())
    assert sim.entries == {}
