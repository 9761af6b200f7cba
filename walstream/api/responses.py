"""The one place errors become HTTP statuses and JSON bodies."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from walstream.api.replays import ReplayConflictError
from walstream.api.router import MethodNotAllowedError, RouteNotFoundError
from walstream.dlq import RedriveConflictError
from walstream.errors import (
    BadRequestError,
    BrokerUnavailableError,
    ForbiddenError,
    NamespaceNotFoundError,
    NamespaceUnavailableError,
    OverloadedError,
    ServiceUnavailableError,
    UnauthorizedError,
    WalError,
    WriteRejectedError,
    WriteUnknownError,
)

__all__ = ["error_body", "error_response", "failure_response", "json_response", "status_for"]

logger = logging.getLogger(__name__)


def json_response(obj: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def status_for(exc: WalError) -> tuple[int, str]:
    """HTTP status and durable value for an error."""
    if isinstance(exc, BadRequestError):
        return exc.status, "FALSE"
    if isinstance(exc, UnauthorizedError | ForbiddenError):
        return exc.status, "FALSE"
    if isinstance(exc, NamespaceUnavailableError):
        return 503, "FALSE"
    if isinstance(exc, NamespaceNotFoundError | RouteNotFoundError):
        return 404, "FALSE"
    if isinstance(exc, MethodNotAllowedError):
        return 405, "FALSE"
    if isinstance(exc, RedriveConflictError | ReplayConflictError):
        return 409, "FALSE"
    if isinstance(exc, ServiceUnavailableError):
        return 503, "FALSE"
    if isinstance(exc, OverloadedError | WriteRejectedError):
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


def error_response(exc: WalError) -> web.Response:
    """The response for a WalError, with Retry-After or Allow where it applies."""
    status, _ = status_for(exc)
    response = json_response(error_body(exc), status)
    if isinstance(exc, OverloadedError | BrokerUnavailableError):
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    elif isinstance(exc, MethodNotAllowedError):
        response.headers["Allow"] = ", ".join(exc.allowed)
    elif isinstance(exc, UnauthorizedError):
        response.headers["WWW-Authenticate"] = 'Bearer realm="walstream"'

    return response


def failure_response(request: web.BaseRequest, exc: Exception) -> web.Response:
    """The response for any other exception a handler raised."""
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        # aiohttp's own refusals, e.g. 413 when the body is over WALSTREAM_MAX_REQUEST_BYTES
        body = {"durable": "FALSE", "message": exc.reason, "error": type(exc).__name__}
        return json_response(body, exc.status)
    # a bug: the write's fate is unknown to the client, so say so
    logger.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    body = {"durable": "UNKNOWN", "message": "internal error", "error": "InternalError"}
    return json_response(body, 500)
