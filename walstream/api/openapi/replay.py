"""The OpenAPI schemas and paths of a replay: its window, its progress, start, status and cancel.

They follow walstream.core.replay_request (a test holds the window's times to its own), which
changes apart from the write path and the DLQ.
"""

from __future__ import annotations

from typing import Any

from walstream.api.openapi.fields import WINDOW_TIME
from walstream.api.openapi.responses import body, start_operation, status_operations

__all__ = ["REPLAY", "REPLAY_REQUEST", "paths"]

REPLAY_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["from", "to"],
    "properties": {
        "from": {**WINDOW_TIME, "description": f"window start: {WINDOW_TIME['description']}"},
        "to": {
            **WINDOW_TIME,
            "description": (
                "window end (exclusive), after from (else a 400 naming to): "
                f"{WINDOW_TIME['description']}"
            ),
        },
        "skip_ids": {"type": "array", "maxItems": 10_000, "items": {"type": "string"}},
        "resume_from": {
            "type": ["string", "null"],
            "pattern": "^[0-9]+:[0-9]+(?:,[0-9]+:[0-9]+)*$",
            "description": "a stopped replay's cursor: partition:offset,...",
        },
    },
}

REPLAY = {
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
}


def paths() -> dict[str, Any]:
    """``/replay`` (built afresh: walstream.api.openapi.document adds to it)."""
    return {
        "/v1/namespaces/{namespace}/replay": {
            "post": start_operation(
                "startReplay",
                "Re-deliver a window's writes to their targets (walstream replay)",
                body("ReplayRequest"),
                "Replay",
                refused={},
                running="a replay of the namespace runs in this process",
            ),
            **status_operations("replay", "Replay"),
        },
    }
