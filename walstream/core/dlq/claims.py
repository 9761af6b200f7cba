"""Redrive claims folded (pure): which redrive may run on a DLQ, so that one redrive per
namespace runs at a time across processes (``walstream.dlq`` writes the claims)."""

from __future__ import annotations

from walstream.core.dlq.records import CLAIM_PARTITION, Claim

__all__ = ["ClaimFold"]


class ClaimFold:
    """Who may redrive a DLQ: the earliest live claim on CLAIM_PARTITION.

    A claim is live until it is released or its lease runs out (its last renewal's time plus
    its lease); a redrive that crashed holds the DLQ for one lease at most. Only claims on
    CLAIM_PARTITION count: their offsets order them the same for every reader.
    """

    def __init__(self) -> None:
        #: claim -> (offset of its first record, latest renewal time, lease, released)
        self.claims: dict[str, tuple[int, int, int, bool]] = {}

    def apply(self, item: object) -> None:
        if not isinstance(item, Claim) or item.partition != CLAIM_PARTITION or not item.claim:
            return
        first, at, lease, released = self.claims.get(
            item.claim, (item.offset, item.at_ms, item.lease_ms, False)
        )
        self.claims[item.claim] = (
            min(first, item.offset),
            max(at, item.at_ms),
            item.lease_ms or lease,
            released or item.released,
        )
        if len(self.claims) > 1024:  # keep what can still matter
            self.claims = {c: v for c, v in self.claims.items() if not v[3]}

    def holder_before(self, claim: str) -> str | None:
        """The live claim ahead of ``claim`` (None: ``claim`` holds the DLQ).

        Raises:
            KeyError: ``claim`` was not read (the index pass ended before it).
        """
        mine, my_at, _, _ = self.claims[claim]
        # pragma below: ``claim`` is among them, so the loop always stops, at it at the latest
        for other, (first, at, lease, released) in sorted(  # pragma: no branch
            self.claims.items(), key=lambda c: c[1][0]
        ):
            if first >= mine:
                break
            if not released and at + lease > my_at:
                return other
        return None
