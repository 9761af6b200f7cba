"""The OpenAPI schemas and paths of the namespaces a process knows: list one or all.

They follow walstream.namespaces.config's JSON form (a test checks a served one), which changes
with the namespace configuration, not with the write path.
"""

from __future__ import annotations

from typing import Any

from walstream.api.openapi.responses import NOT_FOUND, NS_PARAM, UNAVAILABLE, json_content
from walstream.core.targets import MEMCACHED_MAX_TTL_S, REGION_NAME
from walstream.namespaces.config import MAX_COMPLETION_TIMEOUT_S

__all__ = ["NAMESPACE", "NAMESPACE_LIST", "paths"]

#: A namespace's replication regions (walstream.namespaces.replication.Replication.to_json).
REPLICATION = {
    "type": "object",
    "required": ["replicate", "regions", "max_lag_s", "tombstone_ttl_s"],
    "additionalProperties": False,
    "properties": {
        "replicate": {"type": "string", "enum": ["value", "invalidate"]},
        "regions": {
            "type": "object",
            "minProperties": 2,
            "propertyNames": {"pattern": REGION_NAME.pattern},
            "additionalProperties": {
                "type": "object",
                "required": ["memcached"],
                "additionalProperties": False,
                "properties": {
                    "memcached": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"type": "string", "description": "host:port, [IPv6]:port"},
                    },
                    # absent: the deployment's own cluster
                    "bootstrap_servers": {"type": "string"},
                },
            },
        },
        "max_lag_s": {"type": "integer", "minimum": 1, "maximum": MEMCACHED_MAX_TTL_S - 1},
        "tombstone_ttl_s": {"type": "integer", "minimum": 2, "maximum": MEMCACHED_MAX_TTL_S},
    },
}

NAMESPACE = {
    "type": "object",
    "required": ["name", "topics", "backoff", "max_attempts", "max_payload_bytes"],
    "properties": {
        "name": {"type": "string"},
        "partitions": {"type": ["integer", "null"]},
        "topics": {"type": "object"},
        "backoff": {"type": "object"},
        "max_attempts": {"type": "integer"},
        "target": {"type": ["object", "null"]},
        "max_payload_bytes": {"type": "integer"},
        "max_delay_ms": {"type": "integer"},
        "description": {"type": "string"},
        "non_retryable": {"type": "array", "items": {"type": "string"}},
        "retry_budget_ms": {"type": ["integer", "null"]},
        "ordering": {"type": "string", "enum": ["none", "key"]},
        "on_dlq": {"type": "string", "enum": ["release", "hold"]},
        # present only when set (absent: records name only the namespace's own target's
        # destination); kafka_topics, kv_tables and wal only when not empty
        "allowed_targets": {
            "type": "object",
            "properties": {
                "http": {"type": "array", "items": {"type": "string"}},
                "kafka": {"type": "array", "items": {"type": "string"}},
                "kafka_topics": {"type": "array", "items": {"type": "string"}},
                "kv_tables": {"type": "array", "items": {"type": "string"}},
                "wal": {"type": "array", "items": {"type": "string"}},
            },
        },
        # present only when finite (absent: -1, kept forever)
        "log_retention_ms": {"type": "integer"},
        "dlq_retention_ms": {"type": "integer"},
        # present only when the namespace replicates a memcached cache across regions
        "replication": REPLICATION,
        # present only when the namespace takes multi-partition mutations (issue 18)
        "mutations": {
            "type": "object",
            "required": ["completion_timeout_s"],
            "additionalProperties": False,
            "properties": {
                "completion_timeout_s": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_COMPLETION_TIMEOUT_S,
                }
            },
        },
    },
}

NAMESPACE_LIST = {
    "type": "object",
    "required": ["namespaces"],
    "properties": {
        "namespaces": {"type": "array", "items": {"$ref": "#/components/schemas/Namespace"}}
    },
}


def paths() -> dict[str, Any]:
    """``/v1/namespaces`` and one namespace (built afresh: walstream.api.openapi.document adds
    to them)."""
    return {
        "/v1/namespaces": {
            "get": {
                "operationId": "listNamespaces",
                "responses": {
                    "200": json_content(
                        "NamespaceList",
                        "the namespaces this process knows (and the token "
                        "administers), secrets redacted",
                    ),
                    **UNAVAILABLE,
                },
            }
        },
        "/v1/namespaces/{namespace}": {
            "get": {
                "operationId": "showNamespace",
                "parameters": [NS_PARAM],
                "responses": {
                    "200": json_content("Namespace", "the namespace's configuration"),
                    **NOT_FOUND,
                    **UNAVAILABLE,
                },
            }
        },
    }
