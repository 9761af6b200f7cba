"""Retry decisions and last-write-wins: pure, exhaustive where it matters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from walstream.core.lww import Outcome, Version, should_apply
from walstream.core.retry import DeadLetter, Failure, Retry, RetryPolicy, decide
from walstream.namespaces.config import BackoffPolicy

POLICY = RetryPolicy(
    backoff=BackoffPolicy(base_ms=100, multiplier=2.0, cap_ms=10_000, jitter=0.0),
    max_attempts=4,
    non_retryable=frozenset({"SchemaError"}),
)
TRANSIENT = Failure(error_class="TargetUnavailableError", message="503", retriable=True)


def run(policy, attempt, failure=TRANSIENT, now=1_000, first=1_000):
    return decide(
        policy, attempt=attempt, failure=failure, now_ms=now, first_attempt_ms=first, rand=0.5
    )


def test_transient_failures_retry_with_backoff_until_max_attempts():
    decisions = [run(POLICY, attempt) for attempt in range(4)]
    assert decisions[:3] == [
        Retry(attempt=1, delay_ms=100, not_before_ms=1_100),
        Retry(attempt=2, delay_ms=200, not_before_ms=1_200),
        Retry(attempt=3, delay_ms=400, not_before_ms=1_400),
    ]
    assert isinstance(decisions[3], DeadLetter)
    assert "gave up after 4 attempts" in decisions[3].reason


def test_permanent_and_non_retryable_errors_dead_letter_at_once():
    permanent = Failure(error_class="TargetRejectedError", message="409", retriable=False)
    assert "permanent" in run(POLICY, 0, permanent).reason
    schema = Failure(error_class="SchemaError", message="bad", retriable=True)
    assert "non-retryable" in run(POLICY, 0, schema).reason


def test_time_budget():
    budget = RetryPolicy(backoff=POLICY.backoff, max_attempts=100, budget_ms=1_000)
    assert isinstance(run(budget, 2, now=1_500, first=1_000), Retry)  # 500 + 400 <= 1000
    spent = run(budget, 2, now=1_700, first=1_000)  # 700 + 400 > 1000
    assert isinstance(spent, DeadLetter)
    assert "budget" in spent.reason


@given(attempt=st.integers(0, 50), max_attempts=st.integers(1, 60))
def test_never_more_than_max_attempts(attempt, max_attempts):
    policy = RetryPolicy(backoff=POLICY.backoff, max_attempts=max_attempts)
    decision = run(policy, attempt)
    if attempt + 1 >= max_attempts:
        assert isinstance(decision, DeadLetter)
    else:
        assert decision.attempt == attempt + 1 < max_attempts
        assert decision.not_before_ms >= 1_000


def test_lww_newer_wins_older_loses_duplicate_is_noop():
    held = Version(2_000, "b")
    assert should_apply(None, held) is Outcome.APPLY
    assert should_apply(held, Version(3_000, "c")) is Outcome.APPLY
    assert should_apply(held, Version(1_000, "a")) is Outcome.STALE
    assert should_apply(held, Version(2_000, "b")) is Outcome.DUPLICATE
    # same time: the token breaks the tie the same way everywhere
    assert should_apply(held, Version(2_000, "c")) is Outcome.APPLY
    assert should_apply(held, Version(2_000, "a")) is Outcome.STALE


@given(times=st.lists(st.integers(0, 20), min_size=1, max_size=12), order=st.randoms())
def test_lww_converges_whatever_the_delivery_order(times, order):
    """Any order of the same writes, each delivered twice, leaves the newest one."""
    # a write's token is unique to it; its redeliveries carry the same token and time
    writes = [Version(t, f"tok-{i:02d}") for i, t in enumerate(times)]

    def final(sequence):
        held = None
        for write in sequence:
            if should_apply(held, write) is Outcome.APPLY:
                held = write
        return held

    shuffled = list(writes) + list(writes)  # every write delivered twice
    order.shuffle(shuffled)
    expected = max(writes)
    assert final(shuffled) == expected
