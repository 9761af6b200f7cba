"""Topic names and specs: the single place a topic name is built.

Every other module asks here; ``topology/`` and ``k8s/`` files are rendered from these specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "NamespaceTopics",
    "TopicSpec",
    "control_topic_spec",
    "default_topics",
    "delay_topic",
    "delay_topic_specs",
]

_PREFIX = "wal"


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSpec:
    """A topic as it should exist on the cluster."""

    name: str
    partitions: int
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespaceTopics:
    """The topics one namespace uses."""

    log: str
    retry: str
    dlq: str

    def all(self) -> tuple[str, ...]:
        return (self.log, self.retry, self.dlq)


def default_topics(namespace: str) -> NamespaceTopics:
    """Topic names derived from a namespace name (``wal.<ns>.log`` …)."""
    return NamespaceTopics(
        log=f"{_PREFIX}.{namespace}.log",
        retry=f"{_PREFIX}.{namespace}.retry",
        dlq=f"{_PREFIX}.{namespace}.dlq",
    )


def control_topic_spec(name: str, replication_factor: int = 1) -> TopicSpec:
    """The namespace broadcast topic: one partition so every reader sees one order; compacted."""
    return TopicSpec(
        name=name,
        partitions=1,
        replication_factor=replication_factor,
        config={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
    )


def _tier_label(delay_ms: int) -> str:
    if delay_ms == 0:
        return "timer"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if delay_ms % size == 0:
            return f"{delay_ms // size}{unit}"
    return f"{delay_ms}ms"


def delay_topic(app_id: str, delay_ms: int) -> str:
    """The delay tier topic of deployment ``app_id`` for ``delay_ms`` (shared by its namespaces).

    Per deployment, because each deployment's delay stage forwards everything in its tiers: two
    deployments reading one tier would forward every record twice. Tier 0 is the timer topic:
    records due within the smallest tier, each held until its time.
    """
    return f"{app_id}.delay.{_tier_label(delay_ms)}"


def delay_topic_specs(
    app_id: str,
    tiers_ms: tuple[int, ...],
    partitions: int,
    grace_ms: int,
    replication_factor: int = 1,
) -> list[TopicSpec]:
    """Tier topics: a record stays in one for its delay, so retention is that plus ``grace_ms``
    (the longest outage of the delay stage the records must survive)."""
    return [
        TopicSpec(
            name=delay_topic(app_id, delay),
            partitions=partitions,
            replication_factor=replication_factor,
            config={"retention.ms": str(delay + grace_ms), "cleanup.policy": "delete"},
        )
        for delay in tiers_ms
    ]
