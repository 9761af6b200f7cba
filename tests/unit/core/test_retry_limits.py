"""Retry limits (pure): history bounded in encoded bytes, limits at breaker deferral, and the
API's record bound below the worker's producer limit."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from walstream.core.limits import WORKER_ALLOWANCE_BYTES, max_record_bytes
from walstream.core.retry import (
    DeadLetter,
    RetryPolicy,
    bound_history,
    history_bytes,
    may_defer,
)
from walstream.records import AttemptError

entries = st.builds(
    AttemptError,
    at_ms=st.integers(0, 10**13),
    attempt=st.integers(0, 10_000),
    error_class=st.text(max_size=100),
    message=st.text(max_size=500),
)


def encoded(history) -> int:
    return len(orjson.dumps([h._asdict() for h in history])) if history else 0


@settings(max_examples=50)
@given(st.lists(entries, max_size=60).map(tuple))
def test_history_bytes_is_exactly_what_the_envelope_encodes(history):
    assert history_bytes(history) == encoded(history)


@settings(max_examples=50)
@given(st.lists(entries, min_size=1, max_size=80).map(tuple), st.integers(200, 20_000))
def test_bound_history_keeps_the_first_and_the_latest_within_the_bound(history, bound):
    kept = bound_history(history, bound)
    assert encoded(kept) <= bound
    if encoded(history) <= bound:
        assert kept == history
        return
    latest = [h for h in kept if h is not history[0]] if kept and kept[0] is history[0] else kept
    assert tuple(latest) == history[len(history) - len(latest) :]  # a suffix: the latest ones
    if kept and encoded(history[:1]) + 2 <= bound:
        assert kept[0] is history[0]


def test_a_thousand_failures_keep_a_few_kib():
    history = tuple(AttemptError(10**12 + i, i, "http_503", "e" * 500) for i in range(1000))
    kept = bound_history(history, 16 * 1024)
    assert encoded(kept) <= 16 * 1024
    assert kept[0].attempt == 0
    assert kept[-1].attempt == 999
    assert [h.attempt for h in kept[1:]] == list(range(1000 - len(kept) + 1, 1000))


def test_deferral_limits():
    policy = RetryPolicy(max_attempts=5, budget_ms=10_000)
    assert may_defer(policy, attempt=4, until_ms=9_000, first_attempt_ms=0) is None
    assert isinstance(may_defer(policy, attempt=5, until_ms=1, first_attempt_ms=0), DeadLetter)
    late = may_defer(policy, attempt=0, until_ms=10_001, first_attempt_ms=0)
    assert isinstance(late, DeadLetter)
    assert "budget" in late.reason
    unbounded = RetryPolicy(max_attempts=5)
    assert may_defer(unbounded, attempt=0, until_ms=10**12, first_attempt_ms=0) is None


def test_the_api_bound_leaves_the_history_and_the_allowance():
    assert max_record_bytes(1_000_000, 16_384) == 1_000_000 - 16_384 - WORKER_ALLOWANCE_BYTES
