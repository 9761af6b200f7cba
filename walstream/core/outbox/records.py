"""The records walstream writes besides a new write, built in one place (pure; no I/O).

Each builder returns an ``OutRecord`` (topic, partition, key, value, headers, timestamp) that the
caller only sends. The wire protocol these records follow is described in the package docstring
(``walstream.core.outbox``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from walstream.core.delay import (
    TIERS_MS,
    DelayHeaders,
    Deliver,
    Timer,
    delay_headers,
    due_header,
    next_stop,
    tier_of,
)
from walstream.core.dlq import (
    CLAIM_KEY,
    CLAIM_PARTITION,
    MarkerKind,
    claim_headers,
    entry_headers,
)
from walstream.core.dlq import marker_headers as dlq_marker_headers
from walstream.core.ordering import RecordRef
from walstream.core.origin import carried_origin, origin_headers
from walstream.core.outbox import markers
from walstream.records import Envelope, encode_envelope
from walstream.topology import delay_topic

__all__ = [
    "OutRecord",
    "Outgoing",
    "dlq_close_marker",
    "dlq_entry",
    "forward",
    "hop",
    "poison_id",
    "redrive_claim",
    "redriven",
    "release_marker",
    "retry_copy",
    "route_write",
    "settle_marker",
    "tier_partition",
    "tier_topic",
    "wait",
    "wait_headers",
]

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to send, exactly as it is to be sent."""

    topic: str
    #: None: the producer picks (by key)
    partition: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None
    #: the record's timestamp (a wait's write into its tier); None: the producer's clock
    timestamp_ms: int | None = None


# -- waiting in the delay tiers: the one rule for tier, partition and headers ---------------------


def tier_topic(
    due_ms: int, now_ms: int, app_id: str, tiers: tuple[int, ...] = TIERS_MS
) -> str | None:
    """The delay tier a record due at ``due_ms`` waits in at ``now_ms`` (the timer tier for the
    last stretch); None: due now, it goes straight to its destination."""
    stop = next_stop(due_ms, now_ms, tiers)
    if isinstance(stop, Deliver):
        return None
    return delay_topic(app_id, tier_of(stop))


def tier_partition(dest_partition: int, tier_partitions: int) -> int:
    """The partition of a tier (``tier_partitions`` of them) a record bound for
    ``dest_partition`` of its destination waits on: the same number, wrapped. Every record of a
    destination partition then waits on one tier partition (FIFO, so in write order)."""
    return dest_partition % tier_partitions


def wait_headers(
    due_ms: int, dest_topic: str, dest_partition: int, origin: str | None = None
) -> Headers:
    """The headers of a record waiting in a tier: when and where it is due, and ``wal-origin``."""
    return [*delay_headers(due_ms, dest_topic, dest_partition), *origin_headers(origin)]


def wait(
    value: bytes | None,
    key: bytes | None,
    *,
    due_ms: int,
    now_ms: int,
    dest_topic: str,
    dest_partition: int,
    app_id: str,
    tier_partitions: int,
    origin: str | None = None,
    tiers: tuple[int, ...] = TIERS_MS,
) -> OutRecord:
    """A record that waits until ``due_ms`` and then goes back to ``dest_topic[dest_partition]``:
    into its delay tier (timestamped ``now_ms``), or, due already, straight there."""
    topic = tier_topic(due_ms, now_ms, app_id, tiers)
    if topic is None:
        return OutRecord(dest_topic, dest_partition, key, value, origin_headers(origin) or None)
    return OutRecord(
        topic,
        tier_partition(dest_partition, tier_partitions),
        key,
        value,
        wait_headers(due_ms, dest_topic, dest_partition, origin),
        now_ms,
    )


def hop(
    value: bytes | None,
    key: bytes | None,
    headers: Iterable[tuple[str, bytes]],
    delay: DelayHeaders,
    *,
    now_ms: int,
    app_id: str,
    tier_partitions: int,
    tiers: tuple[int, ...] = TIERS_MS,
) -> OutRecord | None:
    """A record leaving a tier that still has a tier's wait ahead: the same wait, one tier down
    (its headers as they were, timestamped ``now_ms``); None: its last stretch is the delay
    stage's timer heap."""
    stop = next_stop(delay.due_ms, now_ms, tiers)
    if isinstance(stop, (Deliver, Timer)):
        return None
    return OutRecord(
        delay_topic(app_id, tier_of(stop)),
        tier_partition(delay.dest_partition, tier_partitions),
        key,
        value,
        list(headers),
        now_ms,
    )


def forward(
    value: bytes | None,
    key: bytes | None,
    headers: Iterable[tuple[str, bytes]] | None,
    delay: DelayHeaders,
) -> OutRecord:
    """A waiting record handed to its destination (up to the hand-over lead before it is due):
    its due time in ``wal-due``, its ``wal-origin`` carried on."""
    return OutRecord(
        delay.dest_topic,
        delay.dest_partition,
        key,
        value,
        [*due_header(delay.due_ms), *carried_origin(headers)],
    )


def retry_copy(
    value: bytes, key: bytes | None, *, retry_topic: str, partition: int, due_ms: int, origin: str
) -> OutRecord:
    """A retry due within the hand-over lead: straight to the retry topic, held there till due."""
    return OutRecord(
        retry_topic, partition, key, value, [*due_header(due_ms), *origin_headers(origin)]
    )


# -- the DLQ ------------------------------------------------------------------------------------


def poison_id(topic: str, partition: int, offset: int) -> str:
    """The id of a DLQ entry of bytes that are not a record (named by where they were read)."""
    return f"poison-{topic}-{partition}-{offset}"


def dlq_entry(
    value: bytes | None,
    *,
    dlq_topic: str,
    partition: int | None,
    record_id: str,
    namespace: str,
    reason: str,
    error_class: str,
    source: str,
    attempts: int,
    dead_at_ms: int,
    origin: str | None,
    behind: Sequence[str] = (),
    key: str | None = None,
) -> OutRecord:
    """A DLQ entry of a record (or of bytes: a poison entry), keyed by its id, on ``partition``
    (that of its source; None: any). ``origin``: where the worker first read it (``wal-origin``;
    None: never read by the worker); ``key``: the record's key (``wal-key``)."""
    headers = entry_headers(
        namespace=namespace,
        reason=reason,
        error_class=error_class,
        source=source,
        attempts=attempts,
        dead_at_ms=dead_at_ms,
        behind=behind,
        key=key,
    )
    return OutRecord(
        dlq_topic, partition, record_id.encode(), value, headers + origin_headers(origin)
    )


def dlq_close_marker(
    dlq_topic: str, record_id: str, partition: int, offset: int, kind: MarkerKind, now_ms: int
) -> OutRecord:
    """The marker closing the DLQ entry at ``partition@offset`` (negative: not known), on that
    entry's partition so it follows the entry."""
    known = partition >= 0 and offset >= 0
    return OutRecord(
        dlq_topic,
        partition if partition >= 0 else None,
        record_id.encode(),
        b"",
        dlq_marker_headers(kind, now_ms, (partition, offset) if known else None),
    )


def redrive_claim(
    dlq_topic: str, claim: str, at_ms: int, lease_ms: int, *, released: bool = False
) -> OutRecord:
    """A redrive's claim on a DLQ (or its release)."""
    return OutRecord(
        dlq_topic,
        CLAIM_PARTITION,
        CLAIM_KEY,
        b"",
        claim_headers(claim, at_ms, lease_ms, released=released),
    )


def redriven(env: Envelope, log_topic: str, target: Mapping[str, Any] | None = None) -> OutRecord:
    """A dead record appended to its log again, for a fresh start: attempts from 0 under a count
    of its own (``redrive`` + 1: a copy the worker may still count attempts of is not taken for
    a stale one), a fresh budget; ``target`` replaces its target when given."""
    again = env._replace(
        attempt=0,
        not_before_ms=0,
        first_attempt_ms=0,
        redrive=env.redrive + 1,
        target=dict(target) if target else env.target,
    )
    key = env.key.encode() if env.key is not None else None
    return OutRecord(log_topic, None, key, encode_envelope(again))


# -- ordering markers ---------------------------------------------------------------------------


def release_marker(
    retry_topic: str,
    namespace: str,
    ref: RecordRef,
    key: bytes | None,
    partition: int,
    *,
    tries: int = 0,
    due_ms: int | None = None,
) -> OutRecord:
    """The marker handing a key to its parked record ``ref``; ``due_ms``: handled again then
    (the record could not be read back yet, ``tries`` times)."""
    headers = markers.marker_headers(markers.MarkerKind.RELEASE)
    if due_ms is not None:
        headers += due_header(due_ms)
    value = markers.marker_value(namespace, ref.id, ref, tries=tries)
    return OutRecord(retry_topic, partition, key, value, headers)


def settle_marker(
    retry_topic: str, namespace: str, record_id: str, key: bytes, partition: int | None
) -> OutRecord:
    """The marker ending the head ``record_id`` of ``key``, held in the DLQ (discarded)."""
    headers = markers.marker_headers(markers.MarkerKind.SETTLE)
    return OutRecord(
        retry_topic, partition, key, markers.marker_value(namespace, record_id), headers
    )


# -- a new write ----------------------------------------------------------------------------------


class Outgoing(NamedTuple):
    """One write to send (the API's): a record for the log, or a delayed one for a tier."""

    topic: str
    key: bytes | None
    value: bytes
    #: A delayed record: (due time, the log topic it is due on). ``topic`` is then a delay tier;
    #: the record goes on the partition number its key takes in that log topic, which its delay
    #: headers name (``placed``), so it comes back where an undelayed write of it would have gone.
    due: tuple[int, str] | None = None
    #: headers of its own (an origin repair's ``wal-origin-repair``), besides a delayed
    #: record's wait headers
    headers: Headers | None = None

    def placed(self, dest_partition: int, tier_partitions: int) -> tuple[int, Headers]:
        """A delayed write's tier partition and headers, given the log partition its key takes
        (``dest_partition``) and the tier's partition count."""
        assert self.due is not None  # noqa: S101 - only a delayed write is placed
        due_ms, dest = self.due
        return tier_partition(dest_partition, tier_partitions), wait_headers(
            due_ms, dest, dest_partition
        )


def route_write(
    env: Envelope, log_topic: str, now_ms: int, app_id: str, *, key_ordered: bool = False
) -> Outgoing:
    """Where a WriteToLog record is written: a due record to the log; a delayed one straight to
    the delay tiers (not through the deliver agent), addressed to come back to the log, on its
    key's partition, when due.

    ``key_ordered`` (a namespace with ``ordering = "key"``): a delayed record with a key goes
    to the log too, so the deliver agent sees it in write order and holds the key's later
    records behind it while it waits in the tiers."""
    key = env.key.encode() if env.key is not None else None
    value = encode_envelope(env)
    due_ms = env.lifecycle.deliver_at_ms  # a new write has no retry backoff
    if due_ms <= now_ms or (key_ordered and key is not None):  # the common case, first
        return Outgoing(log_topic, key, value)
    topic = tier_topic(due_ms, now_ms, app_id)
    if topic is None:  # pragma: no cover - due_ms > now_ms here: a tier or the timer tier
        return Outgoing(log_topic, key, value)
    return Outgoing(topic=topic, key=key, value=value, due=(due_ms, log_topic))
