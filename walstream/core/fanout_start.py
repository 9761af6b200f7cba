"""Where a replicated namespace's fan-out to a region on a cluster of its own starts reading the
log (issue 17).

The regions on the deployment's own cluster share one fan-out, in group ``walstream.<ns>.fanout``
(one cluster: the log's; a fan-out before 2026-12-06 copied to every region in it); a region
naming a cluster of its own has a fan-out of its own, in a group of its own, so that its cluster
away holds back no other region. Such a group with no commit on a partition would start at the
log's beginning and copy the whole log to its region: last-write-wins reads a copy newer than
``max_lag_s`` as a duplicate or stale, but an older one (a log kept longer than the tombstones)
can bring back, for its TTL, a value deleted or expired since. So the group is placed the first
time its fan-out starts, before it touches its region's cluster: where the shared group stands
(after an upgrade, what the one fan-out copied to every region; a region added later gets the
operations from then on, as the one fan-out did), or at the partition's beginning when the shared
group has no commit (a new namespace: nothing copied yet). Placed once, the group has a commit
and is never placed again: its region's cluster away at that moment, it still starts there when
the cluster is back, losing nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

__all__ = ["start_offsets"]

P = TypeVar("P")


def start_offsets(
    own: Mapping[P, int | None], shared: Mapping[P, int], beginnings: Mapping[P, int]
) -> dict[P, int]:
    """The offsets to commit for a fan-out's group before it first joins: for each partition
    of ``own`` (the group's commits, None: none) with no commit, the ``shared`` group's commit
    there, else the partition's beginning (``beginnings``; a partition without one is left
    out, read from its beginning anyway)."""
    start: dict[P, int] = {}
    for partition, committed in own.items():
        if committed is not None:
            continue
        offset = shared.get(partition, beginnings.get(partition))
        if offset is not None:
            start[partition] = offset
    return start
