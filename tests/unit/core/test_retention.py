"""Retention decisions (walstream.core.retention) and the namespace fields that choose them."""

from __future__ import annotations

import pytest

from walstream.core.retention import (
    Drift,
    Durability,
    config_drift,
    durability_for,
    retention_covers,
    retry_horizon_ms,
)
from walstream.errors import ConfigError
from walstream.namespaces.config import parse_namespace

DAY = 86_400_000
HOUR = 3_600_000


def test_retry_horizon_sums_every_backoff_at_full_jitter_up_to_the_cap():
    # 1 s doubling, 20 % jitter, cap 300 s, 10 attempts: 1.2+2.4+...+300 (256*1.2 > cap)
    horizon = retry_horizon_ms(
        max_attempts=10, base_ms=1000, multiplier=2.0, cap_ms=300_000, jitter=0.2,
        retry_budget_ms=None,
    )  # fmt: skip
    assert horizon == sum(int(1000 * 2**a * 1.2) for a in range(8)) + 300_000 + 300_000


def test_retry_horizon_with_a_budget_is_the_budget_plus_one_last_wait():
    horizon = retry_horizon_ms(
        max_attempts=1000, base_ms=1000, multiplier=100.0, cap_ms=60_000, jitter=0.5,
        retry_budget_ms=DAY,
    )  # fmt: skip
    assert horizon == DAY + 60_000


def test_retry_horizon_of_a_thousand_attempts_at_a_huge_multiplier_does_not_overflow():
    horizon = retry_horizon_ms(
        max_attempts=1000, base_ms=1, multiplier=100.0, cap_ms=300_000, jitter=1.0,
        retry_budget_ms=None,
    )  # fmt: skip
    assert horizon == 2 + 200 + 20_000 + 300_000 * 997


def test_unlimited_retention_covers_everything_and_finite_covers_shorter_only():
    assert retention_covers(-1, -1)
    assert retention_covers(-1, DAY)
    assert not retention_covers(7 * DAY, -1)
    assert retention_covers(8 * DAY, 7 * DAY)
    assert not retention_covers(6 * DAY, 7 * DAY)


def test_durability_is_capped_to_the_brokers_and_single_copy_is_flagged():
    assert durability_for(3, 2, 1) == Durability(1, 1)
    assert durability_for(3, 2, 1).single_copy
    assert durability_for(3, 2, 3) == Durability(3, 2)
    assert not durability_for(3, 2, 3).single_copy
    assert durability_for(3, 1, 3).single_copy  # three copies, but acks=all waits for one


def test_drift_names_weaker_settings_of_an_existing_topic():
    wanted = {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "min.insync.replicas": "2",
    }
    kafka_defaults = {
        "cleanup.policy": "delete",
        "retention.ms": "604800000",
        "retention.bytes": "-1",
        "min.insync.replicas": "1",
    }
    assert config_drift("t", wanted, kafka_defaults) == [
        Drift("t", "retention.ms", "604800000", "-1"),
        Drift("t", "min.insync.replicas", "1", "2"),
    ]
    assert config_drift("t", wanted, {**wanted, "min.insync.replicas": "3"}) == []
    compacted = config_drift("t", wanted, {**wanted, "cleanup.policy": "compact,delete"})
    assert [d.key for d in compacted] == ["cleanup.policy"]
    unset = config_drift("t", {"retention.ms": "-1"}, {})
    assert unset == [Drift("t", "retention.ms", None, "-1")]
    assert "broker's default" in unset[0].describe()


def test_namespace_retention_defaults_to_forever_and_round_trips():
    config = parse_namespace({"name": "orders"})
    assert (config.log_retention_ms, config.dlq_retention_ms) == (-1, -1)
    assert "log_retention_ms" not in config.to_json()  # older processes still read the event
    finite = parse_namespace(
        {"name": "orders", "log_retention_ms": 30 * DAY, "dlq_retention_ms": HOUR}
    )
    assert parse_namespace(finite.to_json()) == finite


@pytest.mark.parametrize("field", ["log_retention_ms", "dlq_retention_ms"])
@pytest.mark.parametrize("value", [0, -2, "7d", 1.5, True])
def test_a_retention_that_is_not_minus_one_or_milliseconds_names_its_field(field, value):
    with pytest.raises(ConfigError) as caught:
        parse_namespace({"name": "orders", field: value})
    assert caught.value.key == field


def test_log_retention_below_the_retry_horizon_plus_the_longest_tier_is_refused():
    base = {"name": "orders", "retry_budget_ms": 2 * DAY, "backoff": {"cap_ms": 60_000}}
    floor = 2 * DAY + 60_000 + DAY
    assert parse_namespace({**base, "log_retention_ms": floor}).log_retention_ms == floor
    with pytest.raises(ConfigError) as caught:
        parse_namespace({**base, "log_retention_ms": floor - 1})
    assert caught.value.key == "log_retention_ms"
    assert str(floor) in caught.value.reason
    assert "lost" in caught.value.reason


def test_key_ordered_log_retention_covers_the_longest_delay():
    base = {"name": "orders", "retry_budget_ms": DAY, "backoff": {"cap_ms": 60_000}}
    keyed = {**base, "ordering": "key", "max_delay_ms": 30 * DAY}
    floor = DAY + 60_000 + 30 * DAY  # a delayed head holds its key from the log
    assert parse_namespace({**keyed, "log_retention_ms": floor}).log_retention_ms == floor
    with pytest.raises(ConfigError, match="log_retention_ms"):
        parse_namespace({**keyed, "log_retention_ms": floor - 1})
    # the same retention is fine for an unordered namespace (its delayed writes skip the log)
    assert parse_namespace({**base, "max_delay_ms": 30 * DAY, "log_retention_ms": 3 * DAY})


@pytest.mark.parametrize("field", ["log_retention_ms", "dlq_retention_ms"])
def test_a_held_key_namespace_keeps_log_and_dlq_forever(field):
    held = {"name": "orders", "ordering": "key", "on_dlq": "hold", "retry_budget_ms": HOUR}
    with pytest.raises(ConfigError) as caught:
        parse_namespace({**held, field: 365 * DAY})
    assert caught.value.key == field
    assert "hold" in caught.value.reason
    assert parse_namespace({**held, field: -1})


def test_dlq_retention_under_an_hour_is_refused():
    with pytest.raises(ConfigError) as caught:
        parse_namespace({"name": "orders", "dlq_retention_ms": HOUR - 1})
    assert caught.value.key == "dlq_retention_ms"
    assert parse_namespace({"name": "orders", "dlq_retention_ms": HOUR}).dlq_retention_ms == HOUR
