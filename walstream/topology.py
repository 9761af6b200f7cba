"""Topic names and specs: the single place a topic name is built.

Every other module asks here; ``topology/`` and ``k8s/`` files are rendered from these specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["NamespaceTopics", "TopicSpec", "control_topic_spec", "default_topics"]

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
