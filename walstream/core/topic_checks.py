"""Whether a namespace may use its topics (``ns apply``), decided from what the cluster says.

Every record of a namespace must reach a worker that owns its whole retry chain and its
per-key state, which are kept in tables co-partitioned with the namespace's topics: each of its
log, retry and DLQ topics must have the deployment's partition count. A record on a partition
past that count is read by no worker's table partition and is never acked, retried or
dead-lettered. A topic another namespace uses, or one the deployment itself uses (control
topic, changelogs, delay tiers, poison topic), would mix two streams of records in one topic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["TopicProblem", "name_problems", "partition_problems"]


@dataclass(frozen=True, slots=True)
class TopicProblem:
    """Why namespace ``namespace`` may not use ``topic`` as its ``role`` topic."""

    namespace: str
    role: str
    topic: str
    reason: str

    def __str__(self) -> str:
        return f"the {self.role} topic of namespace {self.namespace} {self.reason}"


def name_problems(
    namespace: str,
    roles: Mapping[str, str],
    *,
    owners: Mapping[str, str],
    reserved: Callable[[str], str | None],
) -> list[TopicProblem]:
    """Topics of ``roles`` (role -> topic) that the deployment (``reserved(topic)`` says what
    for) or another namespace (``owners``: topic -> namespace) uses already."""
    problems = []
    for role, topic in roles.items():
        what = reserved(topic)
        owner = owners.get(topic)
        if what is not None:
            problems.append(TopicProblem(namespace, role, topic, f"is {what} of this deployment"))
        elif owner is not None and owner != namespace:
            problems.append(TopicProblem(namespace, role, topic, f"is used by namespace {owner}"))
    return problems


def partition_problems(
    namespace: str,
    roles: Mapping[str, str],
    *,
    partitions: Mapping[str, int | None],
    wanted: int,
) -> list[TopicProblem]:
    """Topics of ``roles`` whose partition count (``partitions``: topic -> count, None: not
    found on the cluster; a topic not in it is not judged) is not ``wanted``."""
    problems = []
    for role, topic in roles.items():
        if topic not in partitions:
            continue
        got = partitions[topic]
        if got is None:
            reason = "is not on the cluster after it was created"
        elif got != wanted:
            reason = (
                f"has {got} partitions; every namespace topic of this deployment needs "
                f"WALSTREAM_DEFAULT_PARTITIONS={wanted} (records on other partitions would "
                f"never be delivered). Use another topic name, or recreate the topic with "
                f"{wanted} partitions"
            )
        else:
            continue
        problems.append(TopicProblem(namespace, role, topic, reason))
    return problems
