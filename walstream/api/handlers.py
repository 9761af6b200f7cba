"""WriteToLog handlers: validate, admit, write with acks=all, answer durable TRUE/FALSE/UNKNOWN."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from walstream.api.auth import PRINCIPAL
from walstream.api.body import BodyLimit, read_body
from walstream.api.deps import ApiDeps
from walstream.api.dlq_handlers import install_dlq_routes
from walstream.api.openapi import openapi_document
from walstream.api.replays import Replays
from walstream.api.requests import Params, decode_json, loaded, namespace_for, reserved_for
from walstream.api.responses import error_body, json_response, status_for
from walstream.api.router import Router
from walstream.core.auth import principals_namespaces, redact_target
from walstream.core.limits import check_record_size
from walstream.core.outbox import Outgoing, route_write
from walstream.core.replay_request import parse_replay_request
from walstream.core.validate import exact_body, parse_batch, parse_write_request
from walstream.errors import (
    OverloadedError,
    RouteNotFoundError,
    ServiceUnavailableError,
    WalError,
)

__all__ = ["install_routes"]


async def write_to_log(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """WriteToLog: one record."""
    ns = namespace_for(deps, params)
    raw = await read_body(request, deps.settings.body_read_timeout_s)
    # The slot is taken once the body is here: a slow body must not hold a write slot.
    limiter = deps.limiter
    if not limiter.try_acquire():
        raise OverloadedError(deps.settings.shed_retry_after_s)
    try:
        body = decode_json(raw)
        now_ms = deps.clock.now_ms()
        env = parse_write_request(
            body,
            ns,
            now_ms=now_ms,
            rand=deps.rand(),
            reserved=reserved_for(deps),
            exact=exact_body(raw),
        )
        record = route_write(
            env, ns.topics.log, now_ms, deps.settings.app_id, key_ordered=ns.key_ordered
        )
        check_record_size(record.key, record.value, deps.settings.max_record_bytes)
        record_id = env.id
        # While the broker acks, hold the encoded record, not the decoded body (small JSON
        # values decode to tens of times their bytes).
        del raw, body, env
        await deps.producer.send(record)
    finally:
        limiter.release()
    # The hot path's answer, built without a dict and an encoder (ids are hex: nothing to escape).
    return web.Response(
        body=b'{"durable":"TRUE","message":"written","id":"%s"}' % record_id.encode(),
        content_type="application/json",
    )


async def write_batch(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """WriteToLog for many records: one result per record, in request order."""
    ns = namespace_for(deps, params)
    raw = await read_body(request, deps.settings.body_read_timeout_s)
    items = parse_batch(decode_json(raw), deps.settings.max_batch_records)
    # the records again with exact numbers, when they may hold one the log would change
    exact = exact_body(raw)
    exact_items = exact["records"] if exact is not None else None
    results: list[dict[str, Any]] = [{} for _ in items]
    envelopes: list[tuple[int, str]] = []  # (index, record id)
    now_ms = deps.clock.now_ms()
    outgoing: list[Outgoing] = []
    app_id, limit = deps.settings.app_id, deps.settings.max_record_bytes
    for index, item in enumerate(items):
        try:
            env = parse_write_request(
                item,
                ns,
                now_ms=now_ms,
                rand=deps.rand(),
                reserved=reserved_for(deps),
                exact=exact_items[index] if exact_items is not None else None,
            )
            record = route_write(env, ns.topics.log, now_ms, app_id, key_ordered=ns.key_ordered)
            check_record_size(record.key, record.value, limit)
        except WalError as exc:
            results[index] = {"status": status_for(exc)[0], **error_body(exc)}
        else:
            envelopes.append((index, env.id))
            outgoing.append(record)
    if envelopes:
        if not deps.limiter.try_acquire(len(envelopes)):
            raise OverloadedError(deps.settings.shed_retry_after_s)
        # While the broker acks, hold the encoded records, not the decoded body.
        del raw, items, item, env, exact, exact_items
        try:
            errors = await deps.producer.send_many(outgoing)
        finally:
            deps.limiter.release(len(envelopes))
        for (index, record_id), error in zip(envelopes, errors, strict=True):
            if error is None:
                results[index] = {
                    "status": 200,
                    "durable": "TRUE",
                    "message": "written",
                    "id": record_id,
                }
            else:
                results[index] = {
                    "status": status_for(error)[0],
                    "id": record_id,
                    **error_body(error),
                }
    return json_response({"results": results})


async def healthz(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """The process is alive."""
    return json_response({"status": "ok"})


async def readyz(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """Ready: the broker answers and the namespace registry has caught up."""
    broker = await deps.producer.ping()
    registry = deps.registry_loaded()
    ready = broker and registry
    body = {
        "status": "ready" if ready else "not ready",
        "broker": broker,
        "registry_loaded": registry,
        "namespaces": len(deps.registry),
        "pid": os.getpid(),  # which process answers (`make run` checks it is its own API)
    }
    return json_response(body, status=200 if ready else 503)


async def list_namespaces(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """The namespaces this process knows (those the token administers), secrets redacted."""
    loaded(deps)
    configs = {ns.name: ns for ns in deps.registry}
    shown = principals_namespaces(request.get(PRINCIPAL), configs)
    return json_response({"namespaces": [redact_target(configs[n].to_json()) for n in shown]})


async def show_namespace(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """One namespace's configuration, as this process sees it (header values and URL userinfo
    redacted: walstream.core.auth.redact_target)."""
    return json_response(redact_target(namespace_for(deps, params).to_json()))


async def openapi(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """The OpenAPI document of this API."""
    return json_response(openapi_document())


def _replays(deps: ApiDeps) -> Replays:
    if deps.replays is None:
        raise ServiceUnavailableError("this API process serves no replay endpoints")
    return deps.replays


async def start_replay(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """Replay a window of the namespace's writes in the background (202; walstream.replay);
    one at a time per namespace in this process (409)."""
    ns = namespace_for(deps, params)
    raw = await read_body(request, deps.settings.body_read_timeout_s)
    replay_request = parse_replay_request(decode_json(raw) if raw else {}, deps.clock.now_ms())
    progress = _replays(deps).start(ns, replay_request)
    return json_response(progress.to_json(), status=202)


async def replay_status(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """The namespace's latest replay in this process."""
    ns = namespace_for(deps, params)
    progress = _replays(deps).status(ns.name)
    if progress is None:
        raise RouteNotFoundError(f"no replay of {ns.name} in this process")
    return json_response(progress.to_json())


async def cancel_replay(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """Cancel the namespace's running replay (what is delivered stays delivered)."""
    ns = namespace_for(deps, params)
    progress = await _replays(deps).cancel(ns.name)
    if progress is None:
        raise RouteNotFoundError(f"no replay of {ns.name} in this process")
    return json_response(progress.to_json())


def install_routes(router: Router) -> None:
    """Register every route of the API (the OpenAPI test holds the document to this list)."""
    # Request bodies: one record, a batch, or (every other route) small (walstream.api.body).
    router.add("POST", "/v1/namespaces/{namespace}/log", write_to_log, body=BodyLimit.RECORD)
    router.add("POST", "/v1/namespaces/{namespace}/log:batch", write_batch, body=BodyLimit.BATCH)
    router.add("GET", "/v1/namespaces", list_namespaces)
    router.add("GET", "/v1/namespaces/{namespace}", show_namespace)
    install_dlq_routes(router)  # in their place: the routes keep their order
    router.add("POST", "/v1/namespaces/{namespace}/replay", start_replay)
    router.add("GET", "/v1/namespaces/{namespace}/replay", replay_status)
    router.add("DELETE", "/v1/namespaces/{namespace}/replay", cancel_replay)
    router.add("GET", "/v1/openapi.json", openapi)
    router.add("GET", "/healthz", healthz)
    router.add("GET", "/readyz", readyz)
