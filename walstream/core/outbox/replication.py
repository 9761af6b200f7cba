"""The records of a replicated namespace's per-region stages (issue 17), built in one place.

* a region copy (``region_copy``): the fan-out's copy of a log record for a region's topic, its
  Kafka key kept (a key's operations stay in order within the region's topic). In
  ``invalidate`` mode a set travels as a delete of the same key at the same version (same id,
  idempotency token and original write time), so the region's LWW decides it as the set.
* an origin repair (``origin_repair``): the replicating client's second copy of an operation it
  logged but could not apply in its own region (its local memcached away, a CAS race lost every
  round): the same record (same envelope bytes: id, version, key) with the header
  ``wal-origin-repair: 1``. The fan-out copies a record carrying it to its origin region only
  (``fanout_regions(..., repair=True)``), whose writer applies it with LWW like any copy.
* a region DLQ entry (``region_dlq_entry``): an operation a region's writer can never apply (a
  key memcached refuses, a value over the item size, a record that is no cache operation),
  with the reason in ``wal-error`` like every DLQ entry.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from walstream.core.outbox.records import Headers, Outgoing, OutRecord, dlq_entry
from walstream.records import Envelope, encode_envelope

__all__ = [
    "ORIGIN_REPAIR_HEADER",
    "POISON_OPERATION",
    "fanout_regions",
    "invalidation",
    "is_origin_repair",
    "origin_region",
    "origin_repair",
    "region_copy",
    "region_dlq_entry",
]

#: ``wal-error-class`` of a region DLQ entry.
POISON_OPERATION = "PoisonOperation"

#: The header of an origin repair (value ``1``): a logged operation the replicating client could
#: not apply in its own region, for the fan-out to copy to that region only.
ORIGIN_REPAIR_HEADER = "wal-origin-repair"


def fanout_regions(
    origin: str | None, regions: Sequence[str], *, repair: bool = False
) -> list[str]:
    """The regions an operation made in region ``origin`` is copied to: every one but its
    origin (None, a record that is not readable: every region, whose writer dead-letters it with
    its reason). An origin repair (``repair``, :func:`is_origin_repair`) goes to its origin
    only, when ``regions`` holds it (None: nowhere, the record's first copy reached every
    region's writer already)."""
    if repair:
        return [region for region in regions if region == origin and origin is not None]
    return [region for region in regions if region != origin]


def origin_repair(record: Outgoing) -> Outgoing:
    """The origin repair of a logged operation's ``record``: the same record (topic, key,
    envelope bytes) with ``wal-origin-repair: 1``."""
    headers: Headers = [*(record.headers or []), (ORIGIN_REPAIR_HEADER, b"1")]
    return record._replace(headers=headers)


def is_origin_repair(headers: Sequence[tuple[str, bytes]] | None) -> bool:
    """Whether a log record's ``headers`` make it an origin repair (``wal-origin-repair: 1``;
    any other value is not one)."""
    return any(name == ORIGIN_REPAIR_HEADER and value == b"1" for name, value in headers or ())


def origin_region(value: bytes | None) -> str | None:
    """The ``origin_region`` of a logged cache operation's target, read without decoding the
    whole envelope (the fan-out's path for every record in ``value`` mode); None when
    ``value`` holds none (not a cache operation: its regions' writers say why)."""
    try:
        target = orjson.loads(value or b"").get("target")
        origin = target.get("origin_region")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return origin if isinstance(origin, str) else None


def invalidation(env: Envelope) -> Envelope | None:
    """A set as the delete ``invalidate`` mode applies elsewhere: same key, id, version; no
    value, no TTL. None when ``env`` is not a set (it travels as it is)."""
    target = env.target
    if target.get("op") != "set":
        return None
    delete = {name: value for name, value in target.items() if name != "ttl"}
    delete["op"] = "delete"
    return env._replace(target=delete, payload=None, payload_encoding="json")


def region_copy(
    value: bytes | None,
    key: bytes | None,
    env: Envelope | None,
    *,
    topic: str,
    invalidate: bool = False,
) -> OutRecord:
    """A log record's copy for a region's ``topic`` (the producer picks the partition by key).
    ``value`` travels byte for byte unless ``invalidate`` turns a set into a delete."""
    if invalidate and env is not None:
        delete = invalidation(env)
        if delete is not None:
            value = encode_envelope(delete)
    return OutRecord(topic, None, key, value)


def region_dlq_entry(
    value: bytes | None,
    *,
    dlq_topic: str,
    partition: int,
    record_id: str,
    namespace: str,
    reason: str,
    source: str,
    dead_at_ms: int,
    key: str | None,
) -> OutRecord:
    """A region DLQ entry of the record read at ``source`` (``topic[partition]@offset``), on
    the partition it was read from, with ``reason`` (a PoisonReason's value, or why the record
    is no cache operation)."""
    return dlq_entry(
        value,
        dlq_topic=dlq_topic,
        partition=partition,
        record_id=record_id,
        namespace=namespace,
        reason=reason,
        error_class=POISON_OPERATION,
        source=source,
        attempts=1,
        dead_at_ms=dead_at_ms,
        origin=None,
        key=key,
    )
