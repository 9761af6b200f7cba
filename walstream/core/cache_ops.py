"""A replicated cache operation read off its log record (issue 17): the ONE conversion from an
envelope with a ``memcached`` target to a :class:`~walstream.core.cache_version.CacheOp`.

The replicating client uses it for its local apply and every region writer for its remote
applies, so every region stores byte-identical items: the same key bytes (the target's ``key``,
UTF-8), the same value bytes (the payload's), the same version (the envelope's original write
time and idempotency token) and the same TTL.

Only the record's shape is checked here (cheap: this runs once per record per region); what
memcached would refuse (a key with a space, a TTL out of range, a value over the item size) is
found by ``cache_version.check_op`` when the operation is applied, with a typed reason.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from walstream.core.cache_version import CacheOp, OpKind
from walstream.core.lww import Version
from walstream.records import Envelope

__all__ = ["NotAnOp", "cache_op", "cache_op_or_poison"]

_KINDS = {kind.value: kind for kind in OpKind}


@dataclass(frozen=True, slots=True)
class NotAnOp:
    """A record that is not a cache operation (its reason says why): dead-letter it."""

    reason: str


def cache_op(env: Envelope) -> CacheOp:
    """The cache operation ``env`` carries.

    Raises:
        ValueError: ``env`` is not a well-formed memcached operation (the message says why).
    """
    target = env.target
    if target.get("type") != "memcached":
        raise ValueError(f"target.type is {target.get('type')!r}, not memcached")
    kind = _KINDS.get(target.get("op"))  # type: ignore[arg-type]
    if kind is None:
        raise ValueError(f"target.op {target.get('op')!r} is not set, delete or touch")
    key = target.get("key")
    if not isinstance(key, str):
        raise ValueError("target.key missing or not a string")
    ttl = target.get("ttl", 0)
    if not isinstance(ttl, int) or isinstance(ttl, bool):
        raise ValueError("target.ttl is not an integer")
    value = b""
    if kind is OpKind.SET:
        if env.payload is None:
            raise ValueError("a set has no payload")
        try:
            value = env.payload_bytes()
        except (binascii.Error, TypeError, ValueError):
            raise ValueError("payload is not valid base64") from None
    return CacheOp(
        kind=kind,
        key=key.encode(),
        version=Version(env.lifecycle.original_write_time_ms, env.idempotency_token),
        value=value,
        ttl_s=ttl,
    )


def cache_op_or_poison(env: Envelope) -> CacheOp | NotAnOp:
    """:func:`cache_op`, or why ``env`` is not an operation (never raises)."""
    try:
        return cache_op(env)
    except ValueError as exc:
        return NotAnOp(str(exc))
