"""Delay routing: where a record waits until its due time, never delivered early.

Records wait in Kafka, not in memory, in a few fixed-delay tier topics shared by all namespaces.
A record written to tier D leaves it D after it was written, so inside a tier partition arrival
order is leaving order, and the tier's reader pauses a partition until its head may leave: memory
stays O(tiers x partitions) whatever the backlog. A record with ``r`` ms to wait enters the largest
tier <= r; on leaving it waits ``r - D`` more, so it hops down the tiers (days: one hop per day),
and a long delay never needs long retention on a busy topic. Under the smallest tier the last
stretch is waited in memory (a timer heap holding at most what comes due within that tier).

A Faust table of timers was the other candidate: every pending record in a store, scanned by due
time. It costs a table write per record (~5k/s on this machine's Faust) and a full changelog
replay on restart, where tiers cost one produce per hop and nothing to recover.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "TIERS_MS",
    "DelayHeaders",
    "Deliver",
    "Tier",
    "Timer",
    "delay_headers",
    "next_stop",
    "parse_delay_headers",
    "tier_of",
]

#: Tier delays in milliseconds, smallest first.
TIERS_MS: tuple[int, ...] = (1_000, 10_000, 60_000, 600_000, 3_600_000, 86_400_000)


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
    due_ms: int, now_ms: int, tiers: tuple[int, ...] = TIERS_MS
) -> Deliver | Timer | Tier:
    """Where a record due at ``due_ms`` waits next, at ``now_ms``."""
    remaining = due_ms - now_ms
    if remaining <= 0:
        return Deliver()
    if remaining < tiers[0]:
        return Timer(due_ms)
    best = tiers[0]
    for delay in tiers:
        if delay <= remaining:
            best = delay
    return Tier(best)


def tier_of(stop: Timer | Tier) -> int:
    """The tier delay a stop writes to (0: the timer tier)."""
    return stop.delay_ms if isinstance(stop, Tier) else 0
