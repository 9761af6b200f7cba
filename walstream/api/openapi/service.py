"""The OpenAPI schemas and paths of the process itself: health, readiness and this document.

They follow walstream.api.handlers' probes, which change with the deployment, not with the log.
"""

from __future__ import annotations

from typing import Any

from walstream.api.openapi.responses import json_content

__all__ = ["HEALTH", "OPENAPI", "READY", "paths"]

READY = {
    "type": "object",
    "required": ["status", "broker", "registry_loaded", "namespaces"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not ready"]},
        "broker": {"type": "boolean"},
        "registry_loaded": {"type": "boolean"},
        "namespaces": {"type": "integer"},
        "pid": {"type": "integer", "description": "the process answering"},
    },
}

HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "const": "ok"}},
}

OPENAPI = {"type": "object", "required": ["openapi", "info", "paths"]}


def paths() -> dict[str, Any]:
    """``/v1/openapi.json``, ``/healthz`` and ``/readyz`` (built afresh: walstream.api.openapi.
    document adds to them)."""
    return {
        "/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "responses": {"200": json_content("OpenApi", "this document")},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "responses": {"200": json_content("Health", "the process is alive")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "responses": {
                    "200": json_content("Ready", "broker reachable, registry loaded"),
                    "503": json_content("Ready", "not ready"),
                },
            }
        },
    }
