"""What ``walstream replication status`` reads off the workers' metrics (issue 17 item 6): per
region of a namespace, the operations its writers settled by outcome, their retries, the
replication lag's quantiles and the operations later than the namespace's max_lag_s or
tombstone_ttl_s (the region is flagged), folded from Prometheus samples of one or more
processes (their counters and histogram buckets add up: each process counts what its own
writers did since it started).

Pure: samples come in as (name, labels, value); ``walstream.cli.replication`` scrapes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["RegionFigures", "bucket_quantile", "fold_samples"]

_OPS = "walstream_replication_operations_total"
_RETRIES = "walstream_replication_retries_total"
_LAG_BUCKET = "walstream_replication_lag_seconds_bucket"
_DLQ = "walstream_replication_dlq_records"
_OVER_MAX_LAG = "walstream_replication_over_max_lag_total"
_OVER_TTL = "walstream_replication_over_tombstone_ttl_total"


@dataclass
class RegionFigures:
    """One region's figures, summed over the processes scraped."""

    outcomes: dict[str, float] = field(default_factory=dict)
    retries: float = 0.0
    #: lag histogram: upper bound (s) -> cumulative count
    lag_buckets: dict[float, float] = field(default_factory=dict)
    #: open entries of the region's DLQ as the writers' gauge says (max over processes)
    dlq: float | None = None
    #: operations settled (or dead-lettered) later than max_lag_s after their write
    over_max_lag: float = 0.0
    #: sets later than tombstone_ttl_s by what became of them (dlq, applied)
    over_tombstone_ttl: dict[str, float] = field(default_factory=dict)

    @property
    def flag(self) -> str:
        """``TTL``: sets later than the tombstone TTL (dead-lettered, or redriven and applied);
        ``LAG``: operations later than max_lag_s; ``ok``: neither."""
        if sum(self.over_tombstone_ttl.values()) > 0:
            return "TTL"
        return "LAG" if self.over_max_lag > 0 else "ok"

    def outcome(self, name: str) -> int:
        return int(self.outcomes.get(name, 0))

    def lag_quantile(self, q: float) -> float | None:
        return bucket_quantile(self.lag_buckets, q)


def fold_samples(
    samples: Iterable[tuple[str, Mapping[str, str], float]], namespace: str
) -> dict[str, RegionFigures]:
    """The figures of ``namespace``'s regions in ``samples`` (region name -> figures)."""
    regions: dict[str, RegionFigures] = {}
    for name, labels, value in samples:
        if labels.get("namespace") != namespace or "region" not in labels:
            continue
        figures = regions.setdefault(labels["region"], RegionFigures())
        if name == _OPS:
            outcome = labels.get("outcome", "")
            figures.outcomes[outcome] = figures.outcomes.get(outcome, 0.0) + value
        elif name == _RETRIES:
            figures.retries += value
        elif name == _LAG_BUCKET:
            bound = float(labels.get("le", "+Inf"))
            figures.lag_buckets[bound] = figures.lag_buckets.get(bound, 0.0) + value
        elif name == _OVER_MAX_LAG:
            figures.over_max_lag += value
        elif name == _OVER_TTL:
            outcome = labels.get("outcome", "")
            figures.over_tombstone_ttl[outcome] = (
                figures.over_tombstone_ttl.get(outcome, 0.0) + value
            )
        elif name == _DLQ:
            figures.dlq = value if figures.dlq is None else max(figures.dlq, value)
    return regions


def bucket_quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """The upper bound of the histogram bucket holding quantile ``q`` (cumulative counts by
    upper bound, +Inf the total): the quantile is at most that. None: no observation;
    ``math.inf``: beyond the last finite bound."""
    total = buckets.get(math.inf, max(buckets.values(), default=0.0))
    if total <= 0:
        return None
    rank = q * total
    # the bucket holding the total (+Inf, or the largest count) always qualifies
    return next(bound for bound in sorted(buckets) if buckets[bound] >= rank)
