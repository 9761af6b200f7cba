"""The OpenAPI 3.1 document of the HTTP API, put together from its concerns' schemas and paths,
with the bearer auth of walstream.api.auth's route table on every operation it guards.
"""

from __future__ import annotations

from typing import Any

from walstream import __version__
from walstream.api.openapi import dlq, mutations, namespaces, replay, service, writes
from walstream.api.openapi.responses import ERROR, error
from walstream.api.openapi.targets import target_schemas

__all__ = ["SCHEMAS", "openapi_document"]

SCHEMAS: dict[str, dict[str, Any]] = {
    "Lifecycle": writes.LIFECYCLE,
    **target_schemas(),
    "WriteToLogRequest": writes.WRITE_REQUEST,
    "JsonPayload": writes.JSON_PAYLOAD,
    "Base64Payload": writes.BASE64_PAYLOAD,
    "Error": ERROR,
    "WriteToLogResponse": writes.WRITE_RESPONSE,
    "WriteBatchRequest": writes.WRITE_BATCH_REQUEST,
    "WriteBatchResponse": writes.WRITE_BATCH_RESPONSE,
    "Ready": service.READY,
    "DlqEntry": dlq.DLQ_ENTRY,
    "DlqList": dlq.DLQ_LIST,
    "DlqEntryShown": dlq.DLQ_ENTRY_SHOWN,
    "RedriveRequest": dlq.REDRIVE_REQUEST,
    "Redrive": dlq.REDRIVE,
    "DiscardRequest": dlq.DISCARD_REQUEST,
    "Discarded": dlq.DISCARDED,
    "ReplayRequest": replay.REPLAY_REQUEST,
    "Replay": replay.REPLAY,
    "MutationOperation": mutations.MUTATION_OPERATION,
    "MutationComplete": mutations.MUTATION_COMPLETE,
    "MutateItemsRequest": mutations.MUTATE_ITEMS_REQUEST,
    "MutationResponse": mutations.MUTATION_RESPONSE,
    "MutationStatus": mutations.MUTATION_STATUS,
    "Namespace": namespaces.NAMESPACE,
    "NamespaceList": namespaces.NAMESPACE_LIST,
    "Health": service.HEALTH,
    "OpenApi": service.OPENAPI,
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
            responses["401"] = error(
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
                responses["403"] = error(refused)
    return document


def _document() -> dict[str, Any]:
    """The document without its security (the paths are built afresh: _secured adds to them)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "walstream", "version": __version__},
        "paths": {
            **writes.paths(),
            **mutations.paths(),
            **namespaces.paths(),
            **dlq.paths(),
            **replay.paths(),
            **service.paths(),
        },
        "components": {"schemas": SCHEMAS},
    }
