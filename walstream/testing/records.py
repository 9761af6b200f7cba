"""Records and namespaces for tests: envelopes, namespace definitions, registries."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.records import Envelope, Lifecycle, encode_envelope

#: The fakes' "now": a fixed wall-clock time (2027-01-15), far from any edge.
NOW_MS = 1_800_000_000_000

#: A record's headers as walstream passes them.
Headers = list[tuple[str, bytes]]


# -- records and namespaces ------------------------------------------------------------------


def envelope(
    n: int = 1, *, key: str = "k1", ns: str = "orders", delay_ms: int = 0, now_ms: int = NOW_MS
) -> Envelope:
    """Record ``id-<n>`` of namespace ``ns`` (payload ``{"n": n}``, token ``tok-<n>``, a kafka
    target), written at ``now_ms`` and due ``delay_ms`` later."""
    return Envelope(
        f"id-{n}",
        ns,
        key,
        {"n": n},
        "json",
        {"type": "kafka", "topic": "out"},
        Lifecycle(now_ms + delay_ms, now_ms, delay_ms),
        f"tok-{n}",
        now_ms,
    )


def namespace_definition(
    name: str = "orders", *, base_ms: int = 2_000, cap_ms: int = 60_000, **extra: Any
) -> dict[str, Any]:
    """A namespace definition: 3 attempts, a backoff from ``base_ms`` doubling up to ``cap_ms``
    (no jitter), a kafka target; ``extra`` adds or replaces fields."""
    return {
        "name": name,
        "max_attempts": 3,
        "backoff": {"base_ms": base_ms, "multiplier": 2.0, "cap_ms": cap_ms, "jitter": 0.0},
        "target": {"type": "kafka", "topic": "out"},
        **extra,
    }


def kv_envelope(value: Any, owt: int, token: str, *, key: str = "k1", op: str = "put") -> Envelope:
    """A kv record (table ``items``) of namespace ``ns``: ``op`` of ``value`` at ``key``, written
    at ``owt`` with idempotency token ``token`` (id ``id-<token>``)."""
    return Envelope(
        id=f"id-{token}",
        namespace="ns",
        key=key,
        payload=value,
        payload_encoding="json",
        target={"type": "kv", "table": "items", "key": key, "op": op},
        lifecycle=Lifecycle(deliver_at_ms=owt, original_write_time_ms=owt, delay_ms=0),
        idempotency_token=token,
        created_at_ms=owt,
    )


def keyless_envelope(
    record_id: str, ns: str, payload: Any, target: dict[str, Any], created_at_ms: int, token: str
) -> Envelope:
    """Record ``record_id`` of ``ns``, keyless, with a JSON ``payload`` for ``target``, written
    and due at ``created_at_ms`` with idempotency token ``token``."""
    return Envelope(
        id=record_id,
        namespace=ns,
        key=None,
        payload=payload,
        payload_encoding="json",
        target=target,
        lifecycle=Lifecycle(created_at_ms, created_at_ms),
        idempotency_token=token,
        created_at_ms=created_at_ms,
    )


def http_record(ns: str, url: str, created_at_ms: int) -> tuple[str, bytes]:
    """A keyless record of ``ns`` to the http target ``url``, written and due at
    ``created_at_ms``, its id (a new UUID, the idempotency token too) and its bytes."""
    record_id = str(uuid.uuid4())
    target = {"type": "http", "url": url}
    env = keyless_envelope(record_id, ns, {"id": record_id}, target, created_at_ms, record_id)
    return record_id, encode_envelope(env)


def registry_of(*definitions: Mapping[str, Any], first_version: int = 1) -> NamespaceRegistry:
    """A registry holding each namespace definition, applied in turn as versions
    ``first_version``, ``first_version + 1``, ..."""
    registry = NamespaceRegistry()
    for version, definition in enumerate(definitions, first_version):
        registry.apply(*encode_event(parse_namespace(dict(definition)), version))
    return registry
