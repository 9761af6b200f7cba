"""Closing DLQ entries: the marker that closes an entry (redriven or discarded), the settle
marker that lets a key held behind it go on, and ``discard``, which writes both (and for a
dead-lettered transaction, its expiry wake: its rows are dropped at once)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from walstream.clock import Clock, SystemClock
from walstream.core import outbox
from walstream.core.dlq import DlqEntry, MarkerKind, expiry_marker
from walstream.dlq.kafka_io import send
from walstream.errors import PoisonRecordError
from walstream.namespaces.config import NamespaceConfig
from walstream.records import decode_envelope
from walstream.topology import mutation_topics

__all__ = ["close_entry", "discard", "expire_transaction", "settle_key"]

logger = logging.getLogger("walstream.dlq")


async def discard(
    producer: Any,
    ns: NamespaceConfig,
    entries: Sequence[DlqEntry],
    clock: Clock | None = None,
    *,
    settle: bool = True,
) -> int:
    """Close entries without redriving them; return how many.

    Each discarded record with a key gets a settle marker too: a key held behind it (per-key
    ordering, ``on_dlq = "hold"``) goes on with its next record. The worker ignores the marker
    when the key is not held by that record (or the namespace is not ordered). Without
    ``settle`` (a region DLQ: nothing holds a key behind its entries), no marker.

    A dead-lettered transaction's entry (issue 18) is closed, then its expiry wake sent
    (``expire_transaction``): the worker drops the transaction's rows at once instead of when
    the idempotency window ends (its status is then unknown, 404). Closed first: a crash in
    between leaves the rows to their own expiry, never an open entry of dropped rows."""
    clock = clock or SystemClock()
    for entry in entries:
        if settle:
            await settle_key(producer, ns, entry)
        await close_entry(producer, ns, entry, MarkerKind.DISCARDED, clock.now_ms())
        if settle:
            await expire_transaction(producer, ns, entry)
    return len(entries)


async def expire_transaction(producer: Any, ns: NamespaceConfig, entry: DlqEntry) -> bool:
    """Send the expiry wake of the transaction ``entry`` dead-lettered (its id named on the
    entry: walstream.core.dlq.expiry_marker) to the namespace's markers topic, keyed by the txn
    id (the partition of its rows), due now; whether it was sent. Not sent: not a transaction's
    entry, one naming no expiry wake (written before ``wal-mutation-expiry``), an unreadable
    one, or a namespace taking no mutations now (its worker drops the rows on the transaction's
    next wake). The worker drops the rows unless a redrive revived the transaction since."""
    try:
        wake = expiry_marker(entry)
    except PoisonRecordError as exc:
        logger.warning("DLQ entry %s of %s: no expiry sent (%s)", entry.id, ns.name, exc.reason)
        return False
    if wake is None or ns.mutations is None:
        return False
    markers = mutation_topics(ns.name).markers
    await send(producer, outbox.OutRecord(markers, None, wake.key, wake.value))
    return True


async def settle_key(producer: Any, ns: NamespaceConfig, entry: DlqEntry) -> str | None:
    """Send the settle marker of the key ``entry``'s record may hold; return the key (None:
    keyless, or not a record). The key is the entry's ``wal-key`` header (an entry written
    without its record has only that), else the record's. A mutation's entry (issue 18) holds
    no key: its transaction's records are no log records, ordered by no key."""
    if entry.mutation is not None:
        return None
    key = entry.key
    if key is None:
        try:
            key = decode_envelope(entry.value).key
        except PoisonRecordError:
            return None  # not a record, and no key named: it never headed a key
    if key is None:
        return None
    partition = entry.partition if entry.partition >= 0 else None
    await send(
        producer, outbox.settle_marker(ns.topics.retry, ns.name, entry.id, key.encode(), partition)
    )
    return key


async def close_entry(
    producer: Any, ns: NamespaceConfig, entry: DlqEntry, kind: MarkerKind, now_ms: int
) -> None:
    """Append the marker that closes ``entry``, naming it by its coordinates (on its
    partition, so it follows the entry)."""
    marker = outbox.dlq_close_marker(
        ns.topics.dlq, entry.id, entry.partition, entry.offset, kind, now_ms
    )
    await send(producer, marker)
