"""A replicated namespace's region DLQs (issue 17) under the DLQ tools.

A region's writer dead-letters an operation it can never apply to ``wal.<ns>.region.<r>.dlq``
(core.outbox.region_dlq_entry: the headers of every DLQ entry), on the region's cluster. The
tools read, redrive and discard it as a namespace's DLQ, through ``RegionDlq.view``: the
namespace seen from that region, whose DLQ is the region's DLQ and whose log is the region's
topic, so a redriven operation goes back to ``wal.<ns>.region.<r>`` and that region's writer
applies it again (last-write-wins makes a second apply harmless). Nothing holds a key behind a
region DLQ entry: a discard writes no settle marker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from walstream.errors import WalError
from walstream.namespaces.config import NamespaceConfig
from walstream.topology import NamespaceTopics, region_dlq_topic, region_topic

__all__ = ["RegionDlq", "region_dlq"]


@dataclass(frozen=True, slots=True)
class RegionDlq:
    """Where a region's DLQ lives: ``view`` (the namespace as the tools see that region) and
    ``servers`` (its cluster)."""

    region: str
    view: NamespaceConfig
    servers: str | list[str]


def region_dlq(ns: NamespaceConfig, region: str, default_servers: str | list[str]) -> RegionDlq:
    """Region ``region``'s DLQ of replicated namespace ``ns``, on the region's own cluster when
    it names one (else ``default_servers``).

    Raises:
        WalError: ``ns`` does not replicate, or names no region ``region``.
    """
    if ns.replication is None:
        raise WalError(
            f"namespace {ns.name!r} replicates nothing: no region {region!r}, no region DLQs"
        )
    config = ns.replication.region(region)
    if config is None:
        names = ", ".join(ns.replication.region_names)
        raise WalError(f"namespace {ns.name!r} has no region {region!r} (its regions: {names})")
    topic = region_topic(ns.name, region)
    topics = NamespaceTopics(log=topic, retry=topic, dlq=region_dlq_topic(ns.name, region))
    view = dataclasses.replace(ns, topics=topics)
    servers = config.bootstrap_servers or default_servers
    return RegionDlq(region=region, view=view, servers=servers)
