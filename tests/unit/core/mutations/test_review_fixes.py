"""The review's defects, fixed (issue 18; the review's own tests are in test_review.py): what
else each fix promises, beyond the case the review proved."""

from __future__ import annotations

from walstream.core.dlq.mutations import missing_seqs
from walstream.core.mutations import (
    Apply,
    CommitPolicy,
    DeadLetter,
    Ignore,
    Marker,
    MutateItems,
    MutationLimits,
    Operation,
    Reject,
    items_records,
    on_chunk,
    on_marker,
    txn_status,
)

NS = "pds"
TXN = "t1"
T0 = 1_700_000_000_000
POLICY = CommitPolicy(limits=MutationLimits(completion_timeout_ms=60_000))


def _items(values: list[bytes]) -> MutateItems:
    ops = tuple(
        Operation(op="put", table="items", id=f"k{i}", value=v) for i, v in enumerate(values)
    )
    return MutateItems(txn_id=TXN, operations=ops)


def _chunks(state, records, now=T0):
    for record in records:
        state, _, _ = on_chunk(state, None, record, POLICY, now_ms=now)
    return state


def _marking(state, m, now=T0):
    new, decision = on_marker(state, None, m, POLICY, now_ms=now, rand=0.5)
    assert new is not None
    return new, decision


# -- a late marker of a dead-lettered transaction ---------------------------------------------


def test_a_late_marker_of_a_dead_lettered_transaction_is_kept_not_acted_on():
    records, late = items_records(NS, _items([b"a", b"b"]), 1024, at_ms=T0 + 61_000)
    state = _chunks(None, records)
    state, decision = _marking(state, Marker(NS, TXN, 0, T0, wake=1), now=T0 + 60_000)
    assert isinstance(decision, DeadLetter)
    assert missing_seqs(decision.reason) == []  # every operation came; no marker
    state, decision = _marking(state, late, now=T0 + 61_000)
    assert isinstance(decision, Ignore)  # only a redrive resumes it
    assert (state.count, state.marked_at_ms, state.marker_digest) == (2, late.at_ms, late.digest)
    assert state.dead is not None
    body = txn_status(state, None)
    assert body is not None
    assert (body["status"], body["operations"]) == ("dead_lettered", 2)
    # a late marker contradicting what arrived is still rejected alone, the state untouched
    before = _chunks(None, records)
    before, _ = _marking(before, Marker(NS, TXN, 0, T0, wake=1), now=T0 + 60_000)
    after, decision = _marking(before, Marker(NS, TXN, 1, T0 + 61_000), now=T0 + 61_000)
    assert isinstance(decision, Reject)
    assert after is before


# -- the marker's operation set ---------------------------------------------------------------


def test_a_mutate_items_whose_set_is_held_applies():
    records, marker = items_records(NS, _items([b"a", b"b"]), 1024, at_ms=T0)
    state = _chunks(None, records)
    state, decision = _marking(state, marker)
    assert decision == Apply(from_seq=0)
    assert state.set_digest() == marker.digest


def test_a_mixed_operation_set_is_dead_lettered_naming_the_mismatch_and_stays_so():
    first, _ = items_records(NS, _items([b"a0", b"a1"]), 1024, at_ms=T0)
    second, marker = items_records(NS, _items([b"b0", b"b1"]), 1024, at_ms=T0 + 5)
    state = _chunks(None, first[:1])  # the first request: seq 0 landed
    state = _chunks(state, second)  # the retry: seq 0 conflicts, seq 1 is kept
    state, decision = _marking(state, marker, now=T0 + 6)
    assert isinstance(decision, DeadLetter), decision
    assert "operation set mismatch" in decision.reason
    assert marker.digest is not None
    assert marker.digest in decision.reason
    assert state.set_digest() in decision.reason
    assert (decision.progress, decision.missing) == (0, ())
    assert missing_seqs(decision.reason) == []
    assert state.dead == decision.reason
    body = txn_status(state, None)
    assert body is not None
    assert body["status"] == "dead_lettered"
    # its redrive finds the same mismatch: dead-lettered again, never applied
    entry = Marker(NS, TXN, 2, T0 + 5, marker.digest, redrive=state.redrive)
    state, decision = _marking(state, entry._replace(redrive=1), now=T0 + 10)
    assert isinstance(decision, DeadLetter)
    assert "mismatch" in decision.reason
    assert state.redrive == 1


def test_a_marker_naming_no_set_applies_the_operations_held():
    records, marker = items_records(NS, _items([b"a", b"b"]), 1024, at_ms=T0)
    state = _chunks(None, records)
    _, decision = _marking(state, marker._replace(digest=None))  # the per-operation routes
    assert decision == Apply(from_seq=0)


def test_a_wake_checks_the_set_its_transaction_s_marker_named():
    first, _ = items_records(NS, _items([b"a0", b"a1"]), 1024, at_ms=T0)
    second, marker = items_records(NS, _items([b"b0", b"b1"]), 1024, at_ms=T0 + 5)
    state = _chunks(None, [first[0], second[1]])
    waiting = _chunks(None, [second[1]])
    waiting, decision = _marking(waiting, marker, now=T0 + 6)  # seq 0 missing: re-queued
    assert not isinstance(decision, (Apply, DeadLetter))
    # seq 0 then arrives from the first request (its write was answered FALSE, then landed)
    waiting = _chunks(waiting, [first[0]], now=T0 + 7)
    assert waiting.slots == state.slots
    wake = Marker(NS, TXN, 2, T0 + 5, wake=waiting.wake)
    _, decision = _marking(waiting, wake, now=T0 + 8)
    assert isinstance(decision, DeadLetter)
    assert "mismatch" in decision.reason
