"""The one place errors become HTTP responses: a WalError's status, durable value and headers
are its class's (walstream.errors); any other exception is aiohttp's refusal (its status,
durable FALSE) or a bug (500, durable UNKNOWN)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from walstream.errors import BadRequestError, Durable, WalError

__all__ = ["error_body", "error_response", "failure_response", "json_response", "status_for"]

logger = logging.getLogger(__name__)


def json_response(obj: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def status_for(exc: WalError) -> tuple[int, Durable]:
    """HTTP status and durable value for an error: what its class says (walstream.errors)."""
    return exc.status, exc.durable


def error_body(exc: WalError) -> dict[str, object]:
    """The JSON body describing an error (and the durability it implies)."""
    body: dict[str, object] = {
        "durable": exc.durable,
        "message": str(exc),
        "error": type(exc).__name__,
    }
    if isinstance(exc, BadRequestError):
        body["field"] = exc.field
        body["reason"] = exc.reason
    return body


def error_response(exc: WalError) -> web.Response:
    """The response for a WalError, with the headers it carries (Retry-After, Allow,
    WWW-Authenticate)."""
    response = json_response(error_body(exc), exc.status)
    response.headers.update(exc.headers())
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
