"""Last-write-wins with idempotency tokens: whether an incoming write may replace what a key holds.

Versions order by (original_write_time_ms, idempotency_token): the token breaks ties, so every
replica decides the same way. A write carrying the token already applied is a duplicate (a retry
or a redelivery) and changes nothing. Deletes keep their version as a tombstone, so a late put
older than the delete loses and cannot resurrect the row.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

__all__ = ["Outcome", "Version", "should_apply"]


class Version(NamedTuple):
    """The version a key holds, or a write brings."""

    original_write_time_ms: int
    idempotency_token: str


class Outcome(Enum):
    """What to do with an incoming write."""

    APPLY = "apply"
    DUPLICATE = "duplicate"
    STALE = "stale"


def should_apply(existing: Version | None, incoming: Version) -> Outcome:
    """Decide for ``incoming`` against the ``existing`` version (None: the key never existed)."""
    if existing is None:
        return Outcome.APPLY
    if incoming.idempotency_token == existing.idempotency_token:
        return Outcome.DUPLICATE
    return Outcome.APPLY if incoming > existing else Outcome.STALE
