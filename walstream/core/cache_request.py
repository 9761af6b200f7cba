"""A cache operation as a WriteToLog request (issue 17): the way back from
walstream.core.cache_ops.cache_op.

The replicating client (walstream.replication.client) publishes each operation as the record
WriteToLog would write for it: it builds the request body here and runs it through the API's
own validation (walstream.core.validate.parse_write_request), so both paths write
byte-compatible records; that validation takes its namespace rules from here
(:func:`only_cache_ops`, :func:`cache_op_key`). A cache operation's record (the contract of
issue 17)::

    target   {"type": "memcached", "op": "set" | "delete" | "touch", "key": <str>,
              "ttl": <int s, set/touch; absent for delete>, "origin_region": <region>}
    payload  the value (payload_encoding "base64") for a set; null for delete and touch
    key      the memcached key (the Kafka record key: one key's operations on one partition)
    version  lifecycle.original_write_time_ms, idempotency_token
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from walstream.core.cache_version import CacheOp, OpKind
from walstream.errors import BadRequestError
from walstream.namespaces.config import NamespaceConfig
from walstream.records import Lifecycle

__all__ = [
    "MEMCACHED",
    "cache_op_key",
    "check_cache_set_age",
    "check_memcached_target",
    "memcached_target",
    "only_cache_ops",
    "record_key",
    "write_request",
]

#: The target type of a cache operation.
MEMCACHED = "memcached"


def record_key(target: Mapping[str, Any]) -> bytes:
    """The Kafka record key of a cache operation: its memcached key's UTF-8 bytes."""
    return str(target["key"]).encode()


def memcached_target(
    kind: OpKind, key: str, *, origin_region: str, ttl_s: int = 0
) -> dict[str, Any]:
    """The memcached target of an operation (``ttl`` for set and touch, none for delete)."""
    target: dict[str, Any] = {"type": MEMCACHED, "op": kind.value, "key": key}
    if kind is not OpKind.DELETE:
        target["ttl"] = ttl_s
    target["origin_region"] = origin_region
    return target


def write_request(op: CacheOp, *, origin_region: str) -> dict[str, Any]:
    """The WriteToLog request body of ``op``, whose record cache_ops.cache_op reads back as
    ``op``: envelope key = the memcached key, the version as ``original_write_time`` and
    ``idempotency_token``, a set's value base64.

    Raises:
        UnicodeDecodeError: ``op.key`` is not UTF-8 (a log record's key is text).
    """
    key = op.key.decode()
    is_set = op.kind is OpKind.SET
    return {
        "payload": base64.b64encode(op.value).decode() if is_set else None,
        "payload_encoding": "base64" if is_set else "json",
        "target": memcached_target(op.kind, key, origin_region=origin_region, ttl_s=op.ttl_s),
        "idempotency_token": op.version.idempotency_token,
        "key": key,
        "lifecycle": {"original_write_time": op.version.original_write_time_ms},
    }


def only_cache_ops(target: Mapping[str, Any], ns: NamespaceConfig) -> None:
    """A replicated namespace carries cache operations only (its log feeds the region
    writers, not the deliver agents)."""
    if ns.replication is not None and target["type"] != "memcached":
        raise BadRequestError(
            "target.type",
            f"must be memcached: {ns.name} replicates a memcached cache across regions, its "
            f"log carries cache operations only (not {target['type']})",
        )


def cache_op_key(
    obj: dict[str, Any], target: Mapping[str, Any], key: str | None, lifecycle: Lifecycle
) -> str:
    """A cache operation's record key: its memcached key (one key's operations on one
    partition, in order). It is not delayed (the region writers apply it when it arrives),
    and a set has a value."""
    if key is not None and key != target["key"]:
        raise BadRequestError("key", "must be the memcached target's key (or left out)")
    life = obj.get("lifecycle") or {}
    if lifecycle.delay_ms or life.get("jitter_ms"):  # a jitter too, whatever its draw
        raise BadRequestError(
            "lifecycle", "a memcached operation is not delayed: give only original_write_time"
        )
    if target["op"] == "set" and obj["payload"] is None:
        raise BadRequestError("payload", "is required for a memcached set: its value")
    return str(target["key"])


def check_memcached_target(
    target: Mapping[str, Any], payload: Any, ns: NamespaceConfig, field: str = "target"
) -> None:
    """A memcached target (walstream.core.targets.parse_memcached_target) against the namespace
    it is written to: the namespace replicates (``replication``), the operation's origin is one
    of its regions, and only a set carries a value (``payload`` null for a delete or touch).

    Raises:
        BadRequestError: naming ``target.type``, ``target.origin_region`` or ``payload``.
    """
    replication = ns.replication
    if replication is None:
        raise BadRequestError(
            f"{field}.type",
            f"memcached needs a namespace with replication regions; {ns.name} has none",
        )
    origin = target.get("origin_region")
    if replication.region(str(origin)) is None:
        names = ", ".join(replication.region_names)
        raise BadRequestError(
            f"{field}.origin_region", f"{origin!r} is not a region of {ns.name} ({names})"
        )
    op = target.get("op")
    if op != "set" and payload is not None:
        raise BadRequestError(
            "payload", f"must be null for a memcached {op}: only a set has a value"
        )


def check_cache_set_age(
    target: Mapping[str, Any], original_write_time_ms: int, ns: NamespaceConfig, now_ms: int
) -> None:
    """A cache set older than its namespace can replicate is refused: region writers
    dead-letter a set older than ``tombstone_ttl_s`` when it reaches them (a delete's
    tombstone may be gone: applying it could bring a deleted value back), and it may take
    ``max_lag_s`` to get there, so a set written more than ``tombstone_ttl_s - max_lag_s`` ago
    would be applied in its origin only (answered TRUE, then dead-lettered everywhere else).

    Raises:
        BadRequestError: naming ``lifecycle.original_write_time``.
    """
    replication = ns.replication
    if replication is None or target.get("op") != "set":
        return
    allowed_s = replication.tombstone_ttl_s - replication.max_lag_s
    age_ms = now_ms - original_write_time_ms
    if age_ms > allowed_s * 1000:
        raise BadRequestError(
            "lifecycle.original_write_time",
            f"a cache set written {age_ms // 1000} s ago is older than {ns.name} replicates "
            f"({allowed_s} s: replication.tombstone_ttl_s less max_lag_s); other regions "
            "would dead-letter it as older_than_tombstone_ttl",
        )
