"""The figures ``walstream replication status`` folds from the workers' metrics
(walstream.core.replication_status)."""

from __future__ import annotations

import math

from walstream.core.replication_status import bucket_quantile, fold_samples

OPS = "walstream_replication_operations_total"
LAG = "walstream_replication_lag_seconds_bucket"


def lag(region: str, le: str, count: float, ns: str = "cache"):
    return (LAG, {"namespace": ns, "region": region, "le": le}, count)


def test_two_processes_add_up_per_region_and_other_namespaces_are_left_out():
    samples = [
        (OPS, {"namespace": "cache", "region": "b", "outcome": "applied"}, 10.0),
        (OPS, {"namespace": "cache", "region": "b", "outcome": "applied"}, 5.0),  # 2nd process
        (OPS, {"namespace": "cache", "region": "b", "outcome": "stale"}, 2.0),
        (OPS, {"namespace": "other", "region": "b", "outcome": "applied"}, 99.0),
        ("walstream_replication_retries_total", {"namespace": "cache", "region": "c"}, 3.0),
        ("walstream_replication_retries_total", {"namespace": "cache", "region": "c"}, 4.0),
        ("walstream_replication_dlq_records", {"namespace": "cache", "region": "c"}, 1.0),
        ("walstream_replication_dlq_records", {"namespace": "cache", "region": "c"}, 2.0),
        ("walstream_deliveries_total", {"namespace": "cache", "outcome": "delivered"}, 7.0),
        # a region's figure status does not fold (the backlog comes from the topics)
        ("walstream_replication_backlog_records", {"namespace": "cache", "region": "b"}, 5.0),
    ]
    regions = fold_samples(samples, "cache")
    assert set(regions) == {"b", "c"}
    assert regions["b"].outcome("applied") == 15
    assert regions["b"].outcome("stale") == 2
    assert regions["b"].outcome("dlq") == 0
    assert regions["b"].dlq is None  # not reported
    assert regions["c"].retries == 7
    assert regions["c"].dlq == 2  # each process reports the whole DLQ: the max


def test_lag_quantiles_are_the_upper_bound_of_their_bucket_summed_over_processes():
    samples = [
        lag("b", "0.01", 50),
        lag("b", "0.05", 90),
        lag("b", "0.1", 99),
        lag("b", "0.5", 100),
        lag("b", "+Inf", 100),
        lag("b", "0.01", 50),  # a second process, the same shape
        lag("b", "0.05", 90),
        lag("b", "0.1", 99),
        lag("b", "0.5", 100),
        lag("b", "+Inf", 100),
    ]
    figures = fold_samples(samples, "cache")["b"]
    assert figures.lag_quantile(0.5) == 0.01
    assert figures.lag_quantile(0.9) == 0.05
    assert figures.lag_quantile(0.99) == 0.1
    assert figures.lag_quantile(1.0) == 0.5


def test_a_histogram_without_observations_has_no_quantile_and_one_past_its_bounds_is_inf():
    assert bucket_quantile({}, 0.5) is None
    assert bucket_quantile({0.1: 0, math.inf: 0}, 0.5) is None
    assert bucket_quantile({0.1: 1, math.inf: 10}, 0.5) == math.inf
