"""The OpenAPI schemas and paths of multi-partition mutations (issue 18): one operation, the
completion marker, a whole MutateItems, and a transaction's status.

They follow walstream.core.mutations.request (a test holds the fields to its own) and
walstream.core.mutations.status.
"""

from __future__ import annotations

from typing import Any

from walstream.api.openapi.fields import BASE64, DURABLE, KV_KEY
from walstream.api.openapi.responses import (
    BODY_ERRORS,
    NS_PARAM,
    WRITE_ERRORS,
    body,
    error,
    json_content,
)
from walstream.core.mutations.wire import TXN_ID
from walstream.core.target_policy import IDENTIFIER

__all__ = [
    "MUTATE_ITEMS_REQUEST",
    "MUTATION_COMPLETE",
    "MUTATION_OPERATION",
    "MUTATION_RESPONSE",
    "MUTATION_STATUS",
    "paths",
]

_LIMITS = (
    "A transaction holds at most WALSTREAM_MUTATION_OPERATIONS_MAX operations (1,000) and "
    "WALSTREAM_MUTATION_TXN_BYTES_MAX bytes of values, ids and table names (16 MiB): 413 beyond"
)

_OWT = {
    "type": ["integer", "null"],
    "minimum": 1,
    "description": (
        "ms since the epoch, at most 1 h ahead; last-write-wins compares it. Default: the "
        "transaction's time (its marker's)"
    ),
}
_TABLE = {
    "type": "string",
    "pattern": IDENTIFIER.pattern,
    "description": "the kv table: the namespace's target's, or one its allowed_targets.kv_tables "
    "allow (403)",
}
_ID = {**KV_KEY, "description": "the row's key in the table (no NUL)"}

MUTATION_OPERATION = {
    "type": "object",
    "description": "a put (table, id, value) or a delete (table, id) of one row",
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["op", "table", "id", "value"],
            "properties": {
                "op": {"const": "put"},
                "table": _TABLE,
                "id": _ID,
                "value": {
                    "description": (
                        "value_encoding=json (the default): any JSON value, stored as its "
                        "compact JSON; base64: standard base64 text of the value's bytes"
                    )
                },
                "value_encoding": {"type": "string", "enum": ["json", "base64"]},
                "original_write_time": _OWT,
            },
            # the value's type follows value_encoding
            "if": {
                "required": ["value_encoding"],
                "properties": {"value_encoding": {"const": "base64"}},
            },
            "then": {
                "properties": {
                    "value": {"type": "string", "contentEncoding": "base64", "pattern": BASE64}
                }
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["op", "table", "id"],
            "properties": {
                "op": {"const": "delete"},
                "table": _TABLE,
                "id": _ID,
                "original_write_time": _OWT,
            },
        },
    ],
}

MUTATION_COMPLETE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["count"],
    "properties": {
        "count": {
            "type": "integer",
            "minimum": 1,
            "description": "the transaction's operations (seqs 0..count-1); "
            "at most WALSTREAM_MUTATION_OPERATIONS_MAX (413)",
        }
    },
}

MUTATE_ITEMS_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["txn_id", "operations"],
    "description": f"a whole MutateItems: operation i has seq i. {_LIMITS}",
    "properties": {
        "txn_id": {"type": "string", "pattern": TXN_ID.pattern},
        "operations": {
            "type": "array",
            "minItems": 1,
            "items": {"$ref": "#/components/schemas/MutationOperation"},
        },
    },
}

MUTATION_RESPONSE = {
    "type": "object",
    "required": ["durable", "message"],
    "properties": {
        "durable": DURABLE,
        "message": {"type": "string"},
        "txn_id": {"type": "string"},
        "seq": {"type": "integer", "description": "the operation written"},
        "count": {"type": "integer", "description": "the operations the marker names"},
        "error": {"type": "string"},
        "field": {"type": "string"},
        "reason": {"type": "string"},
    },
}

MUTATION_STATUS = {
    "type": "object",
    "required": ["namespace", "txn_id", "status"],
    "description": (
        "open: waiting for operations or the marker; committing: complete, ``progress`` seqs "
        "applied; committed (within the idempotency window); dead_lettered: in the DLQ, with "
        "the reason, the progress and the missing seqs (walstream dlq redrive resumes it)"
    ),
    "properties": {
        "namespace": {"type": "string"},
        "txn_id": {"type": "string"},
        "status": {"type": "string", "enum": ["open", "committing", "committed", "dead_lettered"]},
        "operations": {"type": "integer", "description": "the marker's count (0: no marker yet)"},
        "received": {"type": "integer", "description": "operations whose records all arrived"},
        "progress": {"type": "integer", "description": "seqs below it are applied"},
        "missing": {"type": "array", "items": {"type": "integer"}},
        "opened_at_ms": {"type": "integer"},
        "committed_at_ms": {"type": "integer"},
        "reason": {"type": "string"},
    },
}

_TXN_PARAM = {
    "name": "txn_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": TXN_ID.pattern},
}
_SEQ_PARAM = {
    "name": "seq",
    "in": "path",
    "required": True,
    "description": "the operation's seq, 0-based; below WALSTREAM_MUTATION_OPERATIONS_MAX (413)",
    "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before asking again",
        "schema": {"type": "integer", "minimum": 1},
    }
}

_NOT_TAKEN = error(
    "unknown namespace, or one that takes no mutations (no 'mutations' block), durable=FALSE"
)


def _write(operation_id: str, summary: str, request: str, params: list[Any]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": [NS_PARAM, *params],
            "requestBody": body(request),
            "responses": {
                "200": json_content("MutationResponse", "written (acks=all), durable=TRUE"),
                **WRITE_ERRORS,
                "403": error("a table the namespace's target policy refuses, durable=FALSE"),
                "404": _NOT_TAKEN,
                "413": error(
                    f"the body, or the transaction over its limits, durable=FALSE. {_LIMITS}"
                ),
            },
        }
    }


def paths() -> dict[str, Any]:
    """The mutation routes (built afresh: walstream.api.openapi.document adds to them)."""
    base = "/v1/namespaces/{namespace}/mutations"
    return {
        base: _write(
            "mutateItems",
            "Write a whole MutateItems; its marker once its operations are acked",
            "MutateItemsRequest",
            [],
        ),
        base + "/{txn_id}:complete": _write(
            "completeMutation",
            "Write a transaction's completion marker (its operation count)",
            "MutationComplete",
            [_TXN_PARAM],
        ),
        base + "/{txn_id}/{seq}": _write(
            "mutate",
            "Write one operation of a transaction",
            "MutationOperation",
            [_TXN_PARAM, _SEQ_PARAM],
        ),
        base + "/{txn_id}": {
            "get": {
                "operationId": "mutationStatus",
                "summary": "A transaction's state, as the worker owning it reports it",
                "parameters": [NS_PARAM, _TXN_PARAM],
                "responses": {
                    "200": json_content("MutationStatus", "the transaction's state"),
                    "400": BODY_ERRORS["400"],
                    "404": error(
                        "unknown namespace, one that takes no mutations, or a transaction "
                        "walstream does not know (never seen, or committed before the "
                        "idempotency window)"
                    ),
                    "503": error(
                        "no worker answered (WALSTREAM_WORKER_URL); or a rebalance leaves nobody "
                        "holding the transaction, or the namespace registry is loading "
                        "(Retry-After)",
                        _RETRY_AFTER,
                    ),
                },
            }
        },
    }
