"""walstream.metrics: the replication lag histogram's buckets are fine enough to compare p99s."""

from __future__ import annotations

import itertools

from prometheus_client import CollectorRegistry

from walstream.metrics import WalMetrics


def test_replication_lag_buckets_step_by_at_most_one_and_a_half_from_5ms_to_2_5s() -> None:
    registry = CollectorRegistry()
    metrics = WalMetrics.create(registry)
    metrics.replication_lag.labels("ns", "b").observe(0.05)
    bounds = sorted(
        float(sample.labels["le"])
        for family in registry.collect()
        if family.name == "walstream_replication_lag_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf"
    )
    assert bounds[0] <= 0.005
    assert bounds[-1] >= 60
    steps = [hi / lo for lo, hi in itertools.pairwise(bounds) if lo >= 0.005 and hi <= 2.5]
    assert steps
    assert max(steps) <= 1.5 + 1e-9, steps
