"""``walstream replication status``'s late figures (core.replication_status): the operations a
region's writers settled later than max_lag_s and the sets later than tombstone_ttl_s, summed
over the processes scraped, and the region's flag."""

from __future__ import annotations

from walstream.core.replication_status import fold_samples

OVER_LAG = "walstream_replication_over_max_lag_total"
OVER_TTL = "walstream_replication_over_tombstone_ttl_total"


def labels(region: str, **more: str) -> dict[str, str]:
    return {"namespace": "cache", "region": region, **more}


def test_late_figures_add_up_over_processes_and_flag_the_region() -> None:
    samples = [
        (OVER_LAG, labels("b"), 3.0),
        (OVER_LAG, labels("b"), 2.0),  # a second process
        (OVER_TTL, labels("b", outcome="dlq"), 1.0),
        (OVER_TTL, labels("b", outcome="dlq"), 1.0),
        (OVER_TTL, labels("b", outcome="applied"), 1.0),
        (OVER_LAG, labels("c"), 4.0),
        (OVER_TTL, labels("c", outcome="dlq"), 0.0),
        (OVER_LAG, labels("d"), 0.0),
        (OVER_LAG, {"namespace": "other", "region": "b"}, 9.0),
    ]
    figures = fold_samples(samples, "cache")
    b, c, d = figures["b"], figures["c"], figures["d"]
    assert b.over_max_lag == 5
    assert b.over_tombstone_ttl == {"dlq": 2, "applied": 1}
    assert b.flag == "TTL"
    assert (c.over_max_lag, c.flag) == (4, "LAG")
    assert (d.over_max_lag, d.flag) == (0, "ok")
