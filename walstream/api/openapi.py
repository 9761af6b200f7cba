"""The OpenAPI 3.1 document of the HTTP API (a test checks it against the routes and responses)."""

from __future__ import annotations

from typing import Any

from walstream import __version__
from walstream.core.targets import TARGET_TYPES

__all__ = ["SCHEMAS", "openapi_document"]

_DURABLE = {"type": "string", "enum": ["TRUE", "FALSE", "UNKNOWN"]}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Lifecycle": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "delay_ms": {"type": "integer", "minimum": 0, "description": "deliver after this"},
            "deliver_at": {
                "type": "integer",
                "minimum": 0,
                "description": "or: deliver at this time (ms since the epoch); not with delay_ms",
            },
            "jitter_ms": {
                "type": "integer",
                "minimum": 0,
                "description": "plus a uniform random 0..jitter_ms, to spread bursts",
            },
            "original_write_time": {
                "type": "integer",
                "minimum": 1,
                "description": "ms since the epoch; last-write-wins compares it. Default: now",
            },
        },
    },
    "Target": {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": sorted(TARGET_TYPES)}},
        "description": (
            "kafka {topic, key?, bootstrap_servers?}; http {url, timeout_ms?, headers?}; "
            "kv {table, key, op?}; "
            "wal {namespace, bootstrap_servers?}. "
            "http headers may not set framing or hop-by-hop headers (Content-Length, "
            "Transfer-Encoding, Host, Connection, Keep-Alive, Proxy-Connection, "
            "Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Upgrade, Expect): 400. "
            "A destination other than the namespace's own target's (http origin, kafka "
            "cluster and topic, kv table, wal namespace) that its allowed_targets do not list, "
            "or one of walstream's own topics (control, changelogs, delay tiers, wal.*): 403."
        ),
    },
    "WriteToLogRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["payload"],
        "properties": {
            "payload": {"description": "a JSON value, or base64 text with payload_encoding=base64"},
            "payload_encoding": {"type": "string", "enum": ["json", "base64"], "default": "json"},
            "lifecycle": {"$ref": "#/components/schemas/Lifecycle"},
            "target": {"$ref": "#/components/schemas/Target"},
            "idempotency_token": {"type": "string", "minLength": 1, "maxLength": 256},
            "key": {"type": "string", "minLength": 1, "maxLength": 1024},
        },
    },
    "WriteToLogResponse": {
        "type": "object",
        "required": ["durable", "message"],
        "properties": {
            "durable": _DURABLE,
            "message": {"type": "string"},
            "id": {"type": "string"},
            "error": {"type": "string"},
            "field": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
    "WriteBatchRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["records"],
        "properties": {
            "records": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/WriteToLogRequest"},
            }
        },
    },
    "WriteBatchResponse": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status", "durable", "message"],
                    "properties": {
                        "status": {"type": "integer"},
                        "durable": _DURABLE,
                        "message": {"type": "string"},
                        "id": {"type": "string"},
                        "error": {"type": "string"},
                        "field": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            }
        },
    },
    "Ready": {
        "type": "object",
        "required": ["status", "broker", "registry_loaded", "namespaces"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "not ready"]},
            "broker": {"type": "boolean"},
            "registry_loaded": {"type": "boolean"},
            "namespaces": {"type": "integer"},
        },
    },
    "DlqEntry": {
        "type": "object",
        "required": ["id", "dead_at_ms", "error_class", "reason", "attempts", "source"],
        "properties": {
            "id": {"type": "string"},
            "namespace": {"type": "string"},
            "dead_at_ms": {"type": "integer"},
            "error_class": {"type": "string"},
            "reason": {"type": "string"},
            "attempts": {"type": "integer"},
            "source": {"type": "string", "description": "topic[partition]@offset"},
            "origin": {
                "type": ["string", "null"],
                "description": "topic[partition]@offset where the worker first read the record",
            },
            "behind": {"type": "array", "items": {"type": "string"}},
        },
    },
    "DlqList": {
        "type": "object",
        "required": ["namespace", "open", "matching", "entries"],
        "properties": {
            "namespace": {"type": "string"},
            "open": {"type": "integer"},
            "matching": {"type": "integer"},
            "entries": {"type": "array", "items": {"$ref": "#/components/schemas/DlqEntry"}},
            "next": {
                "type": ["string", "null"],
                "description": "pass as 'after' for the next page (null: the last page)",
            },
        },
    },
    "RedriveRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "ids": {"type": "array", "items": {"type": "string"}},
            "since": {"type": ["string", "integer"]},
            "until": {"type": ["string", "integer"]},
            "error_class": {"type": "string"},
            "rate": {"type": "number", "exclusiveMinimum": 0},
            "target": {"$ref": "#/components/schemas/Target"},
        },
    },
    "Redrive": {
        "type": "object",
        "required": ["namespace", "state", "total", "redriven"],
        "properties": {
            "namespace": {"type": "string"},
            "state": {"type": "string", "enum": ["running", "done", "cancelled", "failed"]},
            "total": {"type": "integer"},
            "redriven": {"type": "integer"},
            "skipped": {"type": "array", "items": {"type": "string"}},
            "error": {"type": ["string", "null"]},
            "started_at_ms": {"type": "integer"},
        },
    },
    "ReplayRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["from", "to"],
        "properties": {
            "from": {"type": ["string", "integer"], "description": "window start (ms, ISO, -2h)"},
            "to": {"type": ["string", "integer"], "description": "window end (exclusive)"},
            "skip_ids": {"type": "array", "items": {"type": "string"}},
            "resume_from": {"type": "string", "description": "a stopped replay's cursor"},
        },
    },
    "Replay": {
        "type": "object",
        "required": ["id", "namespace", "state", "delivered", "skipped", "pending", "failed"],
        "properties": {
            "id": {"type": "string"},
            "namespace": {"type": "string"},
            "state": {"type": "string", "enum": ["running", "done", "stopped", "cancelled"]},
            "from_ms": {"type": "integer"},
            "to_ms": {"type": "integer"},
            "started_at_ms": {"type": "integer"},
            "seen": {"type": "integer"},
            "delivered": {"type": "integer"},
            "skipped": {"type": "integer"},
            "undecodable": {"type": "integer"},
            "pending": {"type": "integer"},
            "pending_skipped": {"type": "array", "items": {"type": "string"}},
            "failed": {"type": "array", "items": {"type": "string"}},
            "error": {"type": ["string", "null"]},
            "resume_from": {"type": ["string", "null"]},
        },
    },
    "Namespace": {
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
        },
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


_NS_PARAM = {
    "name": "namespace",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"},
}

_DLQ_QUERY = [
    {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
    for name in ("since", "until", "error_class", "ids", "limit", "after")
]

_WRITE_ERRORS = {
    "400": _json_content("WriteToLogResponse", "bad input, durable=FALSE, names the field"),
    "403": _json_content(
        "WriteToLogResponse", "target not in the namespace's allowed_targets, durable=FALSE"
    ),
    "404": _json_content("WriteToLogResponse", "unknown namespace, durable=FALSE"),
    "408": _json_content(
        "WriteToLogResponse", "the body did not arrive within BODY_READ_TIMEOUT_S, durable=FALSE"
    ),
    "413": _json_content(
        "WriteToLogResponse",
        "payload, record or body over the limit (a body over the route's limit is refused on its "
        "Content-Length, unread), durable=FALSE",
    ),
    "503": _json_content("WriteToLogResponse", "load shed or broker unavailable; Retry-After"),
    "504": _json_content("WriteToLogResponse", "broker did not answer in time, durable=UNKNOWN"),
}


#: Every namespace route: the registry is still loading, or the namespace's config is unreadable.
_UNAVAILABLE = {
    "503": _json_content(
        "WriteToLogResponse",
        "the namespace registry is loading (Retry-After), or the namespace's latest "
        "configuration event is unreadable",
    )
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (security from walstream.api.auth's route table)."""
    return _secured(_document())


def _secured(document: dict[str, Any]) -> dict[str, Any]:
    """Bearer auth on every operation but the open ones (``security: []``), with 401 and 403."""
    from walstream.api.auth import ROUTE_ACCESS
    from walstream.core.auth import Access

    document["security"] = [{"bearer": []}]
    document["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "see README: Auth"}
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if ROUTE_ACCESS.get((method.upper(), path)) is Access.OPEN:
                operation["security"] = []
                continue
            responses = operation["responses"]
            responses["401"] = _json_content("WriteToLogResponse", "no bearer token, durable=FALSE")
            refused = "a token unknown or not allowed here, durable=FALSE"
            if "403" in responses:
                old = responses["403"]  # shared by operations: replaced, not changed
                responses["403"] = {**old, "description": f"{old['description']}; or {refused}"}
            else:
                responses["403"] = _json_content("WriteToLogResponse", refused)
    return document


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "walstream", "version": __version__},
        "paths": {
            "/v1/namespaces/{namespace}/log": {
                "post": {
                    "operationId": "writeToLog",
                    "summary": "Write one record to the namespace's log (acks=all)",
                    "parameters": [_NS_PARAM],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("WriteToLogRequest")}},
                    },
                    "responses": {
                        "200": _json_content("WriteToLogResponse", "written, durable=TRUE"),
                        **_WRITE_ERRORS,
                    },
                }
            },
            "/v1/namespaces/{namespace}/log:batch": {
                "post": {
                    "operationId": "writeToLogBatch",
                    "summary": "Write many records; one result per record",
                    "parameters": [_NS_PARAM],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("WriteBatchRequest")}},
                    },
                    "responses": {
                        "200": _json_content("WriteBatchResponse", "a result per record"),
                        **_WRITE_ERRORS,
                    },
                }
            },
            "/v1/namespaces": {
                "get": {
                    "operationId": "listNamespaces",
                    "responses": {
                        "200": {"description": "namespaces this process knows"},
                        **_UNAVAILABLE,
                    },
                }
            },
            "/v1/namespaces/{namespace}": {
                "get": {
                    "operationId": "showNamespace",
                    "parameters": [_NS_PARAM],
                    "responses": {
                        "200": _json_content("Namespace", "the namespace's configuration"),
                        "404": _json_content("WriteToLogResponse", "unknown namespace"),
                        **_UNAVAILABLE,
                    },
                }
            },
            "/v1/namespaces/{namespace}/dlq": {
                "get": {
                    "operationId": "listDlq",
                    "summary": "Open DLQ entries, oldest first",
                    "parameters": [_NS_PARAM, *_DLQ_QUERY],
                    "responses": {
                        "200": _json_content("DlqList", "matching open entries"),
                        "400": _json_content("WriteToLogResponse", "bad filter"),
                        "404": _json_content("WriteToLogResponse", "unknown namespace"),
                        **_UNAVAILABLE,
                    },
                }
            },
            "/v1/namespaces/{namespace}/dlq:redrive": {
                "post": {
                    "operationId": "startRedrive",
                    "summary": "Redrive open DLQ entries to the log (attempts reset, history kept)",
                    "parameters": [_NS_PARAM],
                    "requestBody": {
                        "content": {"application/json": {"schema": _ref("RedriveRequest")}}
                    },
                    "responses": {
                        "202": _json_content("Redrive", "started"),
                        "400": _json_content("WriteToLogResponse", "bad request"),
                        "403": _json_content("WriteToLogResponse", "target not allowed"),
                        "404": _json_content("WriteToLogResponse", "unknown namespace"),
                        "409": _json_content(
                            "WriteToLogResponse",
                            "a redrive of the namespace is running (in any API process or the "
                            "CLI: it holds a claim on the DLQ topic)",
                        ),
                        **_UNAVAILABLE,
                    },
                },
                "get": {
                    "operationId": "redriveStatus",
                    "parameters": [_NS_PARAM],
                    "responses": {
                        "200": _json_content("Redrive", "the latest redrive"),
                        "404": _json_content("WriteToLogResponse", "none in this process"),
                        **_UNAVAILABLE,
                    },
                },
                "delete": {
                    "operationId": "cancelRedrive",
                    "parameters": [_NS_PARAM],
                    "responses": {
                        "200": _json_content("Redrive", "cancelled (or already finished)"),
                        "404": _json_content("WriteToLogResponse", "none in this process"),
                        **_UNAVAILABLE,
                    },
                },
            },
            "/v1/namespaces/{namespace}/replay": {
                "post": {
                    "operationId": "startReplay",
                    "summary": "Re-deliver a window's writes to their targets (walstream replay)",
                    "parameters": [_NS_PARAM],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ReplayRequest")}},
                    },
                    "responses": {
                        "202": _json_content("Replay", "started"),
                        "400": _json_content("WriteToLogResponse", "bad request (names the field)"),
                        "404": _json_content("WriteToLogResponse", "unknown namespace"),
                        "409": _json_content(
                            "WriteToLogResponse", "a replay of the namespace runs in this process"
                        ),
                        **_UNAVAILABLE,
                    },
                },
                "get": {
                    "operationId": "replayStatus",
                    "parameters": [_NS_PARAM],
                    "responses": {
                        "200": _json_content("Replay", "the latest replay"),
                        "404": _json_content("WriteToLogResponse", "none in this process"),
                        **_UNAVAILABLE,
                    },
                },
                "delete": {
                    "operationId": "cancelReplay",
                    "parameters": [_NS_PARAM],
                    "responses": {
                        "200": _json_content("Replay", "cancelled (or already finished)"),
                        "404": _json_content("WriteToLogResponse", "none in this process"),
                        **_UNAVAILABLE,
                    },
                },
            },
            "/v1/openapi.json": {
                "get": {"operationId": "openapi", "responses": {"200": {"description": "this"}}}
            },
            "/healthz": {
                "get": {"operationId": "healthz", "responses": {"200": {"description": "alive"}}}
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "responses": {
                        "200": _json_content("Ready", "broker reachable, registry loaded"),
                        "503": _json_content("Ready", "not ready"),
                    },
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }
