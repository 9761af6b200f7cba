"""WriteToLog handlers: validate, admit, write with acks=all, answer durable TRUE/FALSE/UNKNOWN."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from walstream.api.deps import DEPS, ApiDeps
from walstream.api.middlewares import error_body, status_for
from walstream.api.openapi import openapi_document
from walstream.core.validate import parse_batch, parse_write_request
from walstream.errors import BadRequestError, OverloadedError, WalError
from walstream.kafka.producer import Outgoing
from walstream.namespaces.config import NamespaceConfig
from walstream.records import Envelope, encode_envelope

__all__ = ["routes"]

routes = web.RouteTableDef()


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _namespace(request: web.Request, deps: ApiDeps) -> NamespaceConfig:
    if not deps.registry_loaded():
        raise OverloadedError(deps.settings.shed_retry_after_s, "namespace registry is loading")
    return deps.registry.get(request.match_info["namespace"])


def _decode(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError("body", f"invalid JSON: {exc}") from None


def _outgoing(ns: NamespaceConfig, env: Envelope) -> Outgoing:
    key = env.key.encode() if env.key is not None else None
    return Outgoing(topic=ns.topics.log, key=key, value=encode_envelope(env))


@routes.post("/v1/namespaces/{namespace}/log")
async def write_to_log(request: web.Request) -> web.Response:
    """WriteToLog: one record."""
    deps = request.app[DEPS]
    ns = _namespace(request, deps)
    limiter = deps.limiter
    if not limiter.try_acquire():
        raise OverloadedError(deps.settings.shed_retry_after_s)
    try:
        body = _decode(await request.read())
        env = parse_write_request(body, ns, now_ms=deps.clock.now_ms(), rand=deps.rand())
        await deps.producer.send(_outgoing(ns, env))
    finally:
        limiter.release()
    return _json({"durable": "TRUE", "message": "written", "id": env.id})


@routes.post("/v1/namespaces/{namespace}/log:batch")
async def write_batch(request: web.Request) -> web.Response:
    """WriteToLog for many records: one result per record, in request order."""
    deps = request.app[DEPS]
    ns = _namespace(request, deps)
    items = parse_batch(_decode(await request.read()), deps.settings.max_batch_records)
    results: list[dict[str, Any]] = [{} for _ in items]
    envelopes: list[tuple[int, Envelope]] = []
    now_ms = deps.clock.now_ms()
    for index, item in enumerate(items):
        try:
            envelopes.append(
                (index, parse_write_request(item, ns, now_ms=now_ms, rand=deps.rand()))
            )
        except WalError as exc:
            results[index] = {"status": status_for(exc)[0], **error_body(exc)}
    if envelopes:
        if not deps.limiter.try_acquire(len(envelopes)):
            raise OverloadedError(deps.settings.shed_retry_after_s)
        try:
            errors = await deps.producer.send_many([_outgoing(ns, env) for _, env in envelopes])
        finally:
            deps.limiter.release(len(envelopes))
        for (index, env), error in zip(envelopes, errors, strict=True):
            if error is None:
                results[index] = {
                    "status": 200,
                    "durable": "TRUE",
                    "message": "written",
                    "id": env.id,
                }
            else:
                results[index] = {"status": status_for(error)[0], "id": env.id, **error_body(error)}
    return _json({"results": results})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is alive."""
    return _json({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready: the broker answers and the namespace registry has caught up."""
    deps = request.app[DEPS]
    broker = await deps.producer.ping()
    registry = deps.registry_loaded()
    ready = broker and registry
    body = {
        "status": "ready" if ready else "not ready",
        "broker": broker,
        "registry_loaded": registry,
        "namespaces": len(deps.registry),
    }
    return _json(body, status=200 if ready else 503)


@routes.get("/v1/namespaces")
async def list_namespaces(request: web.Request) -> web.Response:
    """The namespaces this process knows."""
    deps = request.app[DEPS]
    return _json({"namespaces": [ns.to_json() for ns in deps.registry]})


@routes.get("/v1/namespaces/{namespace}")
async def show_namespace(request: web.Request) -> web.Response:
    """One namespace's configuration, as this process sees it."""
    deps = request.app[DEPS]
    return _json(deps.registry.get(request.match_info["namespace"]).to_json())


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of this API."""
    return _json(openapi_document())
