"""Delay routing: where a record waits until its due time, never delivered early.

Records wait in Kafka, not in memory, in a few fixed-delay tier topics shared by all namespaces.
A record written to tier D leaves it D after it was written, so inside a tier partition arrival
order is leaving order, and the tier's reader pauses a partition until its head may leave: memory
stays O(tiers x partitions) whatever the backlog. A record with ``r`` ms to wait enters the largest
tier D with D + LEAD_MS <= r; on leaving it waits ``r - D`` more, so it hops down the tiers (days:
one hop per day), and a long delay never needs long retention on a busy topic. The last stretch,
under the smallest tier + LEAD_MS, is waited in memory (a bounded timer heap).

Chosen by measurement. A Faust table of timers was the other candidate: every pending record in
a store, scanned by due time. It costs a table write per record (the broker notes measure a Faust
agent doing one table update at ~5k events/s here, against ~79k/s for batched produce) and a full
changelog replay on restart, where tiers cost a batched produce per hop and nothing to recover:
bench/delay.py holds 1M pending records at ~120 MB worker RSS. A 1 s tier was dropped after
measuring: records hopped through it every second (up to 10 hops each) and bursts of those hops
made due records late; the heap holding 13 s instead costs a few MB.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "DEST_GONE_ERROR",
    "DEST_GRACE_MS",
    "HANDOFF_LEAD_MS",
    "HEADERS_ERROR",
    "LEAD_MS",
    "TIERS_MS",
    "DelayHeaders",
    "Deliver",
    "GiveUp",
    "Resend",
    "Tier",
    "Timer",
    "TimerHeap",
    "after_send_failure",
    "delay_headers",
    "due_header",
    "next_stop",
    "parse_delay_headers",
    "parse_due_header",
    "resend_delay_ms",
    "tier_of",
]

#: Tier delays in milliseconds, smallest first.
TIERS_MS: tuple[int, ...] = (10_000, 60_000, 600_000, 3_600_000, 86_400_000)
#: A record leaves its last tier at least this long before it is due (see ``next_stop``), so the
#: timer heap holds what comes due within TIERS_MS[0] + LEAD_MS.
LEAD_MS = 3_000
#: The delay stage hands a record to its destination topic this long before it is due, with its
#: due time in a ``wal-due`` header; the destination's agent holds it until then (without taking
#: a delivery slot). A record's way from the stage to the agent (produce, a fetch, Faust's
#: hand-over) then overlaps its last stretch of waiting instead of adding to it. The default of
#: WALSTREAM_DELAY_HANDOFF_LEAD_MS.
HANDOFF_LEAD_MS = 500
#: A forward whose destination the cluster says does not exist (an unknown topic or partition,
#: an invalid topic, a refusal) is tried again for this long, since the destination may be
#: being created or the client's metadata may lag; then it is dead-lettered so the tier
#: partition's commit moves on. The default of WALSTREAM_DELAY_DEST_GRACE_MS.
DEST_GRACE_MS = 60_000
#: Error classes of the DLQ entries the delay stage writes.
HEADERS_ERROR = "DelayHeadersError"
DEST_GONE_ERROR = "DestinationGoneError"
_RESEND_BASE_MS = 500
_RESEND_MAX_MS = 5_000


H_DUE = "wal-due"
H_DEST = "wal-dest"
H_DEST_PARTITION = "wal-dest-partition"


@dataclass(frozen=True, slots=True)
class DelayHeaders:
    """What a waiting record carries besides its value: when, and where to, it is due."""

    due_ms: int
    dest_topic: str
    dest_partition: int


def delay_headers(due_ms: int, dest_topic: str, dest_partition: int) -> list[tuple[str, bytes]]:
    return [
        (H_DUE, str(due_ms).encode()),
        (H_DEST, dest_topic.encode()),
        (H_DEST_PARTITION, str(dest_partition).encode()),
    ]


def due_header(due_ms: int) -> list[tuple[str, bytes]]:
    """The header a record handed to its destination before it is due carries."""
    return [(H_DUE, str(due_ms).encode())]


def parse_due_header(
    headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None,
) -> int | None:
    """The ``wal-due`` time of a destination record (None: none, or malformed)."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, raw in items:
        if name == H_DUE:
            try:
                return int(raw)
            except (TypeError, ValueError):
                return None
    return None


def parse_delay_headers(headers: Iterable[tuple[str, bytes]]) -> DelayHeaders | None:
    """The delay headers of a tier record (None: missing or malformed)."""
    h = dict(headers)
    try:
        return DelayHeaders(
            due_ms=int(h[H_DUE]),
            dest_topic=h[H_DEST].decode(),
            dest_partition=int(h[H_DEST_PARTITION]),
        )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


@dataclass(frozen=True, slots=True)
class Deliver:
    """Due now: forward to the namespace's delivery."""


@dataclass(frozen=True, slots=True)
class Timer:
    """Due within the smallest tier: wait in memory until ``due_ms``."""

    due_ms: int


@dataclass(frozen=True, slots=True)
class Tier:
    """Wait in the tier of ``delay_ms``."""

    delay_ms: int


def next_stop(
    due_ms: int, now_ms: int, tiers: tuple[int, ...] = TIERS_MS, lead_ms: int = LEAD_MS
) -> Deliver | Timer | Tier:
    """Where a record due at ``due_ms`` waits next, at ``now_ms``.

    A record enters tier D only if it then leaves the tier ``lead_ms`` before it is due: a tier
    partition is FIFO, so a record may leave it behind a crowd leaving at the same moment (a
    burst written together), and its last stretch must not depend on how fast the crowd moves.
    """
    remaining = due_ms - now_ms
    if remaining <= 0:
        return Deliver()
    if remaining < tiers[0] + lead_ms:
        return Timer(due_ms)
    best = tiers[0]
    for delay in tiers:
        if delay + lead_ms <= remaining:
            best = delay
    return Tier(best)


def tier_of(stop: Timer | Tier) -> int:
    """The tier delay a stop writes to (0: the timer tier)."""
    return stop.delay_ms if isinstance(stop, Tier) else 0


@dataclass(frozen=True, slots=True)
class Resend:
    """Send the record again after ``after_ms``."""

    after_ms: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop sending it: dead-letter the record with ``reason``."""

    reason: str


def resend_delay_ms(tries: int) -> int:
    """The wait before the next send of a record whose last ``tries`` sends failed."""
    return min(_RESEND_MAX_MS, _RESEND_BASE_MS << max(0, min(tries - 1, 8)))


def after_send_failure(
    *,
    permanent: bool,
    tries: int,
    failing_since_ms: int,
    now_ms: int,
    grace_ms: int = DEST_GRACE_MS,
    error: str = "",
) -> Resend | GiveUp:
    """What the delay stage does with a forward its destination did not take.

    Args:
        permanent: the cluster said the destination does not exist or refuses the record
            (unknown topic or partition, invalid topic, not authorized, too large); anything
            else (a broker away, a timeout, a leader moving) is transient.
        tries: sends of this record that failed, this one included.
        failing_since_ms: when its destination first failed permanently (the earlier of this
            record's first failure and any earlier record's to the same destination).
        now_ms: the time now.
        grace_ms: how long a permanent failure is tried again before giving up.
        error: the last error, for the reason.

    Returns:
        ``GiveUp`` once a permanent failure has lasted ``grace_ms``; otherwise ``Resend``
        (transient failures are retried for as long as they last: the record waits safely in
        its tier, which is not committed past it).
    """
    failing_ms = now_ms - failing_since_ms
    if permanent and failing_ms >= grace_ms:
        return GiveUp(
            f"destination refused the record for {failing_ms} ms ({tries} tries here): {error}"
        )
    return Resend(resend_delay_ms(tries))


T = TypeVar("T")


class TimerHeap(Generic[T]):
    """Records in their last stretch, held in memory until due: earliest due first, in arrival
    order among equal due times. Each belongs to an ``owner`` (the partition it was read from),
    so a revoked partition's records leave together. The caller bounds its size (``len``)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Hashable, T]] = []
        self._seq = 0

    def push(self, due_ms: int, owner: Hashable, item: T) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due_ms, self._seq, owner, item))

    def next_due_ms(self) -> int | None:
        """The earliest due time held (None: empty)."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, until_ms: int) -> tuple[Hashable, T] | None:
        """The earliest item due at or before ``until_ms``, and its owner; None: none is."""
        if not self._heap or self._heap[0][0] > until_ms:
            return None
        _, _, owner, item = heapq.heappop(self._heap)
        return owner, item

    def drop(self, owners: Collection[Hashable]) -> None:
        """Forget the items of ``owners`` (revoked: their new owner reads them again)."""
        self._heap = [entry for entry in self._heap if entry[2] not in owners]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)
