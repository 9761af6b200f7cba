"""Cache operations for tests of the replication stages (issue 17): envelopes with a memcached
target, as the replicating client and WriteToLog log them (the record contract of
/work/notes/ISSUE17_CONTRACT.md), and their Kafka records."""

from __future__ import annotations

import base64
from typing import Any

from walstream.records import Envelope, Lifecycle, encode_envelope
from walstream.testing.records import NOW_MS

__all__ = ["cache_envelope", "cache_record"]


def cache_envelope(
    op: str,
    key: str,
    value: bytes | None = None,
    *,
    ns: str = "cache",
    origin: str = "a",
    ttl: int | None = None,
    owt_ms: int = NOW_MS,
    token: str = "tok-1",  # noqa: S107 - an idempotency token
) -> Envelope:
    """A ``op`` (set, delete, touch) of ``key`` logged in region ``origin`` at ``owt_ms`` with
    idempotency token ``token`` (id ``id-<token>``); a set carries ``value`` (base64)."""
    target: dict[str, Any] = {"type": "memcached", "op": op, "key": key, "origin_region": origin}
    if ttl is not None:
        target["ttl"] = ttl
    payload = base64.b64encode(value).decode() if value is not None else None
    return Envelope(
        id=f"id-{token}",
        namespace=ns,
        key=key,
        payload=payload,
        payload_encoding="base64" if value is not None else "json",
        target=target,
        lifecycle=Lifecycle(owt_ms, owt_ms, 0),
        idempotency_token=token,
        created_at_ms=owt_ms,
    )


def cache_record(env: Envelope) -> tuple[bytes, bytes]:
    """The Kafka key and value of ``env`` in its namespace's log (key: the memcached key)."""
    return str(env.target["key"]).encode(), encode_envelope(env)
