"""Every Prometheus metric walstream exports, declared in one place.

``WalMetrics.create(registry)`` builds them on a registry (tests pass a fresh one). Labels take
bounded values only: namespace, stage, outcome, reason class, target kind; never a key or token.
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["WalMetrics"]

#: Replication lag: steps of at most 1.5x from 5 ms to 2.5 s, so two p99s read off the histogram
#: compare within 2x (the issue's outage criterion); 2x-wide buckets could read one lag as two.
_LAG_BUCKETS = (
    0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.045, 0.0675, 0.1, 0.15, 0.2, 0.3, 0.45, 0.675,
    1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 30.0, 120.0,
)  # fmt: skip
_LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)


class WalMetrics(NamedTuple):
    deliveries: Counter
    dlq_records_written: Counter
    dlq_open: Gauge
    dlq_oldest_age: Gauge
    breaker_open: Gauge
    delay_pending: Gauge
    delay_oldest_due: Gauge
    delivery_lateness: Histogram
    delay_hops: Counter
    blocked_keys: Gauge
    blocked_waiting: Gauge
    blocked_oldest_age: Gauge
    namespace_unreadable: Gauge
    dlq_write_failing: Gauge
    emit_refused: Counter
    replication_lag: Histogram
    replication_ops: Counter
    replication_retries: Counter
    replication_backlog: Gauge
    replication_dlq: Gauge
    replication_over_max_lag: Counter
    replication_over_tombstone_ttl: Counter
    mutation_open: Gauge
    mutation_oldest_open_age: Gauge
    mutation_commits: Counter
    mutation_operations_applied: Counter
    mutation_requeues: Counter
    mutation_dead_letters: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry, prefix: str = "walstream") -> WalMetrics:
        return cls(
            deliveries=Counter(
                f"{prefix}_deliveries",
                "Delivery attempts by outcome (delivered, retry, dead, delayed, duplicate)",
                ["namespace", "stage", "outcome"],
                registry=registry,
            ),
            dlq_records_written=Counter(
                f"{prefix}_dlq_records_written",
                "Records written to a DLQ, by error class",
                ["namespace", "error_class"],
                registry=registry,
            ),
            dlq_open=Gauge(
                f"{prefix}_dlq_records",
                "Open DLQ entries (not redriven or discarded)",
                ["namespace"],
                registry=registry,
            ),
            dlq_oldest_age=Gauge(
                f"{prefix}_dlq_oldest_age_seconds",
                "Age of the oldest open DLQ entry",
                ["namespace"],
                registry=registry,
            ),
            breaker_open=Gauge(
                f"{prefix}_target_breaker_open",
                "Target endpoints of this kind whose circuit breaker refuses calls (open or "
                "half-open): 1 while the one endpoint of a kind is down",
                ["target_kind"],
                registry=registry,
            ),
            delay_pending=Gauge(
                f"{prefix}_delay_pending_records",
                "Records waiting in the delay tiers (estimate: unread + held)",
                registry=registry,
            ),
            delay_oldest_due=Gauge(
                f"{prefix}_delay_oldest_due_timestamp_seconds",
                "Due time of the earliest record the delay stage holds",
                registry=registry,
            ),
            delivery_lateness=Histogram(
                f"{prefix}_delivery_lateness_seconds",
                "How long after its due time (delay, backoff, or write) a record was attempted",
                ["namespace"],
                buckets=_LATENESS_BUCKETS,
                registry=registry,
            ),
            delay_hops=Counter(
                f"{prefix}_delay_hops",
                "Records moved by the delay stage, by where to (tier, timer, due)",
                ["to"],
                registry=registry,
            ),
            blocked_keys=Gauge(
                f"{prefix}_ordering_blocked_keys",
                "Keys waiting on a record in retry, delay or a held DLQ entry (ordering = key)",
                ["namespace"],
                registry=registry,
            ),
            blocked_waiting=Gauge(
                f"{prefix}_ordering_waiting_records",
                "Records parked behind a blocked key",
                ["namespace"],
                registry=registry,
            ),
            blocked_oldest_age=Gauge(
                f"{prefix}_ordering_oldest_blocked_age_seconds",
                "How long the longest-blocked key has waited on its current head",
                ["namespace"],
                registry=registry,
            ),
            namespace_unreadable=Gauge(
                f"{prefix}_namespace_config_unreadable",
                "1: the namespace's latest control event is unreadable (it is unavailable)",
                ["namespace"],
                registry=registry,
            ),
            dlq_write_failing=Gauge(
                f"{prefix}_dlq_write_failing_seconds",
                "How long writes to a DLQ topic have been failing (0: they go through); the "
                "last resort: retried, never given up, so its partition's commit waits",
                ["topic"],
                registry=registry,
            ),
            emit_refused=Counter(
                f"{prefix}_emit_refused",
                "Worker writes (retry, delay, DLQ) given up, by error class: the record goes "
                "to the DLQ instead (a DLQ entry: without its record, else left at its source)",
                ["error_class"],
                registry=registry,
            ),
            replication_lag=Histogram(
                f"{prefix}_replication_lag_seconds",
                "Replication lag of a cache operation applied in a region: apply time minus "
                "its original write time",
                ["namespace", "region"],
                buckets=_LAG_BUCKETS,
                registry=registry,
            ),
            replication_ops=Counter(
                f"{prefix}_replication_operations",
                "Cache operations a region's writer settled, by outcome (applied, stale, "
                "duplicate, absent, dlq)",
                ["namespace", "region", "outcome"],
                registry=registry,
            ),
            replication_retries=Counter(
                f"{prefix}_replication_retries",
                "Cache operations a region's writer tried again (its memcached unavailable)",
                ["namespace", "region"],
                registry=registry,
            ),
            replication_backlog=Gauge(
                f"{prefix}_replication_backlog_records",
                "Operations in a region's topic its writer (this process's partitions) has not "
                "read yet: the consumer lag",
                ["namespace", "region"],
                registry=registry,
            ),
            replication_dlq=Gauge(
                f"{prefix}_replication_dlq_records",
                "Open entries of a region's DLQ (not redriven or discarded), reported by each "
                "process running the region's writer: aggregate with max",
                ["namespace", "region"],
                registry=registry,
            ),
            replication_over_max_lag=Counter(
                f"{prefix}_replication_over_max_lag",
                "Cache operations a region's writer settled (or dead-lettered) later than the "
                "namespace's max_lag_s after their original write time",
                ["namespace", "region"],
                registry=registry,
            ),
            replication_over_tombstone_ttl=Counter(
                f"{prefix}_replication_over_tombstone_ttl",
                "Sets a region's writer met later than the namespace's tombstone_ttl_s, which "
                "could bring a deleted value back: dead-lettered (dlq: reason "
                "older_than_tombstone_ttl) or applied (applied: a redriven copy)",
                ["namespace", "region", "outcome"],
                registry=registry,
            ),
            mutation_open=Gauge(
                f"{prefix}_mutation_open_transactions",
                "Multi-partition transactions held by this worker: open or committing (not "
                "dead-lettered, not committed)",
                ["namespace"],
                registry=registry,
            ),
            mutation_oldest_open_age=Gauge(
                f"{prefix}_mutation_oldest_open_age_seconds",
                "Age of this worker's oldest open transaction, from its first record",
                ["namespace"],
                registry=registry,
            ),
            mutation_commits=Counter(
                f"{prefix}_mutation_commits",
                "Transactions committed (every operation applied)",
                ["namespace"],
                registry=registry,
            ),
            mutation_operations_applied=Counter(
                f"{prefix}_mutation_operations_applied",
                "Operations of transactions applied to the kv target",
                ["namespace"],
                registry=registry,
            ),
            mutation_requeues=Counter(
                f"{prefix}_mutation_requeues",
                "Markers re-queued through the delay tiers (waiting for operations, a failed "
                "apply's backoff, a transaction's deadline)",
                ["namespace"],
                registry=registry,
            ),
            mutation_dead_letters=Counter(
                f"{prefix}_mutation_dead_letters",
                "Mutation DLQ entries by reason (mutation_incomplete, mutation_apply_failed, "
                "mutation_set_mismatch, mutation_poison, mutation_conflict, mutation_refused, "
                "mutation_rejected)",
                ["namespace", "reason"],
                registry=registry,
            ),
        )
