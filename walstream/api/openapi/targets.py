"""The OpenAPI schemas of a record's target: one object per target type, and their union.

They follow walstream.core.targets.parse_target (a test holds the two to each other), and change
with it, not with the write envelope that carries a target.
"""

from __future__ import annotations

from typing import Any

from walstream.api.openapi.fields import (
    HEADER_NAME,
    HEADER_VALUE,
    KEY,
    KV_KEY,
    SERVERS,
    UNSENDABLE_NAME,
    text,
)
from walstream.core import targets as _targets
from walstream.core.targets import NAMESPACE_NAME

__all__ = [
    "MEMCACHED_TARGET",
    "NULLABLE_TARGET",
    "TARGET_SCHEMAS",
    "WRITE_TARGET",
    "target_schemas",
]

#: type -> (required options, {option: schema}): what walstream.core.targets.parse_target checks
#: (a test holds the two to each other).
TARGET_SCHEMAS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "kafka": (
        ["topic"],
        {
            "topic": text(249, _targets._TOPIC_NAME.pattern),
            "key": KEY,
            "bootstrap_servers": SERVERS,
        },
    ),
    "http": (
        ["url"],
        {
            "url": {**text(2048, "^https?://"), "description": "an http:// or https:// URL"},
            "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 300_000},
            "headers": {
                "type": "object",
                "description": (
                    "sent with every delivery; not a framing or hop-by-hop header (Content-Length, "
                    "Transfer-Encoding, Host, Connection, Keep-Alive, Proxy-Connection, "
                    "Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Upgrade, Expect), nor "
                    "one walstream sets on every delivery (Idempotency-Key, X-Wal-Id, "
                    "X-Wal-Namespace, X-Wal-Original-Write-Time, X-Wal-Attempt, "
                    "X-Wal-Deliver-At), whatever its case: 400"
                ),
                "propertyNames": {"pattern": HEADER_NAME, "not": {"pattern": UNSENDABLE_NAME}},
                "additionalProperties": {"type": "string", "pattern": HEADER_VALUE},
            },
        },
    ),
    "kv": (
        ["table", "key"],
        {
            "table": text(63, _targets._IDENTIFIER.pattern),
            "key": KV_KEY,
            "op": {"type": "string", "enum": ["put", "delete"], "default": "put"},
        },
    ),
    "wal": (
        ["namespace"],
        {"namespace": text(63, NAMESPACE_NAME.pattern), "bootstrap_servers": SERVERS},
    ),
}

#: A cache operation's target (issue 17): what walstream.core.targets.parse_memcached_target
#: checks. Not one of TARGET_SCHEMAS: only WriteToLog takes it (WRITE_TARGET), not a namespace's
#: own target nor a redrive's.
MEMCACHED_TARGET: tuple[list[str], dict[str, Any]] = (
    ["op", "key", "origin_region"],
    {
        "op": {"type": "string", "enum": list(_targets.MEMCACHED_OPS)},
        "key": {
            "type": "string",
            "minLength": 1,
            "maxLength": _targets.MEMCACHED_MAX_KEY_BYTES,
            "pattern": "^[^\\x00-\\x20\\x7f]+$",
            "description": "the memcached key: at most 250 bytes (UTF-8), no space or control "
            "character; the record's key too (one key's operations stay in order)",
        },
        "ttl": {
            "type": "integer",
            "minimum": 0,
            "maximum": _targets.MEMCACHED_MAX_TTL_S,
            "description": "seconds, 0: none; required by touch, refused for delete",
        },
        "origin_region": {
            **text(63, _targets.REGION_NAME.pattern),
            "description": "the region the operation was made in: one of the namespace's "
            "replication regions (the others get it)",
        },
    },
)


def _object_schema(kind: str, required: list[str], options: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["type", *required],
        "properties": {"type": {"type": "string", "const": kind}, **options},
    }


def _target_schema(kind: str) -> dict[str, Any]:
    return _object_schema(kind, *TARGET_SCHEMAS[kind])


def _memcached_schema() -> dict[str, Any]:
    schema = _object_schema("memcached", *MEMCACHED_TARGET)
    schema["allOf"] = [
        {
            "if": {"properties": {"op": {"const": "touch"}}},
            "then": {"required": ["ttl"]},
        },
        {
            "if": {"properties": {"op": {"const": "delete"}}},
            "then": {"not": {"required": ["ttl"]}},
        },
    ]
    return schema


def _target_name(kind: str) -> str:
    return f"{kind.capitalize()}Target"


def target_schemas() -> dict[str, dict[str, Any]]:
    """The components: ``KafkaTarget``, ``HttpTarget``, ... (by type), then ``Target``."""
    kinds = sorted(TARGET_SCHEMAS)
    return {
        **{_target_name(kind): _target_schema(kind) for kind in kinds},
        "Target": {
            "oneOf": [{"$ref": f"#/components/schemas/{_target_name(k)}"} for k in kinds],
            "discriminator": {
                "propertyName": "type",
                "mapping": {k: f"#/components/schemas/{_target_name(k)}" for k in kinds},
            },
            "description": (
                "Where a record is delivered. A destination other than the namespace's own "
                "target's (http origin, kafka cluster and topic, kv table, wal namespace) that "
                "its allowed_targets do not list, or one of walstream's own topics (control, "
                "changelogs, delay tiers, wal.*): 403."
            ),
        },
        "MemcachedTarget": _memcached_schema(),
    }


NULLABLE_TARGET = {
    "oneOf": [{"$ref": "#/components/schemas/Target"}, {"type": "null"}],
    "description": "absent or null: the namespace's own target",
}

WRITE_TARGET = {
    "oneOf": [
        {"$ref": "#/components/schemas/Target"},
        {"$ref": "#/components/schemas/MemcachedTarget"},
        {"type": "null"},
    ],
    "description": (
        "absent or null: the namespace's own target. A memcached target is a cache operation "
        "(issue 17), taken only by a namespace with replication regions, which takes no other "
        "target (400 naming target.type either way): origin_region one of its regions, the "
        "payload a set's value (base64 for bytes) and null for delete and touch, no delay, "
        "the key absent or the target's key (400 naming the field)."
    ),
}
