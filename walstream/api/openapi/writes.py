"""The OpenAPI schemas and paths of WriteToLog: the write envelope, its results, one record or a
batch.

They follow walstream.core.validate (a test holds the request's fields to its own), which changes
for the envelope's sake alone.
"""

from __future__ import annotations

from typing import Any

from walstream.api.openapi.fields import BASE64, DURABLE, HEADER_VALUE, KEY, text
from walstream.api.openapi.responses import NS_PARAM, WRITE_ERRORS, body, json_content
from walstream.api.openapi.targets import WRITE_TARGET
from walstream.core.validate import MAX_PAYLOAD_DEPTH

__all__ = [
    "BASE64_PAYLOAD",
    "JSON_PAYLOAD",
    "LIFECYCLE",
    "WRITE_BATCH_REQUEST",
    "WRITE_BATCH_RESPONSE",
    "WRITE_REQUEST",
    "WRITE_RESPONSE",
    "paths",
]

LIFECYCLE = {
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
                "ms since the epoch, at most 1 h ahead; last-write-wins compares it. Default: now"
            ),
        },
    },
    "not": {"required": ["delay_ms", "deliver_at"]},
    "description": "the delay (or deliver_at's) plus jitter_ms: at most the max_delay_ms",
}

WRITE_REQUEST = {
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
        "target": WRITE_TARGET,
        "idempotency_token": {
            **text(256, HEADER_VALUE),
            "type": ["string", "null"],
            "description": "sent to http targets as Idempotency-Key (default: the id)",
        },
        "key": {
            **KEY,
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
}

JSON_PAYLOAD = {"description": "any JSON value (payload_encoding=json)"}
BASE64_PAYLOAD = {
    "type": "string",
    "contentEncoding": "base64",
    "pattern": BASE64,
    "description": "the payload's bytes in standard base64 (payload_encoding=base64)",
}


def _result_properties() -> dict[str, Any]:
    """A write's result: durable, the message and the id, or the error and the field refused."""
    return {
        "durable": DURABLE,
        "message": {"type": "string"},
        "id": {"type": "string"},
        "error": {"type": "string"},
        "field": {"type": "string"},
        "reason": {"type": "string"},
    }


WRITE_RESPONSE = {
    "type": "object",
    "required": ["durable", "message"],
    "properties": _result_properties(),
}

WRITE_BATCH_REQUEST = {
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
}

WRITE_BATCH_RESPONSE = {
    "type": "object",
    "required": ["results"],
    "properties": {
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["status", "durable", "message"],
                "properties": {"status": {"type": "integer"}, **_result_properties()},
            },
        }
    },
}


def paths() -> dict[str, Any]:
    """``/log`` and ``/log:batch`` (built afresh: walstream.api.openapi.document adds to them)."""
    return {
        "/v1/namespaces/{namespace}/log": {
            "post": {
                "operationId": "writeToLog",
                "summary": "Write one record to the namespace's log (acks=all)",
                "parameters": [NS_PARAM],
                "requestBody": body("WriteToLogRequest"),
                "responses": {
                    "200": json_content("WriteToLogResponse", "written, durable=TRUE"),
                    **WRITE_ERRORS,
                },
            }
        },
        "/v1/namespaces/{namespace}/log:batch": {
            "post": {
                "operationId": "writeToLogBatch",
                "summary": "Write many records; one result per record",
                "parameters": [NS_PARAM],
                "requestBody": body("WriteBatchRequest"),
                "responses": {
                    "200": json_content("WriteBatchResponse", "a result per record"),
                    **WRITE_ERRORS,
                },
            }
        },
    }
