"""Backoff: exponential, capped, jittered within bounds, never negative, never overflowing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.core.backoff import next_delay_ms
from walstream.namespaces.config import BackoffPolicy

NO_JITTER = BackoffPolicy(base_ms=100, multiplier=2.0, cap_ms=1_000, jitter=0.0)


def test_exponential_then_capped():
    delays = [next_delay_ms(NO_JITTER, attempt, 0.5) for attempt in range(6)]
    assert delays == [100, 200, 400, 800, 1_000, 1_000]


def test_huge_attempt_numbers_do_not_overflow():
    assert next_delay_ms(NO_JITTER, 10_000, 0.5) == 1_000


def test_multiplier_one_is_constant():
    flat = BackoffPolicy(base_ms=250, multiplier=1.0, cap_ms=1_000, jitter=0.0)
    assert {next_delay_ms(flat, a, 0.3) for a in range(50)} == {250}


@given(
    base=st.integers(1, 10_000),
    extra=st.integers(0, 1_000_000),
    multiplier=st.floats(1.0, 10.0),
    jitter=st.floats(0.0, 1.0),
    attempt=st.integers(0, 200),
    rand=st.floats(0.0, 0.999999),
)
def test_delay_stays_within_the_jitter_band_and_cap(base, extra, multiplier, jitter, attempt, rand):
    policy = BackoffPolicy(base_ms=base, multiplier=multiplier, cap_ms=base + extra, jitter=jitter)
    delay = next_delay_ms(policy, attempt, rand)
    try:
        raw = min(policy.cap_ms, base * multiplier**attempt)
    except OverflowError:
        raw = policy.cap_ms
    assert 0 <= delay <= policy.cap_ms
    assert raw * (1 - jitter) - 1 <= delay <= raw * (1 + jitter) + 1


@pytest.mark.parametrize(("attempt", "rand"), [(-1, 0.5), (0, 1.0), (0, -0.1)])
def test_bad_arguments(attempt, rand):
    with pytest.raises(ValueError, match="must be"):
        next_delay_ms(NO_JITTER, attempt, rand)
