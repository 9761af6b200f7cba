"""The OpenAPI 3.1 document of the HTTP API (a test checks it against the routes and responses)."""

from __future__ import annotations

from typing import Any

from walstream import __version__
from walstream.core import targets as _targets
from walstream.core.replay_request import MAX_TIME_MS
from walstream.core.targets import NAMESPACE_NAME, RESERVED_HEADERS, UNSENDABLE_HEADERS
from walstream.core.validate import MAX_PAYLOAD_DEPTH

__all__ = ["SCHEMAS", "TARGET_SCHEMAS", "openapi_document"]

_DURABLE = {"type": "string", "enum": ["TRUE", "FALSE", "UNKNOWN"]}
#: What walstream.core.targets refuses in a string sent on as an HTTP header value (a token
#: becomes the Idempotency-Key header; an http target's headers): a control character but tab.
_HEADER_VALUE = f"^[^{_targets.UNSENDABLE_VALUE_CHARS}]*$"
#: Standard base64 (RFC 4648 4, padded), what ``base64.b64decode(validate=True)`` accepts.
_BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
#: Times operators type (walstream.core.times): ms since the epoch, ISO 8601, or before now.
_TIME_TEXT = {
    "type": "string",
    "anyOf": [
        {"pattern": "^[0-9]+$"},
        {"pattern": "^-[0-9]+(ms|s|m|h|d)$"},
        {"format": "date-time"},
    ],
    "description": (
        "ms since the epoch (1700000000000), ISO 8601 (2026-11-23T10:00:00Z; without an "
        "offset: UTC; a leap second, :60, is read as :59), or relative to now (-90m, -2h, -1d; "
        "units ms, s, m, h, d)"
    ),
}
#: A redrive's since/until (null: not given).
_SELECTION_TIME = {"oneOf": [{"type": "integer", "minimum": 0}, _TIME_TEXT, {"type": "null"}]}


def _digits_at_most(limit: int) -> str:
    """A regex matching the decimal digit strings (leading zeros too) worth at most ``limit``."""
    text = str(limit)
    options = [f"[0-9]{{1,{len(text) - 1}}}"] if len(text) > 1 else []
    for i, digit in enumerate(text):  # the same length: equal up to i, then a smaller digit
        if digit != "0":
            options.append(f"{text[:i]}[0-{int(digit) - 1}][0-9]{{{len(text) - i - 1}}}")
    options.append(text)
    return "^0*(?:" + "|".join(options) + ")$"


#: A replay window's from/to: what walstream.core.replay_request takes, between the epoch and
#: the end of year 9999 (MAX_TIME_MS). A relative time is bounded to about 11 to 31 years back
#: (by digits per unit), so that it is after the epoch whenever the server reads it.
_WINDOW_TIME = {
    "oneOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_TIME_MS},
        {
            "type": "string",
            "anyOf": [
                {"pattern": _digits_at_most(MAX_TIME_MS)},
                {"pattern": "^-(?:[0-9]{1,12}ms|[0-9]{1,9}s|[0-9]{1,7}m|[0-9]{1,5}h|[0-9]{1,4}d)$"},
                # RFC 3339 of years 1970..9999 (an offset may not take it past either end)
                {"format": "date-time", "pattern": "^(?:19[7-9][0-9]|[2-9][0-9]{3})-"},
            ],
        },
    ],
    "description": (
        f"{_TIME_TEXT['description']}; between the epoch and 9999-12-31T23:59:59.999Z (ms "
        f"0..{MAX_TIME_MS}); a leap second (:60) is read as :59"
    ),
}
_HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


def _any_case(name: str) -> str:
    """A regex matching ``name`` whatever its case (JSON Schema regexes have no flags)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in name)


#: Framing and hop-by-hop headers (the client's own) and walstream's delivery headers.
_UNSENDABLE_NAME = (
    "^(?:" + "|".join(_any_case(n) for n in sorted(UNSENDABLE_HEADERS | RESERVED_HEADERS)) + ")$"
)


def _text(max_length: int, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": max_length}
    if pattern is not None:
        schema["pattern"] = pattern
    return schema


_KEY = _text(_targets._MAX_KEY_CHARS)
_SERVERS = {**_text(1024), "description": "another Kafka cluster (host:port,...)"}

#: type -> (required options, {option: schema}): what walstream.core.targets.parse_target checks
#: (a test holds the two to each other).
TARGET_SCHEMAS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "kafka": (
        ["topic"],
        {
            "topic": _text(249, _targets._TOPIC_NAME.pattern),
            "key": _KEY,
            "bootstrap_servers": _SERVERS,
        },
    ),
    "http": (
        ["url"],
        {
            "url": {**_text(2048, "^https?://"), "description": "an http:// or https:// URL"},
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
                "propertyNames": {"pattern": _HEADER_NAME, "not": {"pattern": _UNSENDABLE_NAME}},
                "additionalProperties": {"type": "string", "pattern": _HEADER_VALUE},
            },
        },
    ),
    "kv": (
        ["table", "key"],
        {
            "table": _text(63, _targets._IDENTIFIER.pattern),
            "key": _KEY,
            "op": {"type": "string", "enum": ["put", "delete"], "default": "put"},
        },
    ),
    "wal": (
        ["namespace"],
        {"namespace": _text(63, NAMESPACE_NAME.pattern), "bootstrap_servers": _SERVERS},
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


_NULLABLE_TARGET = {
    "oneOf": [{"$ref": "#/components/schemas/Target"}, {"type": "null"}],
    "description": "absent or null: the namespace's own target",
}

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
                "description": (
                    "ms since the epoch, at most 1 h ahead; last-write-wins compares it. "
                    "Default: now"
                ),
            },
        },
        "not": {"required": ["delay_ms", "deliver_at"]},
        "description": "the delay (or deliver_at's) plus jitter_ms: at most the max_delay_ms",
    },
    **{_target_name(kind): _target_schema(kind) for kind in sorted(TARGET_SCHEMAS)},
    "Target": {
        "oneOf": [
            {"$ref": f"#/components/schemas/{_target_name(k)}"} for k in sorted(TARGET_SCHEMAS)
        ],
        "discriminator": {
            "propertyName": "type",
            "mapping": {
                k: f"#/components/schemas/{_target_name(k)}" for k in sorted(TARGET_SCHEMAS)
            },
        },
        "description": (
            "Where a record is delivered. A destination other than the namespace's own target's "
            "(http origin, kafka cluster and topic, kv table, wal namespace) that its "
            "allowed_targets do not list, or one of walstream's own topics (control, changelogs, "
            "delay tiers, wal.*): 403."
        ),
    },
    "WriteToLogRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["payload"],
        "properties": {
            "payload": {
                "description": (
                    "payload_encoding=json (the default): any JSON value, kept exactly as sent "
                    f"(nested at most {MAX_PAYLOAD_DEPTH} levels; a number the log cannot keep "
                    "exactly, such as an integer beyond 64 bits, is refused: send it as a string "
                    "or base64). "
                    "payload_encoding=base64: standard base64 text of the payload's bytes. "
                    "At most the namespace's max_payload_bytes (413)."
                )
            },
            "payload_encoding": {"type": "string", "enum": ["json", "base64"], "default": "json"},
            "lifecycle": {
                "oneOf": [{"$ref": "#/components/schemas/Lifecycle"}, {"type": "null"}],
                "description": "absent or null: deliver now",
            },
            "target": _NULLABLE_TARGET,
            "idempotency_token": {
                **_text(256, _HEADER_VALUE),
                "type": ["string", "null"],
                "description": "sent to http targets as Idempotency-Key (default: the id)",
            },
            "key": {
                **_KEY,
                "type": ["string", "null"],
                "description": "records of a key keep their order (ordering=key)",
            },
        },
        # the payload's type follows payload_encoding
        "oneOf": [
            {
                "properties": {
                    "payload_encoding": {"const": "json"},
                    "payload": {"$ref": "#/components/schemas/JsonPayload"},
                }
            },
            {
                "required": ["payload_encoding"],
                "properties": {
                    "payload_encoding": {"const": "base64"},
                    "payload": {"$ref": "#/components/schemas/Base64Payload"},
                },
            },
        ],
    },
    "JsonPayload": {"description": "any JSON value (payload_encoding=json)"},
    "Base64Payload": {
        "type": "string",
        "contentEncoding": "base64",
        "pattern": _BASE64,
        "description": "the payload's bytes in standard base64 (payload_encoding=base64)",
    },
    "Error": {
        "type": "object",
        "required": ["durable", "message", "error"],
        "properties": {
            "durable": {
                "type": "string",
                "enum": ["FALSE", "UNKNOWN"],
                "description": "FALSE: not written; UNKNOWN: may be on the log",
            },
            "message": {"type": "string"},
            "error": {"type": "string", "description": "the error's class"},
            "field": {"type": "string", "description": "the request field refused (400, 413)"},
            "reason": {"type": "string", "description": "why the field was refused"},
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
            "pid": {"type": "integer", "description": "the process answering"},
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
            "ids": {
                "oneOf": [
                    {"type": "array", "items": {"type": "string", "minLength": 1}},
                    {"type": "string", "description": "comma-separated"},
                ],
                "description": "only these record ids",
            },
            "id": {
                "oneOf": [
                    {"type": "array", "items": {"type": "string", "minLength": 1}},
                    {"type": "string", "description": "comma-separated"},
                ],
                "deprecated": True,
                "description": "the same as ids (ids wins)",
            },
            "since": {**_SELECTION_TIME, "description": "entries dead at or after this"},
            "until": {**_SELECTION_TIME, "description": "entries dead before this"},
            "error_class": {"type": ["string", "null"], "minLength": 1},
            "rate": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "description": "records per second (default: no limit)",
            },
            "target": _NULLABLE_TARGET,
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
            "from": {**_WINDOW_TIME, "description": f"window start: {_WINDOW_TIME['description']}"},
            "to": {
                **_WINDOW_TIME,
                "description": (
                    "window end (exclusive), after from (else a 400 naming to): "
                    f"{_WINDOW_TIME['description']}"
                ),
            },
            "skip_ids": {"type": "array", "maxItems": 10_000, "items": {"type": "string"}},
            "resume_from": {
                "type": ["string", "null"],
                "pattern": "^[0-9]+:[0-9]+(?:,[0-9]+:[0-9]+)*$",
                "description": "a stopped replay's cursor: partition:offset,...",
            },
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
    "NamespaceList": {
        "type": "object",
        "required": ["namespaces"],
        "properties": {
            "namespaces": {"type": "array", "items": {"$ref": "#/components/schemas/Namespace"}}
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "const": "ok"}},
    },
    "OpenApi": {"type": "object", "required": ["openapi", "info", "paths"]},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again (when waiting may help)",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _json_content(
    name: str, description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = {"description": description, "content": {"application/json": {"schema": _ref(name)}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json_content("Error", description, headers)


_NS_PARAM = {
    "name": "namespace",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": NAMESPACE_NAME.pattern},
}

_DLQ_QUERY = [
    {
        "name": "since",
        "in": "query",
        "schema": _TIME_TEXT,
        "description": "entries dead at or after this",
    },
    {"name": "until", "in": "query", "schema": _TIME_TEXT, "description": "dead before this"},
    {"name": "error_class", "in": "query", "schema": {"type": "string", "minLength": 1}},
    {
        "name": "ids",
        "in": "query",
        "style": "form",
        "explode": False,
        "schema": {"type": "array", "items": {"type": "string", "pattern": "^[^,]+$"}},
        "description": "record ids, comma-separated: ids=a,b",
    },
    {
        "name": "id",
        "in": "query",
        "deprecated": True,
        "schema": {"type": "string"},
        "description": "the same as ids (ids wins)",
    },
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 100},
    },
    {
        "name": "after",
        "in": "query",
        "schema": {"type": "string", "pattern": "^(?:-?[0-9]+\\.-?[0-9]+\\.-?[0-9]+)?$"},
        "description": "the previous page's next (empty: the first page)",
    },
]

#: Every route that reads a body: its limit, its time to arrive, and JSON.
_BODY_ERRORS = {
    "400": _error("bad input (not JSON, or a field: names it), durable=FALSE"),
    "408": _error("the body did not arrive within WALSTREAM_BODY_READ_TIMEOUT_S"),
    "413": _error(
        "the body (refused on its Content-Length, unread), a payload or a record is over its "
        "limit, durable=FALSE"
    ),
}

_WRITE_ERRORS = {
    **_BODY_ERRORS,
    "403": _error("target not in the namespace's allowed_targets, durable=FALSE"),
    "404": _error("unknown namespace, durable=FALSE"),
    "503": _error(
        "load shed, the namespace registry is loading, or the broker is unavailable "
        "(Retry-After); or the namespace's latest configuration event is unreadable",
        _RETRY_AFTER,
    ),
    "504": _error("the broker did not answer in time, durable=UNKNOWN"),
}


#: Every namespace route: the registry is still loading, or the namespace's config is unreadable.
_UNAVAILABLE = {
    "503": _error(
        "the namespace registry is loading (Retry-After), or the namespace's latest "
        "configuration event is unreadable, or this process serves no DLQ or replay endpoints",
        _RETRY_AFTER,
    )
}

_NOT_FOUND = {"404": _error("unknown namespace")}


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
            responses["401"] = _error(
                "no bearer token, durable=FALSE",
                {
                    "WWW-Authenticate": {
                        "required": True,
                        "schema": {"type": "string", "pattern": "^Bearer "},
                    }
                },
            )
            refused = "a token unknown or not allowed here, durable=FALSE"
            if "403" in responses:
                old = responses["403"]  # shared by operations: replaced, not changed
                responses["403"] = {**old, "description": f"{old['description']}; or {refused}"}
            else:
                responses["403"] = _error(refused)
    return document


def _body(name: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


def _document() -> dict[str, Any]:
    none_here = "none in this process (or an unknown namespace)"
    return {
        "openapi": "3.1.0",
        "info": {"title": "walstream", "version": __version__},
        "paths": {
            "/v1/namespaces/{namespace}/log": {
                "post": {
                    "operationId": "writeToLog",
                    "summary": "Write one record to the namespace's log (acks=all)",
                    "parameters": [_NS_PARAM],
                    "requestBody": _body("WriteToLogRequest"),
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
                    "requestBody": _body("WriteBatchRequest"),
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
                        "200": _json_content(
                            "NamespaceList",
                            "the namespaces this process knows (and the token "
                            "administers), secrets redacted",
                        ),
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
                        **_NOT_FOUND,
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
                        "400": _error("bad filter (names it)"),
                        **_NOT_FOUND,
                        **_UNAVAILABLE,
                    },
                }
            },
            "/v1/namespaces/{namespace}/dlq:redrive": {
                "post": {
                    "operationId": "startRedrive",
                    "summary": "Redrive open DLQ entries to the log (attempts reset, history kept)",
                    "parameters": [_NS_PARAM],
                    "requestBody": _body("RedriveRequest", required=False),
                    "responses": {
                        "202": _json_content("Redrive", "started"),
                        **_BODY_ERRORS,
                        "403": _error("target not allowed"),
                        **_NOT_FOUND,
                        "409": _error(
                            "a redrive of the namespace is running (in any API process or the "
                            "CLI: it holds a claim on the DLQ topic)"
                        ),
                        **_UNAVAILABLE,
                    },
                },
                "get": {
                    "operationId": "redriveStatus",
                    "parameters": [_NS_PARAM],
                    "responses": {
                        "200": _json_content("Redrive", "the latest redrive"),
                        "404": _error(none_here),
                        **_UNAVAILABLE,
                    },
                },
                "delete": {
                    "operationId": "cancelRedrive",
                    "parameters": [_NS_PARAM],
                    "responses": {
                        "200": _json_content("Redrive", "cancelled (or already finished)"),
                        "404": _error(none_here),
                        **_UNAVAILABLE,
                    },
                },
            },
            "/v1/namespaces/{namespace}/replay": {
                "post": {
                    "operationId": "startReplay",
                    "summary": "Re-deliver a window's writes to their targets (walstream replay)",
                    "parameters": [_NS_PARAM],
                    "requestBody": _body("ReplayRequest"),
                    "responses": {
                        "202": _json_content("Replay", "started"),
                        **_BODY_ERRORS,
                        **_NOT_FOUND,
                        "409": _error("a replay of the namespace runs in this process"),
                        **_UNAVAILABLE,
                    },
                },
                "get": {
                    "operationId": "replayStatus",
                    "parameters": [_NS_PARAM],
                    "responses": {
                        "200": _json_content("Replay", "the latest replay"),
                        "404": _error(none_here),
                        **_UNAVAILABLE,
                    },
                },
                "delete": {
                    "operationId": "cancelReplay",
                    "parameters": [_NS_PARAM],
                    "responses": {
                        "200": _json_content("Replay", "cancelled (or already finished)"),
                        "404": _error(none_here),
                        **_UNAVAILABLE,
                    },
                },
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "responses": {"200": _json_content("OpenApi", "this document")},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "responses": {"200": _json_content("Health", "the process is alive")},
                }
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
