"""Commit decisions: apply when complete, wait within the timeout, dead-letter after it, retry
failures with backoff, answer a re-send within the idempotency window, forget after it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from walstream.core.mutations import (
    SET_MISMATCH,
    AlreadyCommitted,
    Apply,
    CommitPolicy,
    Conflict,
    DeadLetter,
    Duplicate,
    Forget,
    Ignore,
    Marker,
    MutationLimits,
    Operation,
    Refused,
    Reject,
    Requeue,
    Stored,
    Tombstone,
    after_failure,
    committed,
    decode_tombstone,
    encode_tombstone,
    expired,
    expiry,
    leftover,
    live_tombstone,
    on_chunk,
    on_complete,
    on_forget,
    on_marker,
    op_chunks,
    txn_status,
    wake_marker,
)
from walstream.core.retry import Failure, RetryPolicy
from walstream.errors import PoisonRecordError
from walstream.namespaces.config import BackoffPolicy

POLICY = CommitPolicy(
    limits=MutationLimits(completion_timeout_ms=60_000),
    retry=RetryPolicy(
        backoff=BackoffPolicy(base_ms=1_000, multiplier=2.0, cap_ms=30_000, jitter=0.0),
        max_attempts=3,
    ),
)
T0 = 1_700_000_000_000
TRANSIENT = Failure(error_class="TargetUnavailableError", message="locked", retriable=True)


def chunk(seq, value=b"v"):
    op = Operation(op="put", table="t", id=f"k{seq}", value=value)
    return op_chunks("pds", "tx", seq, op, 1024)[0]


def marker(count=2, **kw):
    return Marker(**{"namespace": "pds", "txn_id": "tx", "op_count": count, "at_ms": T0, **kw})


def marking(state, m, *, now):
    """on_marker without a tombstone: a state always comes back."""
    new, decision = on_marker(state, None, m, POLICY, now_ms=now, rand=0.5)
    assert new is not None
    return new, decision


def chunking(state, c, *, now):
    return on_chunk(state, None, c, POLICY, now_ms=now)


def requeued(decision) -> Requeue:
    assert isinstance(decision, Requeue), decision
    return decision


def opened(*seqs, now=T0):
    state = None
    for seq in seqs:
        state, _, _ = chunking(state, chunk(seq), now=now)
    return state


def test_the_first_chunk_opens_the_transaction_with_its_deadline():
    state, outcome, deadline = chunking(None, chunk(0), now=T0)
    assert isinstance(outcome, Stored)
    assert deadline == Requeue(delay_ms=60_000, wake=1, reason="deadline of 60000 ms")
    assert (state.opened_at_ms, state.wake) == (T0, 1)
    state, outcome, deadline = chunking(state, chunk(1), now=T0 + 5)
    assert isinstance(outcome, Stored)
    assert deadline is None
    assert isinstance(chunking(state, chunk(1), now=T0)[1], Duplicate)
    assert isinstance(chunking(state, chunk(1, b"x"), now=T0)[1], Conflict)


def test_a_chunk_refused_on_arrival_opens_nothing():
    too_far = chunk(0)._replace(seq=1_000)
    assert chunking(None, too_far, now=T0)[:2][0] is None
    assert isinstance(chunking(None, too_far, now=T0)[1], Refused)


def test_a_chunk_of_a_committed_transaction_changes_nothing():
    tomb = Tombstone(T0, "d" * 32, 2)
    assert on_chunk(None, tomb, chunk(0), POLICY, now_ms=T0) == (
        None,
        AlreadyCommitted(committed_at_ms=T0),
        None,
    )


def test_a_complete_transaction_applies_from_its_first_unapplied_seq():
    state, decision = marking(opened(0, 1), marker(), now=T0)
    assert decision == Apply(from_seq=0)
    assert (state.count, state.marked_at_ms, state.wake) == (2, T0, 0)
    state = state.applied(0)
    _, decision = marking(state, marker(), now=T0)
    assert decision == Apply(from_seq=1)  # a redelivered marker resumes where progress is


def test_an_incomplete_transaction_waits_with_backoff_but_never_past_its_timeout():
    state, decision = marking(opened(0), marker(3), now=T0 + 1)
    assert decision == Requeue(delay_ms=2_000, wake=2, reason="waiting for seqs [1, 2]")
    assert wake_marker(state, decision) == marker(3, wake=2)  # what the delay tiers carry
    state, decision = marking(state, marker(3, wake=2), now=T0 + 2)
    assert decision.delay_ms == 4_000
    assert decision.wake == 3
    state, decision = marking(state, marker(3, wake=3), now=T0 + 59_000)
    assert decision.delay_ms == 1_000  # what is left of the timeout
    state, decision = marking(state, marker(3, wake=4), now=T0 + 60_000)
    assert decision == DeadLetter(
        reason="incomplete after 60000 ms (timeout 60000 ms): missing seqs [1, 2]",
        missing=(1, 2),
        progress=0,
    )
    assert state.dead == decision.reason


def test_a_marker_before_any_operation_opens_and_waits():
    state, decision = marking(None, marker(1), now=T0)
    assert isinstance(decision, Requeue)
    assert state.missing() == (0,)
    state, _, deadline = chunking(state, chunk(0), now=T0 + 1)
    assert deadline is None
    _, decision = marking(state, marker(1, wake=1), now=T0 + 2)
    assert decision == Apply(from_seq=0)


@pytest.mark.parametrize("redrive", [0, 1, 4])
def test_a_wake_of_no_open_transaction_opens_nothing(redrive):
    # e.g. its transaction was discarded from the DLQ meanwhile, or its expiry (of a state
    # dead-lettered after a redrive: redrive >= 1) dropped it and is read again
    stale = marker(2, wake=3, redrive=redrive)
    assert on_marker(None, None, stale, POLICY, now_ms=T0, rand=0.5) == (
        None,
        Ignore(reason="wake 3 of no open transaction"),
    )
    countless = marker(0, wake=3, redrive=redrive)  # a deadline wake's expiry: count 0
    assert on_marker(None, None, countless, POLICY, now_ms=T0, rand=0.5)[0] is None


def test_a_countless_redrive_revives_its_state_and_of_no_state_opens_one():
    state = opened(0, 2)
    state, decision = marking(state, marker(0, wake=state.wake), now=T0 + 60_000)
    assert isinstance(decision, DeadLetter)  # no completion marker came
    redriven = marker(0, redrive=1)  # what dlq redrive sends for it: count 0, wake 0
    revived, decision = marking(state, redriven, now=T0 + 70_000)
    assert isinstance(decision, Requeue)  # waits again for its marker
    assert (revived.dead, revived.redrive, revived.count) == (None, 1, None)
    # its rows expired before the redrive came: it opens a state (which finds no operations)
    fresh, decision = marking(None, redriven, now=T0 + 70_000)
    assert isinstance(decision, Requeue)
    assert (fresh.redrive, fresh.slots, fresh.count) == (1, {}, None)


def test_operations_whose_marker_never_comes_are_dead_lettered_at_their_deadline():
    state = opened(0, 2)
    wake = marker(0, wake=state.wake)
    state, decision = marking(state, wake, now=T0 + 60_000)
    assert isinstance(decision, DeadLetter)
    assert decision.reason.startswith("no completion marker after 60000 ms")
    assert decision.missing == (1,)


def test_only_the_latest_re_queued_marker_drives_the_commit():
    state, first = marking(opened(0), marker(2), now=T0)
    stale = marker(2, wake=1)  # the deadline wake, superseded by the client's marker
    assert marking(state, stale, now=T0) == (
        state,
        Ignore(reason=f"wake 1 superseded by {first.wake}"),
    )
    resent = marking(state, marker(2), now=T0)
    assert resent == (state, Ignore(reason=f"re-queued marker {first.wake} drives the commit"))
    assert isinstance(marking(state, marker(5), now=T0)[1], Reject)


def test_a_conflicting_marker_is_rejected_alone():
    state, _ = marking(opened(0, 1, 2), marker(3), now=T0)
    new, decision = marking(state, marker(2), now=T0)
    assert new is state
    assert decision == Reject(reason="count 2, the marker said 3")
    _, decision = marking(opened(0, 1, 2), marker(2), now=T0)
    assert decision == Reject(reason="count 2 but seq 2 arrived")


def test_apply_failures_retry_with_backoff_then_dead_letter_with_the_progress():
    state, _ = marking(opened(0, 1), marker(), now=T0)
    state = state.applied(0)
    delays = []
    for _ in range(2):
        state, failed = after_failure(state, TRANSIENT, POLICY, now_ms=T0, rand=0.5)
        decision = requeued(failed)
        delays.append(decision.delay_ms)
        assert decision.wake == state.wake
        assert marking(state, marker(wake=decision.wake), now=T0)[1] == Apply(from_seq=1)
    assert delays == [1_000, 2_000]
    state, gave_up = after_failure(state, TRANSIENT, POLICY, now_ms=T0, rand=0.5)
    assert gave_up == DeadLetter(
        reason="seq 1 of 2: gave up after 3 attempts: TargetUnavailableError: locked", progress=1
    )
    assert state.dead == gave_up.reason
    redelivered = marker(wake=state.wake)
    assert isinstance(marking(state, redelivered, now=T0)[1], Ignore)
    assert isinstance(marking(state, marker(), now=T0)[1], Ignore)


def test_progress_resets_the_attempts_and_a_permanent_failure_dead_letters_at_once():
    state, _ = marking(opened(0, 1), marker(), now=T0)
    state, _ = after_failure(state, TRANSIENT, POLICY, now_ms=T0, rand=0.5)
    assert state.applied(0).attempts == 0
    rejected = Failure(error_class="TargetRejectedError", message="no", retriable=False)
    _, decision = after_failure(state, rejected, POLICY, now_ms=T0, rand=0.5)
    assert isinstance(decision, DeadLetter)
    assert "permanent" in decision.reason


def test_a_redriven_marker_resumes_a_dead_lettered_transaction():
    state, _ = marking(opened(0), marker(2), now=T0)
    state, decision = marking(state, marker(2, wake=state.wake), now=T0 + 60_000)
    assert isinstance(decision, DeadLetter)
    state, _, _ = chunking(state, chunk(1), now=T0 + 70_000)  # a late operation
    redriven = marker(2, wake=1, redrive=1)  # whatever wake it carried
    state, decision = marking(state, redriven, now=T0 + 80_000)
    assert decision == Apply(from_seq=0)
    assert (state.dead, state.redrive, state.wake, state.opened_at_ms) == (None, 1, 1, T0 + 80_000)
    # read again after a crash, the redriven marker still drives
    assert isinstance(marking(state, redriven, now=T0)[1], Apply)


def test_only_a_set_mismatch_dead_letter_names_its_kind():
    state = opened(0, 1)
    dead, decision = marking(state, marker(digest="0" * 32), now=T0)
    assert isinstance(decision, DeadLetter)
    assert decision.kind == SET_MISMATCH == "set_mismatch"  # the DLQ entry's class tells it
    assert dead.dead == decision.reason
    # the set its marker names: applied
    held = marking(state, marker(), now=T0)[0].set_digest()
    assert marking(state, marker(digest=held), now=T0)[1] == Apply(from_seq=0)
    # incomplete at its timeout, or its apply given up: no kind (the agent's class)
    waiting, _ = marking(opened(0), marker(), now=T0)
    _, timed_out = marking(waiting, marker(wake=waiting.wake), now=T0 + 60_000)
    assert isinstance(timed_out, DeadLetter)
    assert timed_out.kind is None
    rejected = Failure(error_class="TargetRejectedError", message="no", retriable=False)
    _, gave_up = after_failure(state, rejected, POLICY, now_ms=T0, rand=0.5)
    assert isinstance(gave_up, DeadLetter)
    assert gave_up.kind is None


def test_a_committed_transaction_leaves_a_tombstone_that_answers_re_sends_then_is_forgotten():
    state, _ = marking(opened(0, 1), marker(), now=T0)
    with pytest.raises(ValueError, match="0 of 2"):
        committed(state, POLICY.limits, now_ms=T0)
    state = state.applied(0).applied(1)
    tomb, forget, due = committed(state, POLICY.limits, now_ms=T0 + 9)
    assert tomb == Tombstone(T0 + 9, state.set_digest(), 2)
    assert forget == Forget("pds", "tx", T0 + 9)
    assert due == T0 + 9 + 24 * 3_600_000
    assert decode_tombstone(encode_tombstone(tomb)) == tomb
    resent = marker(digest=state.set_digest())
    assert on_marker(None, tomb, resent, POLICY, now_ms=T0, rand=0.5) == (
        None,
        AlreadyCommitted(committed_at_ms=T0 + 9),
    )
    assert on_marker(None, tomb, marker(), POLICY, now_ms=T0, rand=0.5)[1] == AlreadyCommitted(
        committed_at_ms=T0 + 9
    )
    other = marker(digest="e" * 32)
    assert on_marker(None, tomb, other, POLICY, now_ms=T0, rand=0.5)[1] == Reject(
        reason=f"txn tx committed at {T0 + 9} with another operation set: a txn id is not "
        "reused within the idempotency window"
    )
    # a client's marker (no digest) of another count: another transaction under the id
    assert on_marker(None, tomb, marker(3), POLICY, now_ms=T0, rand=0.5)[1] == Reject(
        reason=f"txn tx committed at {T0 + 9} with 2 operations, not 3: a txn id is not "
        "reused within the idempotency window"
    )
    # a wake of the transaction from before its marker came (count 0) tells nothing
    late_wake = marker(0, wake=1)
    assert on_marker(None, tomb, late_wake, POLICY, now_ms=T0, rand=0.5)[1] == AlreadyCommitted(
        committed_at_ms=T0 + 9
    )
    assert on_forget(tomb, forget)
    assert not on_forget(tomb, forget._replace(committed_at_ms=T0))  # a newer tombstone stays
    assert not on_forget(None, forget)


@pytest.mark.parametrize("raw", [b"{", b'{"v": 2}', b'{"v": 1, "at": 1}', b"[]"])
def test_an_unreadable_tombstone_is_poison(raw):
    with pytest.raises(PoisonRecordError, match="tombstone"):
        decode_tombstone(raw)


def test_the_status_follows_the_transaction_from_open_to_committed():
    def status(state):
        body = txn_status(state, None)
        assert body is not None
        return body

    assert txn_status(None, None) is None
    state = opened(0)
    assert status(state) == {
        "status": "open",
        "operations": None,
        "received": 1,
        "progress": 0,
        "missing": [],
        "opened_at_ms": T0,
    }
    state, _ = marking(state, marker(2), now=T0)
    assert status(state)["missing"] == [1]
    state, _, _ = chunking(state, chunk(1), now=T0)
    state = state.applied(0)
    assert (status(state)["status"], status(state)["progress"]) == ("committing", 1)
    refused = Failure(error_class="x", message="no", retriable=False)
    dead, gave_up = after_failure(state, refused, POLICY, now_ms=T0, rand=0.5)
    assert isinstance(gave_up, DeadLetter)
    assert (status(dead)["status"], status(dead)["reason"]) == ("dead_lettered", gave_up.reason)
    tomb = Tombstone(T0 + 1, "d" * 32, 2)
    assert txn_status(None, tomb) == {
        "status": "committed",
        "committed_at_ms": T0 + 1,
        "operations": 2,
    }


def test_the_chunk_completing_a_waiting_transaction_wakes_its_commit_now():
    state = opened(0)
    state, decision = marking(state, marker(count=2), now=T0 + 1)
    waiting = requeued(decision).wake
    before = state
    after, outcome, _ = chunking(state, chunk(1), now=T0 + 2)
    assert isinstance(outcome, Stored)
    woken, wake = on_complete(before, after)
    assert wake == Requeue(
        delay_ms=0, wake=waiting + 1, reason="complete: its last operation arrived"
    )
    assert woken.wake == waiting + 1  # the waiting wake is superseded
    # the woken marker drives the commit
    _, applied = marking(woken, wake_marker(woken, wake), now=T0 + 3)
    assert applied == Apply(from_seq=0)


def test_no_wake_for_a_chunk_that_does_not_complete_a_waiting_transaction():
    unmarked = opened(0)
    assert on_complete(unmarked, opened(0, 1)) == (opened(0, 1), None)  # no marker yet
    state, _ = marking(opened(0), marker(count=3), now=T0 + 1)
    partial, _, _ = chunking(state, chunk(1), now=T0 + 2)
    assert on_complete(state, partial) == (partial, None)  # still missing seq 2
    done, _, _ = chunking(partial, chunk(2), now=T0 + 3)
    assert on_complete(done, done) == (done, None)  # complete before this chunk
    dead = replace(done, dead="timeout")
    assert on_complete(partial, dead) == (dead, None)  # only a redrive resumes it


def test_a_state_beside_its_tombstone_is_a_commits_leftover():
    tomb = Tombstone(T0, "d" * 32, 2)
    state = opened(0)
    assert leftover(state, tomb)
    assert leftover(opened(0, now=T0 + 5_000), tomb)  # a worker's clock a little ahead
    assert not leftover(state, None)  # an open transaction
    assert not leftover(None, tomb)  # committed and cleaned up


WINDOW = POLICY.limits.idempotency_window_ms


def test_a_tombstone_counts_only_while_its_window_lasts():
    tomb = Tombstone(T0, "d" * 32, 2)
    assert live_tombstone(tomb, POLICY.limits, now_ms=T0 + WINDOW - 1) == tomb
    assert live_tombstone(tomb, POLICY.limits, now_ms=T0 + WINDOW) is None
    assert live_tombstone(None, POLICY.limits, now_ms=T0) is None
    longer = MutationLimits(idempotency_window_ms=2 * WINDOW)
    assert live_tombstone(tomb, longer, now_ms=T0 + WINDOW) == tomb


def test_a_txn_id_reused_once_the_window_ended_commits_though_its_forget_is_late():
    # committed at T0; the window ended, the Forget that drops the tombstone is not handled yet
    tomb = Tombstone(T0, "d" * 32, 1)
    late = T0 + WINDOW + 3_600_000
    assert on_chunk(None, tomb, chunk(0), POLICY, now_ms=T0 + WINDOW - 1)[1] == AlreadyCommitted(
        committed_at_ms=T0
    )  # within the window: a re-send
    state, outcome, deadline = on_chunk(None, tomb, chunk(0), POLICY, now_ms=late)
    assert isinstance(outcome, Stored)  # a new transaction under the id
    assert state is not None
    assert deadline is not None
    # the new state beside the old tombstone is no commit's leftover (not deleted when read)
    assert not leftover(state, tomb)
    state, decision = on_marker(state, tomb, marker(1), POLICY, now_ms=late + 1, rand=0.5)
    assert decision == Apply(from_seq=0)
    # its status is its own, not the old tombstone's "committed"
    body = txn_status(state, tomb)
    assert body is not None
    assert body["status"] == "committing"
    assert txn_status(None, tomb) == {"status": "committed", "committed_at_ms": T0, "operations": 1}
    # a client's marker first opens it too (another count than the old one: not rejected)
    state, decision = on_marker(None, tomb, marker(3), POLICY, now_ms=late, rand=0.5)
    assert isinstance(decision, Requeue)
    assert state is not None
    assert state.count == 3
    # the late Forget drops the old tombstone only
    assert on_forget(tomb, Forget("pds", "tx", T0))


def test_a_dead_lettered_transaction_expires_unless_a_redrive_revived_it():
    state, decision = marking(opened(0), marker(count=2), now=T0 + 1)
    state, decision = marking(state, wake_marker(state, requeued(decision)), now=T0 + 60_000)
    assert isinstance(decision, DeadLetter)
    dead, wake = expiry(state, POLICY.limits)
    assert wake.delay_ms == POLICY.limits.idempotency_window_ms
    assert wake.wake == state.wakes + 1
    expire = wake_marker(dead, wake)
    assert expired(dead, expire)
    # its wake is ignored by on_marker (dead-lettered): only expired() acts on it
    assert isinstance(marking(dead, expire, now=T0 + 2)[1], Ignore)
    revived, _ = marking(dead, marker(count=2, redrive=1), now=T0 + 3)
    assert not expired(revived, expire)  # a redrive came meanwhile
    assert not expired(None, expire)  # gone already
    assert not expired(dead, expire._replace(wake=0))  # a client's marker never expires it
    open_state = opened(0)
    assert not expired(open_state, wake_marker(open_state, Requeue(delay_ms=1, wake=1, reason="")))
