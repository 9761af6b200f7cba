"""The OpenAPI schemas and paths of a namespace's DLQ (or, with ``region``, one of its region
DLQs): its entries, the filters that select them, one entry, a redrive and a discard.

They follow walstream.api.dlq_handlers' routes and walstream.core.dlq's selection, which change
together and apart from the write path.
"""

from __future__ import annotations

from typing import Any

from walstream.api.openapi.fields import SELECTION_TIME, TIME_TEXT
from walstream.api.openapi.responses import (
    BODY_ERRORS,
    NS_PARAM,
    UNAVAILABLE,
    body,
    error,
    json_content,
    start_operation,
    status_operations,
)
from walstream.api.openapi.targets import NULLABLE_TARGET
from walstream.core.targets import REGION_NAME

__all__ = [
    "DISCARDED",
    "DISCARD_REQUEST",
    "DLQ_ENTRY",
    "DLQ_ENTRY_SHOWN",
    "DLQ_LIST",
    "REDRIVE",
    "REDRIVE_REQUEST",
    "paths",
]

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
        "kind": {
            "type": "string",
            "enum": ["transaction", "operation", "marker"],
            "description": "a multi-partition mutation's entry (absent: a log record's): a "
            "dead-lettered transaction (redrivable: its marker goes again to its markers topic), "
            "or a single bad operation or marker record",
        },
        "txn_id": {"type": "string", "description": "a transaction entry's txn id"},
        "missing": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "the seqs a transaction entry's reason names as missing",
        },
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

#: A discard's selection: it must select something (an empty one is a 400: the server will
#: not discard every entry at once).
DISCARD_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "ids": {**_IDS, "description": "only these record ids"},
        "id": {**_IDS, "deprecated": True, "description": "the same as ids (ids wins)"},
        "since": {**SELECTION_TIME, "description": "entries dead at or after this"},
        "until": {**SELECTION_TIME, "description": "entries dead before this"},
        "error_class": {"type": ["string", "null"], "minLength": 1},
    },
    "description": "which open entries to close (at least one of ids, since, until, "
    "error_class; not every entry at once)",
}

DISCARDED = {
    "type": "object",
    "required": ["namespace", "discarded"],
    "properties": {
        "namespace": {"type": "string"},
        "region": {"type": "string", "description": "the region whose DLQ this is"},
        "discarded": {"type": "integer", "minimum": 0, "description": "entries closed"},
    },
}

#: One entry as ``walstream dlq show`` prints it: the entry, and its record.
DLQ_ENTRY_SHOWN = {
    "allOf": [
        {"$ref": "#/components/schemas/DlqEntry"},
        {
            "type": "object",
            "properties": {
                "region": {"type": "string", "description": "the region whose DLQ this is"},
                "record": {
                    "type": ["object", "null"],
                    "description": "the dead record (null: its bytes are no record: raw)",
                    "properties": {
                        "key": {"type": ["string", "null"]},
                        "payload": {},
                        "payload_encoding": {"type": "string"},
                        "target": {"type": "object", "description": "secrets redacted"},
                        "idempotency_token": {"type": ["string", "null"]},
                        "original_write_time_ms": {"type": "integer"},
                        "created_at_ms": {"type": "integer"},
                        "history": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "at_ms": {"type": "integer"},
                                    "attempt": {"type": "integer"},
                                    "error_class": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "raw": {"type": "string", "description": "an undecodable record's first 4 KiB"},
                "payload_omitted": {
                    "type": "string",
                    "description": "why record.payload is null: it nests too deep to show",
                },
                "undecodable": {"type": "string"},
                "mutation": {
                    "type": "object",
                    "description": "a mutation entry's marker or operation (record is null; an "
                    "operation's data left out, its size given)",
                },
            },
        },
    ]
}

REDRIVE = {
    "type": "object",
    "required": ["namespace", "state", "total", "redriven"],
    "properties": {
        "namespace": {"type": "string"},
        "region": {"type": "string", "description": "the region whose DLQ is redriven"},
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
        "schema": {"type": "array", "items": {"type": "string", "pattern": "^[^,]*$"}},
        "description": "record ids, comma-separated: ids=a,b (empty ones are ignored: ids= "
        "selects by no id)",
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
    "schema": {"type": "string", "pattern": REGION_NAME.pattern},
    "description": "a replicated namespace's region: its region DLQ (wal.<ns>.region.<r>.dlq, "
    "on the region's cluster) instead of the namespace's, as `walstream dlq ... --region r`",
}

_NO_REGION = (
    "unknown namespace, or a region (region) the namespace does not replicate to (or a "
    "namespace that replicates nothing)"
)
_BAD_REGION = "region is not a region name (field: region)"


def _with_region(operation: dict[str, Any], *, bad: str = _BAD_REGION) -> dict[str, Any]:
    """``operation`` on a region DLQ too: the ``region`` parameter, its 400 and 404."""
    operation["parameters"] = [*operation["parameters"], _REGION]
    responses = operation["responses"]
    responses["400"] = error(bad)
    old = responses.get("404")
    responses["404"] = error(f"{old['description']}; or {_NO_REGION}" if old else _NO_REGION)
    return operation


def paths() -> dict[str, Any]:
    """``/dlq``, ``/dlq/{id}``, ``/dlq:redrive`` and ``/dlq:discard`` (built afresh:
    walstream.api.openapi.document adds to them)."""
    status = status_operations("redrive", "Redrive")
    return {
        "/v1/namespaces/{namespace}/dlq": {
            "get": _with_region(
                {
                    "operationId": "listDlq",
                    "summary": "Open DLQ entries, oldest first",
                    "parameters": [NS_PARAM, *_DLQ_QUERY],
                    "responses": {
                        "200": json_content("DlqList", "matching open entries"),
                        **UNAVAILABLE,
                    },
                },
                bad="bad filter or region (names it)",
            )
        },
        "/v1/namespaces/{namespace}/dlq/{id}": {
            "get": _with_region(
                {
                    "operationId": "showDlqEntry",
                    "summary": "One open DLQ entry with its record and attempt history",
                    "parameters": [
                        NS_PARAM,
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                            "description": "the entry's record id",
                        },
                    ],
                    "responses": {
                        "200": json_content("DlqEntryShown", "the entry and its record"),
                        "404": error("no open entry of this id"),
                        **UNAVAILABLE,
                    },
                }
            )
        },
        "/v1/namespaces/{namespace}/dlq:redrive": {
            "post": _with_region(
                start_operation(
                    "startRedrive",
                    "Redrive open DLQ entries to the log (attempts reset, history kept); a "
                    "region DLQ's to the region's topic, for its writer to apply again",
                    body("RedriveRequest", required=False),
                    "Redrive",
                    refused={"403": error("target not allowed")},
                    running=(
                        "a redrive of this DLQ (the namespace's, or the region's) is running "
                        "(in any API process or the CLI: it holds a claim on the DLQ topic)"
                    ),
                ),
                bad="bad input (not JSON, or a field: names it; target on a region DLQ; "
                "region), durable=FALSE",
            ),
            "get": _with_region(status["get"]),
            "delete": _with_region(status["delete"]),
        },
        "/v1/namespaces/{namespace}/dlq:discard": {
            "post": _with_region(
                {
                    "operationId": "discardDlq",
                    "summary": "Close open DLQ entries without redriving them",
                    "parameters": [NS_PARAM],
                    "requestBody": body("DiscardRequest"),
                    "responses": {
                        "200": json_content("Discarded", "how many entries were closed"),
                        **BODY_ERRORS,
                        "404": error("unknown namespace"),
                        **UNAVAILABLE,
                    },
                },
                bad="bad input (not JSON, a field: names it, an empty selection: body; "
                "region), durable=FALSE",
            )
        },
    }
