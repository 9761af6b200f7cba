"""The one place errors become HTTP statuses and JSON bodies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from walstream.errors import (
    BadRequestError,
    NamespaceNotFoundError,
    OverloadedError,
    WalError,
    WriteRejectedError,
    WriteUnknownError,
)

__all__ = ["error_body", "error_middleware", "status_for"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_for(exc: WalError) -> tuple[int, str]:
    """HTTP status and durable value for an error."""
    if isinstance(exc, BadRequestError):
        return exc.status, "FALSE"
    if isinstance(exc, NamespaceNotFoundError):
        return 404, "FALSE"
    if isinstance(exc, OverloadedError):
        return 503, "FALSE"
    if isinstance(exc, WriteRejectedError):
        return 503, "FALSE"
    if isinstance(exc, WriteUnknownError):
        return 504, "UNKNOWN"
    return 500, "UNKNOWN"


def error_body(exc: WalError) -> dict[str, object]:
    """The JSON body describing an error (and the durability it implies)."""
    _, durable = status_for(exc)
    body: dict[str, object] = {"durable": durable, "message": str(exc), "error": type(exc).__name__}
    if isinstance(exc, BadRequestError):
        body["field"] = exc.field
        body["reason"] = exc.reason
    return body


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map WalError, aiohttp's own HTTP errors and surprises to JSON responses."""
    try:
        return await handler(request)
    except WalError as exc:
        status, _ = status_for(exc)
        headers = {}
        if isinstance(exc, OverloadedError):
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return web.json_response(error_body(exc), status=status, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        durable = "FALSE"
        return web.json_response(
            {"durable": durable, "message": exc.reason, "error": type(exc).__name__},
            status=exc.status,
        )
    except Exception:  # a bug: the write's fate is unknown to the client, so say so
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response(
            {"durable": "UNKNOWN", "message": "internal error", "error": "InternalError"},
            status=500,
        )
