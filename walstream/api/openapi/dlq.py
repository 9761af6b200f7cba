"""The OpenAPI schemas and paths of a namespace's DLQ: its entries, the filters that select them,
and a redrive.

They follow walstream.api.handlers' DLQ routes and walstream.core.dlq's selection, which change
together and apart from the write path.
"""

from __future__ import annotations

from typing import Any

from walstream.api.openapi.fields import SELECTION_TIME, TIME_TEXT
from walstream.api.openapi.responses import (
    NS_PARAM,
    UNAVAILABLE,
    body,
    error,
    json_content,
    start_operation,
    status_operations,
)
from walstream.api.openapi.targets import NULLABLE_TARGET

__all__ = ["DLQ_ENTRY", "DLQ_LIST", "REDRIVE", "REDRIVE_REQUEST", "paths"]

DLQ_ENTRY = {
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
}

DLQ_LIST = {
    "type": "object",
    "required": ["namespace", "open", "matching", "entries"],
    "properties": {
        "namespace": {"type": "string"},
        "region": {"type": "string", "description": "the region whose DLQ this is"},
        "open": {"type": "integer"},
        "matching": {"type": "integer"},
        "entries": {"type": "array", "items": {"$ref": "#/components/schemas/DlqEntry"}},
        "next": {
            "type": ["string", "null"],
            "description": "pass as 'after' for the next page (null: the last page)",
        },
    },
}

#: A redrive's record ids: a list, or one comma-separated string.
_IDS = {
    "oneOf": [
        {"type": "array", "items": {"type": "string", "minLength": 1}},
        {"type": "string", "description": "comma-separated"},
    ]
}

REDRIVE_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "ids": {**_IDS, "description": "only these record ids"},
        "id": {**_IDS, "deprecated": True, "description": "the same as ids (ids wins)"},
        "since": {**SELECTION_TIME, "description": "entries dead at or after this"},
        "until": {**SELECTION_TIME, "description": "entries dead before this"},
        "error_class": {"type": ["string", "null"], "minLength": 1},
        "rate": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "description": "records per second (default: no limit)",
        },
        "target": NULLABLE_TARGET,
    },
}

REDRIVE = {
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
}

_DLQ_QUERY = [
    {
        "name": "since",
        "in": "query",
        "schema": TIME_TEXT,
        "description": "entries dead at or after this",
    },
    {"name": "until", "in": "query", "schema": TIME_TEXT, "description": "dead before this"},
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


#: A replicated namespace's region: its region DLQ instead of the namespace's.
_REGION = {
    "name": "region",
    "in": "query",
    "schema": {"type": "string", "minLength": 1},
    "description": "a replicated namespace's region: list its region DLQ "
    "(wal.<ns>.region.<r>.dlq, on the region's cluster); redrive those with the CLI",
}


def paths() -> dict[str, Any]:
    """``/dlq`` and ``/dlq:redrive`` (built afresh: walstream.api.openapi.document adds to them)."""
    return {
        "/v1/namespaces/{namespace}/dlq": {
            "get": {
                "operationId": "listDlq",
                "summary": "Open DLQ entries, oldest first",
                "parameters": [NS_PARAM, *_DLQ_QUERY, _REGION],
                "responses": {
                    "200": json_content("DlqList", "matching open entries"),
                    "400": error("bad filter (names it)"),
                    "404": error(
                        "unknown namespace, or a region (region) the namespace does not "
                        "replicate to"
                    ),
                    **UNAVAILABLE,
                },
            }
        },
        "/v1/namespaces/{namespace}/dlq:redrive": {
            "post": start_operation(
                "startRedrive",
                "Redrive open DLQ entries to the log (attempts reset, history kept)",
                body("RedriveRequest", required=False),
                "Redrive",
                refused={"403": error("target not allowed")},
                running=(
                    "a redrive of the namespace is running (in any API process or the "
                    "CLI: it holds a claim on the DLQ topic)"
                ),
            ),
            **status_operations("redrive", "Redrive"),
        },
    }
