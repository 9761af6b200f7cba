"""Circuit breaker, delay routing and times: pure decisions, no loop."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.core.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from walstream.core.delay import (
    LEAD_MS,
    TIERS_MS,
    Deliver,
    GiveUp,
    Resend,
    Tier,
    Timer,
    after_send_failure,
    delay_headers,
    next_stop,
    parse_delay_headers,
    resend_delay_ms,
)
from walstream.core.times import parse_time_ms
from walstream.topology import delay_topic

POLICY = BreakerPolicy(threshold=3, base_open_ms=1_000, max_open_ms=4_000)


def test_breaker_opens_after_threshold_transient_failures_in_a_row():
    breaker = CircuitBreaker(POLICY)
    for _ in range(2):
        breaker.record_failure(0)
    assert breaker.allow(0)
    breaker.record_failure(0)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(999)
    assert breaker.retry_at_ms(500) == 1_000


def test_a_success_resets_the_count():
    breaker = CircuitBreaker(POLICY)
    breaker.record_failure(0)
    breaker.record_failure(0)
    breaker.record_success()
    breaker.record_failure(0)
    assert breaker.state is BreakerState.CLOSED


def test_half_open_lets_one_probe_and_doubles_the_wait_on_failure_up_to_the_cap():
    breaker = CircuitBreaker(POLICY)
    for _ in range(3):
        breaker.record_failure(0)
    assert breaker.allow(1_000)  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(1_000)  # only one probe at a time
    breaker.record_failure(1_000)
    assert breaker.open_until_ms == 3_000
    assert breaker.allow(3_000)
    breaker.record_failure(3_000)
    assert breaker.open_until_ms == 7_000
    assert breaker.allow(7_000)
    breaker.record_failure(7_000)
    assert breaker.open_until_ms == 11_000  # capped at max_open_ms
    assert breaker.allow(11_000)
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow(11_000)


@given(due=st.integers(0, 10**12), now=st.integers(0, 10**12))
def test_next_stop_never_waits_past_the_due_time(due, now):
    stop = next_stop(due, now)
    if due <= now:
        assert isinstance(stop, Deliver)
    elif due - now < TIERS_MS[0] + LEAD_MS:
        assert stop == Timer(due)
    else:
        assert isinstance(stop, Tier)
        # it leaves the tier at least LEAD_MS before the due time
        assert stop.delay_ms + LEAD_MS <= due - now
        bigger = [t for t in TIERS_MS if t > stop.delay_ms]
        assert not bigger or bigger[0] + LEAD_MS > due - now  # and it is the largest that fits


def test_a_week_hops_down_the_tiers_and_arrives_on_time():
    now, due, hops = 0, 7 * 86_400_000 + 12_345, 0
    while True:
        stop = next_stop(due, now)
        if isinstance(stop, Deliver):
            break
        now = stop.due_ms if isinstance(stop, Timer) else now + stop.delay_ms
        hops += 1
        assert now <= due
    assert now == due
    assert hops <= 20


def test_delay_headers_round_trip_and_reject_garbage():
    parsed = parse_delay_headers(delay_headers(123, "wal.a.retry", 3))
    assert parsed is not None
    assert (parsed.due_ms, parsed.dest_topic, parsed.dest_partition) == (123, "wal.a.retry", 3)
    assert parse_delay_headers([("wal-due", b"x")]) is None
    assert parse_delay_headers([]) is None


def test_a_missing_destination_is_given_up_only_after_the_grace():
    tried: dict[str, Any] = {
        "tries": 3,
        "failing_since_ms": 1_000,
        "grace_ms": 60_000,
        "error": "no partition 9",
    }
    assert after_send_failure(permanent=True, now_ms=60_999, **tried) == Resend(2_000)
    decision = after_send_failure(permanent=True, now_ms=61_000, **tried)
    assert isinstance(decision, GiveUp)
    assert "60000 ms" in decision.reason
    assert "no partition 9" in decision.reason


@given(tries=st.integers(1, 10**6), failing_ms=st.integers(0, 10**12))
def test_a_transient_failure_is_never_given_up_and_waits_a_bounded_time(tries, failing_ms):
    decision = after_send_failure(
        permanent=False, tries=tries, failing_since_ms=0, now_ms=failing_ms, grace_ms=0
    )
    assert isinstance(decision, Resend)
    assert 500 <= decision.after_ms <= 5_000


def test_resends_back_off_from_half_a_second_to_five():
    assert [resend_delay_ms(t) for t in (1, 2, 3, 4, 5, 50)] == [
        500,
        1_000,
        2_000,
        4_000,
        5_000,
        5_000,
    ]


def test_tier_topic_names():
    assert delay_topic("walstream", 0) == "walstream.delay.timer"
    assert delay_topic("walstream", 1_000) == "walstream.delay.1s"
    assert delay_topic("walstream", 600_000) == "walstream.delay.10m"
    assert delay_topic("eu", 86_400_000) == "eu.delay.1d"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000000", 1_700_000_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000_000),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
        ("-2h", 1_700_000_000_000 - 7_200_000),
        ("-30s", 1_700_000_000_000 - 30_000),
    ],
)
def test_times(text, expected):
    assert parse_time_ms(text, 1_700_000_000_000) == expected


def test_bad_time_says_what_was_expected():
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time_ms("yesterday", 0)
