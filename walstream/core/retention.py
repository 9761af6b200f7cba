"""Retention and replication decisions: nothing walstream still owes may expire or rest on one copy.

Pure: the numbers behind topic specs (walstream.topology) and the namespace fields that choose
finite retention (walstream.namespaces.config). A namespace topic keeps its records forever
unless its namespace asks otherwise, and it may ask only for a retention at least as long as a
record can be owed by its own life cycle (retries and delays); what is owed longer than that
(a worker outage, a key blocked past it) is lost, and the README says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "MIN_DLQ_RETENTION_MS",
    "UNLIMITED",
    "Drift",
    "Durability",
    "config_drift",
    "durability_for",
    "log_retention_floor_ms",
    "retention_covers",
    "retry_horizon_ms",
]

#: ``retention.ms`` / ``retention.bytes`` value meaning "never delete by age / size".
UNLIMITED = -1
#: The shortest finite DLQ retention a namespace may choose: guards a seconds-for-milliseconds
#: slip; a DLQ entry is there for an operator to read.
MIN_DLQ_RETENTION_MS = 3_600_000


def retry_horizon_ms(
    *,
    max_attempts: int,
    base_ms: int,
    multiplier: float,
    cap_ms: int,
    jitter: float,
    retry_budget_ms: int | None,
) -> int:
    """The longest a failing record keeps being retried (attempts, not breaker deferrals).

    With a budget: the budget plus one last backoff (at most ``cap_ms``). Without: every backoff
    of ``max_attempts`` attempts at full jitter, each capped at ``cap_ms`` (core/backoff.py).
    """
    if retry_budget_ms is not None:
        return retry_budget_ms + cap_ms
    total = 0
    for attempt in range(max_attempts):
        raw = base_ms * multiplier**attempt
        if raw >= cap_ms:  # this wait and every later one is the cap
            return total + cap_ms * (max_attempts - attempt)
        total += int(min(float(cap_ms), raw * (1.0 + jitter)))
    return total


def log_retention_floor_ms(
    *, retry_horizon: int, longest_tier_ms: int, max_delay_ms: int, key_ordered: bool
) -> int:
    """The shortest retention a namespace's log and retry topics may have.

    A record is owed by the log until it is consumed, and a key-ordered namespace parks later
    records by log offset while the key's head retries or waits out its delay (a delayed write
    to such a namespace goes through the log and holds its key for up to ``max_delay_ms``).
    The floor covers one head's retries plus its longest wait: a tier's delay, or the
    namespace's longest delay when it orders by key.
    """
    wait = max(longest_tier_ms, max_delay_ms) if key_ordered else longest_tier_ms
    return retry_horizon + wait


def retention_covers(actual_ms: int, wanted_ms: int) -> bool:
    """Whether a topic keeping records ``actual_ms`` keeps them at least ``wanted_ms``."""
    if actual_ms == UNLIMITED or actual_ms < 0:
        return True
    return wanted_ms != UNLIMITED and actual_ms >= wanted_ms


@dataclass(frozen=True, slots=True)
class Durability:
    """Copies a topic keeps: its replication factor and ``min.insync.replicas`` (what acks=all
    waits for)."""

    replication_factor: int
    min_insync_replicas: int

    @property
    def single_copy(self) -> bool:
        """Whether an acknowledged write (acks=all) may rest on one broker only."""
        return self.replication_factor <= 1 or self.min_insync_replicas <= 1


def durability_for(replication_factor: int, min_insync_replicas: int, brokers: int) -> Durability:
    """What a topic can get on a cluster of ``brokers``: the factor capped to the brokers there
    are (a factor above it fails CreateTopics), and ``min.insync.replicas`` capped to the factor
    (above it, every acks=all write fails)."""
    rf = max(1, min(replication_factor, brokers))
    return Durability(rf, max(1, min(min_insync_replicas, rf)))


@dataclass(frozen=True, slots=True)
class Drift:
    """A setting of an existing topic that is weaker than walstream's spec for it."""

    topic: str
    key: str
    actual: str | None  #: None: the topic does not set it (the broker's default applies)
    wanted: str

    def describe(self) -> str:
        actual = "not set (the broker's default applies)" if self.actual is None else self.actual
        return f"topic {self.topic}: {self.key} is {actual}, walstream needs {self.wanted}"


#: The settings whose weaker value can lose records (others, e.g. min.compaction.lag.ms, tune).
_GUARDED = ("cleanup.policy", "retention.ms", "retention.bytes", "min.insync.replicas")


def _covers(key: str, actual: str, wanted: str) -> bool:
    if key == "cleanup.policy":
        return {p.strip() for p in actual.split(",")} == {p.strip() for p in wanted.split(",")}
    try:
        have, want = int(actual), int(wanted)
    except ValueError:
        return False
    if key == "min.insync.replicas":
        return have >= want
    return retention_covers(have, want)


def config_drift(topic: str, wanted: Mapping[str, str], actual: Mapping[str, str]) -> list[Drift]:
    """Where an existing topic's configuration (``actual``, as the broker describes it) could
    lose what ``wanted`` protects: another cleanup policy, a shorter retention, fewer in-sync
    replicas. A setting the broker does not report counts as weaker (its default applies)."""
    return [
        Drift(topic, key, actual.get(key), wanted[key])
        for key in _GUARDED
        if key in wanted and (key not in actual or not _covers(key, actual[key], wanted[key]))
    ]
