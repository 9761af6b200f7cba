"""Topic names and specs: the single place a topic name is built and its configuration chosen.

Every other module asks here; ``topology/`` and ``k8s/`` files are rendered from these specs.
Retention follows one rule (README, "Topics and retention"): a topic keeps a record as long as
walstream may still owe it. Namespace topics keep records forever unless the namespace chooses a
finite retention (validated in walstream.namespaces.config); a delay tier keeps a record its
delay plus the delay stage's grace; compacted topics keep the last value of every key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from walstream.core.retention import UNLIMITED, durability_for
from walstream.core.target_policy import ReservedTopics

__all__ = [
    "CHANGELOG_TOMBSTONE_MS",
    "DEFAULT_MIN_INSYNC_REPLICAS",
    "DEFAULT_REPLICATION_FACTOR",
    "MutationTopics",
    "NamespaceTopics",
    "TopicSpec",
    "changelog_topic_spec",
    "control_topic_spec",
    "default_topics",
    "delay_topic",
    "delay_topic_specs",
    "mutation_topic_specs",
    "mutation_topics",
    "namespace_topic_specs",
    "poison_topic",
    "poison_topic_spec",
    "region_dlq_topic",
    "region_topic",
    "region_topic_specs",
    "reserved_topics",
]

_PREFIX = "wal"

#: Three copies, and an acks=all write waits for two of them: one broker can fail (or be
#: restarted) without losing an acknowledged record or refusing writes.
DEFAULT_REPLICATION_FACTOR = 3
DEFAULT_MIN_INSYNC_REPLICAS = 2

_KEEP_FOREVER = str(UNLIMITED)
#: How long a table changelog keeps a tombstone (``delete.retention.ms``).
CHANGELOG_TOMBSTONE_MS = 7 * 86_400_000


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSpec:
    """A topic as it should exist on the cluster.

    ``replication_factor`` and ``min_insync_replicas`` are what is asked for; topic creation
    caps both to the brokers the cluster reports (``capped``).
    """

    name: str
    partitions: int
    replication_factor: int = DEFAULT_REPLICATION_FACTOR
    min_insync_replicas: int = DEFAULT_MIN_INSYNC_REPLICAS
    config: Mapping[str, str] = field(default_factory=dict)

    def topic_config(self) -> dict[str, str]:
        """The topic-level configuration to create the topic with."""
        return {**self.config, "min.insync.replicas": str(self.min_insync_replicas)}

    def capped(self, brokers: int) -> TopicSpec:
        """This spec on a cluster of ``brokers`` (core.retention.durability_for)."""
        got = durability_for(self.replication_factor, self.min_insync_replicas, brokers)
        return dataclasses.replace(
            self,
            replication_factor=got.replication_factor,
            min_insync_replicas=got.min_insync_replicas,
        )


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


class MutationTopics(NamedTuple):
    """A namespace's multi-partition mutation topics (issue 18): its operations' chunks and the
    completion markers that drive their commit. Both have the namespace's partition count and
    every record is keyed by its transaction id, so partition P of each holds a transaction."""

    mutations: str
    markers: str


def mutation_topics(namespace: str) -> MutationTopics:
    """``wal.<ns>.mutations`` and ``wal.<ns>.markers`` (no namespace name holds a dot, so none
    is another namespace's default log, retry or DLQ topic)."""
    return MutationTopics(
        mutations=f"{_PREFIX}.{namespace}.mutations", markers=f"{_PREFIX}.{namespace}.markers"
    )


def mutation_topic_specs(
    namespace: str,
    partitions: int,
    *,
    replication_factor: int = DEFAULT_REPLICATION_FACTOR,
    min_insync_replicas: int = DEFAULT_MIN_INSYNC_REPLICAS,
) -> list[TopicSpec]:
    """A namespace's mutation and marker topics: kept forever, as its log (a transaction's
    records are owed until it commits, however long it waits)."""
    return [
        TopicSpec(
            name=name,
            partitions=partitions,
            replication_factor=replication_factor,
            min_insync_replicas=min_insync_replicas,
            config=_deleting(UNLIMITED),
        )
        for name in mutation_topics(namespace)
    ]


def region_topic(namespace: str, region: str) -> str:
    """The topic of a replicated namespace's operations bound for ``region`` (issue 17:
    ``wal.<ns>.region.<r>``, on that region's cluster when it names one). Neither name holds a
    dot (core.targets.NAMESPACE_NAME, REGION_NAME), so no two pairs share a topic, and none is
    a namespace's default log, retry or DLQ topic."""
    return f"{_PREFIX}.{namespace}.region.{region}"


def region_dlq_topic(namespace: str, region: str) -> str:
    """The DLQ of a replicated namespace's operations that ``region`` can never apply (issue 17:
    ``wal.<ns>.region.<r>.dlq``, beside ``region_topic`` on the region's cluster)."""
    return f"{region_topic(namespace, region)}.dlq"


def region_topic_specs(
    namespace: str,
    region: str,
    partitions: int,
    *,
    replication_factor: int = DEFAULT_REPLICATION_FACTOR,
    min_insync_replicas: int = DEFAULT_MIN_INSYNC_REPLICAS,
) -> list[TopicSpec]:
    """A region's topic and its DLQ (kept forever, as a namespace's log and DLQ)."""
    return [
        TopicSpec(
            name=name,
            partitions=partitions,
            replication_factor=replication_factor,
            min_insync_replicas=min_insync_replicas,
            config=_deleting(UNLIMITED),
        )
        for name in (region_topic(namespace, region), region_dlq_topic(namespace, region))
    ]


def _deleting(retention_ms: int) -> dict[str, str]:
    # Explicit, never the broker's defaults (7 days; a cluster may set a size limit or compact):
    # a compacted log would drop every record but the last of each key.
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(retention_ms),
        "retention.bytes": _KEEP_FOREVER,
    }


def namespace_topic_specs(
    topics: NamespaceTopics,
    partitions: int,
    *,
    log_retention_ms: int = UNLIMITED,
    dlq_retention_ms: int = UNLIMITED,
    replication_factor: int = DEFAULT_REPLICATION_FACTOR,
    min_insync_replicas: int = DEFAULT_MIN_INSYNC_REPLICAS,
) -> list[TopicSpec]:
    """A namespace's log, retry and DLQ topics.

    The log and retry topics keep records ``log_retention_ms`` (-1: forever): a record is owed
    until consumed, and a key-ordered namespace parks records by log offset behind a blocked
    key. The DLQ keeps entries ``dlq_retention_ms`` (-1: forever): they wait for an operator.
    """
    retention = {
        topics.log: log_retention_ms,
        topics.retry: log_retention_ms,
        topics.dlq: dlq_retention_ms,
    }
    return [
        TopicSpec(
            name=name,
            partitions=partitions,
            replication_factor=replication_factor,
            min_insync_replicas=min_insync_replicas,
            config=_deleting(retention[name]),
        )
        for name in topics.all()
    ]


def control_topic_spec(
    name: str,
    replication_factor: int = DEFAULT_REPLICATION_FACTOR,
    min_insync_replicas: int = DEFAULT_MIN_INSYNC_REPLICAS,
) -> TopicSpec:
    """The namespace broadcast topic: one partition so every reader sees one order; compacted,
    so it keeps the last definition of every namespace forever (a tombstone deletes one)."""
    return TopicSpec(
        name=name,
        partitions=1,
        replication_factor=replication_factor,
        min_insync_replicas=min_insync_replicas,
        config={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
    )


def changelog_topic_spec(
    name: str,
    partitions: int,
    replication_factor: int = DEFAULT_REPLICATION_FACTOR,
    min_insync_replicas: int = DEFAULT_MIN_INSYNC_REPLICAS,
) -> TopicSpec:
    """A Faust table's changelog (``<app-id>-<table>-changelog``, named by Faust): compacted, as
    Faust makes it, so the last value of every key (attempt counts, ordering state) stays.

    A deleted key's tombstone is kept a week (Kafka's default: a day): a worker recovering its
    rocksdb store from an older persisted offset must still read the deletes made since.
    """
    return TopicSpec(
        name=name,
        partitions=partitions,
        replication_factor=replication_factor,
        min_insync_replicas=min_insync_replicas,
        config={"cleanup.policy": "compact", "delete.retention.ms": str(CHANGELOG_TOMBSTONE_MS)},
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
    replication_factor: int = DEFAULT_REPLICATION_FACTOR,
    *,
    min_insync_replicas: int = DEFAULT_MIN_INSYNC_REPLICAS,
) -> list[TopicSpec]:
    """Tier topics: a record stays in one for its delay, so retention is that plus ``grace_ms``
    (the longest outage of the delay stage the records must survive). A hop is written with its
    time of entry into the tier as its timestamp, which is what retention counts from."""
    return [
        TopicSpec(
            name=delay_topic(app_id, delay),
            partitions=partitions,
            replication_factor=replication_factor,
            min_insync_replicas=min_insync_replicas,
            config=_deleting(delay + grace_ms),
        )
        for delay in tiers_ms
    ]


def poison_topic(app_id: str) -> str:
    """The deployment's dead-letter topic for records no namespace's DLQ can take: a delay tier
    record without valid delay headers whose value names no known namespace, or one whose
    destination is gone (a deleted namespace). Its entries are DLQ entries (walstream.core.dlq)."""
    return f"{app_id}.poison"


def poison_topic_spec(
    app_id: str,
    partitions: int,
    replication_factor: int = DEFAULT_REPLICATION_FACTOR,
    *,
    min_insync_replicas: int = DEFAULT_MIN_INSYNC_REPLICAS,
) -> TopicSpec:
    """The poison topic keeps its entries forever: like a DLQ, they wait for an operator."""
    return TopicSpec(
        name=poison_topic(app_id),
        partitions=partitions,
        replication_factor=replication_factor,
        min_insync_replicas=min_insync_replicas,
        config=_deleting(UNLIMITED),
    )


def reserved_topics(
    app_id: str,
    control_topic: str,
    namespace_of: Callable[[str], str | None] | None = None,
) -> ReservedTopics:
    """walstream's own topics on deployment ``app_id``: no record's target may name one.

    The control topic and the poison topic by name; by prefix every ``wal.*`` namespace topic,
    the delay tiers and the poison topic (``<app-id>.``), the table changelogs and Faust's agent
    and assignor topics (``<app-id>-``), and Kafka's own (``__``). ``namespace_of`` (the
    registry's) adds every namespace's log, retry and DLQ topic whatever it is named.
    """
    return ReservedTopics(
        names=frozenset({control_topic, poison_topic(app_id)}),
        prefixes=(f"{_PREFIX}.", f"{app_id}.", f"{app_id}-", "__"),
        namespace_of=namespace_of,
    )
