"""The OpenAPI document's error schema and the responses and parameters its paths share.

One place says what every route answers when the registry loads, a body is refused or a
namespace is unknown (walstream.api.handlers and walstream.errors decide those statuses), so the
paths of each concern only add their own.
"""

from __future__ import annotations

from typing import Any

from walstream.core.targets import NAMESPACE_NAME

__all__ = [
    "BODY_ERRORS",
    "ERROR",
    "NOT_FOUND",
    "NS_PARAM",
    "UNAVAILABLE",
    "WRITE_ERRORS",
    "body",
    "error",
    "json_content",
    "ref",
    "start_operation",
    "status_operations",
]

ERROR = {
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
}


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again (when waiting may help)",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def json_content(
    name: str, description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A response whose JSON body is the component schema ``name``."""
    response = {"description": description, "content": {"application/json": {"schema": ref(name)}}}
    if headers:
        response["headers"] = headers
    return response


def error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error response (the ``Error`` schema)."""
    return json_content("Error", description, headers)


def body(name: str, *, required: bool = True) -> dict[str, Any]:
    """A JSON request body of the component schema ``name``."""
    return {"required": required, "content": {"application/json": {"schema": ref(name)}}}


NS_PARAM = {
    "name": "namespace",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": NAMESPACE_NAME.pattern},
}

#: Every route that reads a body: its limit, its time to arrive, and JSON.
BODY_ERRORS = {
    "400": error("bad input (not JSON, or a field: names it), durable=FALSE"),
    "408": error("the body did not arrive within WALSTREAM_BODY_READ_TIMEOUT_S"),
    "413": error(
        "the body (refused on its Content-Length, unread), a payload or a record is over its "
        "limit, durable=FALSE"
    ),
}

WRITE_ERRORS = {
    **BODY_ERRORS,
    "403": error("target not in the namespace's allowed_targets, durable=FALSE"),
    "404": error("unknown namespace, durable=FALSE"),
    "503": error(
        "load shed, the namespace registry is loading, or the broker is unavailable "
        "(Retry-After); or the namespace's latest configuration event is unreadable",
        _RETRY_AFTER,
    ),
    "504": error("the broker did not answer in time, durable=UNKNOWN"),
}


#: Every namespace route: the registry is still loading, or the namespace's config is unreadable.
UNAVAILABLE = {
    "503": error(
        "the namespace registry is loading (Retry-After), or the namespace's latest "
        "configuration event is unreadable, or this process serves no DLQ or replay endpoints",
        _RETRY_AFTER,
    )
}

NOT_FOUND = {"404": error("unknown namespace")}


def start_operation(
    operation_id: str,
    summary: str,
    request: dict[str, Any],
    schema: str,
    *,
    refused: dict[str, Any],
    running: str,
) -> dict[str, Any]:
    """POST of a namespace's long-running job (a redrive, a replay): 202 with the job (schema
    ``schema``), the body's errors and ``refused``, 404, 409 while one runs (``running``)."""
    return {
        "operationId": operation_id,
        "summary": summary,
        "parameters": [NS_PARAM],
        "requestBody": request,
        "responses": {
            "202": json_content(schema, "started"),
            **BODY_ERRORS,
            **refused,
            **NOT_FOUND,
            "409": error(running),
            **UNAVAILABLE,
        },
    }


def status_operations(noun: str, schema: str) -> dict[str, Any]:
    """GET (the latest) and DELETE (cancel) of a namespace's running ``noun`` (a redrive, a
    replay), which this process may not know: 404."""
    none_here = "none in this process (or an unknown namespace)"
    return {
        "get": {
            "operationId": f"{noun}Status",
            "parameters": [NS_PARAM],
            "responses": {
                "200": json_content(schema, f"the latest {noun}"),
                "404": error(none_here),
                **UNAVAILABLE,
            },
        },
        "delete": {
            "operationId": f"cancel{noun.capitalize()}",
            "parameters": [NS_PARAM],
            "responses": {
                "200": json_content(schema, "cancelled (or already finished)"),
                "404": error(none_here),
                **UNAVAILABLE,
            },
        },
    }
