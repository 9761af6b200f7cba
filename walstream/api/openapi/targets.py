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
    SERVERS,
    UNSENDABLE_NAME,
    text,
)
from walstream.core import targets as _targets
from walstream.core.targets import NAMESPACE_NAME

__all__ = ["NULLABLE_TARGET", "TARGET_SCHEMAS", "target_schemas"]

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
            "key": KEY,
            "op": {"type": "string", "enum": ["put", "delete"], "default": "put"},
        },
    ),
    "wal": (
        ["namespace"],
        {"namespace": text(63, NAMESPACE_NAME.pattern), "bootstrap_servers": SERVERS},
    ),
}


def _target_schema(kind: str) -> dict[str, Any]:
    required, options = TARGET_SCHEMAS[kind]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["type", *required],
        "properties": {"type": {"type": "string", "const": kind}, **options},
    }


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
    }


NULLABLE_TARGET = {
    "oneOf": [{"$ref": "#/components/schemas/Target"}, {"type": "null"}],
    "description": "absent or null: the namespace's own target",
}
