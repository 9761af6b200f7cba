"""Where a replicated namespace's fan-out to a region starts reading the log (issue 17).

Each target region has a fan-out of its own, in its own consumer group (until 2026-12-06 one
group copied to every region). A group with no commit on a partition starts at the log's
beginning and copies the whole log to its region again: LWW reads a copy newer than the
namespace's ``max_lag_s`` as a duplicate or stale, but an older one (a log kept longer than the
tombstones) can bring back a value deleted or expired since, for its TTL. So on an upgrade a new
group starts a partition it has no commit for where the single group of before stood: every
operation before that commit was copied to every region then. Only that group: another
region's group says nothing of this region (its fan-out may never have started, its cluster
away: starting where the others stand would skip what they copied). A partition no such group
has committed (a new namespace) starts at its beginning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

__all__ = ["start_offsets"]

P = TypeVar("P")


def start_offsets(own: Mapping[P, int | None], others: Iterable[Mapping[P, int]]) -> dict[P, int]:
    """The offsets to commit for a fan-out's group before it joins: for each partition of
    ``own`` (the group's commits, None: none) with no commit, the lowest of the ``others``'
    commits there (groups every operation before whose commit was copied to this region);
    partitions none of them has committed are left out (read from their beginning)."""
    missing = {partition for partition, offset in own.items() if offset is None}
    lowest: dict[P, int] = {}
    for commits in others:
        for partition, offset in commits.items():
            if partition in missing:
                lowest[partition] = min(offset, lowest.get(partition, offset))
    return lowest
