"""DLQ handlers: list, show, redrive and discard a namespace's DLQ entries, or its region
DLQ's (``?region=r``), over HTTP (``walstream dlq`` as routes; walstream.dlq does the work)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from walstream.api.auth import PRINCIPAL
from walstream.api.body import read_body
from walstream.api.deps import ApiDeps
from walstream.api.requests import Params, decode_json, namespace_for, reserved_for
from walstream.api.responses import json_response
from walstream.api.router import Router
from walstream.core.auth import redact_target, visible_reason
from walstream.core.dlq import DlqCursor, Selection, parse_selection
from walstream.core.targets import REGION_NAME, parse_target
from walstream.dlq import DlqAccess, entry_bytes, entry_json, region_dlq
from walstream.errors import (
    BadRequestError,
    RouteNotFoundError,
    ServiceUnavailableError,
    WalError,
)
from walstream.namespaces.config import NamespaceConfig

__all__ = ["install_dlq_routes"]


def _dlq(deps: ApiDeps) -> DlqAccess:
    if deps.dlq is None:
        raise ServiceUnavailableError("this API process serves no DLQ endpoints")
    return deps.dlq


@dataclass(frozen=True, slots=True)
class _Queue:
    """The DLQ a request names: the namespace's own, or with ``?region=r`` region r's (``ns``
    then the namespace as the region's DLQ sees it: walstream.dlq.regions, as the CLI's
    ``--region``)."""

    name: str  # the namespace's name
    ns: NamespaceConfig
    region: str | None
    servers: str | list[str] | None  # None: this API's cluster

    def named(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` after the namespace (and region) it is about."""
        head: dict[str, Any] = {"namespace": self.name}
        if self.region is not None:
            head["region"] = self.region
        return {**head, **body}

    def __str__(self) -> str:
        return self.name if self.region is None else f"{self.name}, region {self.region}"


def _queue(deps: ApiDeps, params: Params, region: str | None) -> _Queue:
    """The DLQ of the route's namespace, or of its region ``region`` (the ``region`` query
    parameter).

    Raises:
        BadRequestError: ``region`` is not a region name (400 naming the field).
        RouteNotFoundError: the namespace replicates nothing, or not to ``region`` (404).
    """
    ns = namespace_for(deps, params)
    if region is None:
        return _Queue(ns.name, ns, None, None)
    if not REGION_NAME.fullmatch(region):  # fullmatch: "a\n" too
        raise BadRequestError("region", f"must be a region name ({REGION_NAME.pattern})")
    try:
        place = region_dlq(ns, region, deps.settings.bootstrap_list)
    except WalError as exc:  # no such region DLQ: nothing is there
        raise RouteNotFoundError(str(exc)) from exc
    return _Queue(ns.name, place.view, region, place.servers)


async def list_dlq(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """Open DLQ entries of a namespace (or of one of its region DLQs: ``region``), oldest
    first, a page at a time (filters, ``limit`` and the ``after`` cursor as query parameters;
    ``next`` resumes the listing)."""
    query = dict(request.query)
    queue = _queue(deps, params, query.pop("region", None))
    limit_raw = query.pop("limit", "100")
    if not (limit_raw.isascii() and limit_raw.isdigit()) or not 1 <= int(limit_raw) <= 10_000:
        raise BadRequestError("limit", "must be an integer in 1..10000")
    after_raw = query.pop("after", None)
    after = DlqCursor.parse(after_raw) if after_raw else None
    selection = parse_selection(query, deps.clock.now_ms())
    page = await _dlq(deps).page(
        queue.ns.topics.dlq, selection, limit=int(limit_raw), after=after, servers=queue.servers
    )
    listed = {
        "open": page.open,
        "matching": page.matching,
        "entries": [_entry_for(request, queue.name, entry_json(e)) for e in page.entries],
        "next": str(page.next) if page.next is not None else None,
    }
    return json_response(queue.named(listed))


def _entry_for(request: web.BaseRequest, namespace: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A DLQ entry as the request's token may see it (reasons: namespace admins only; in the
    record's attempt history too; its target's secrets: nobody)."""
    principal = request.get(PRINCIPAL)
    entry["reason"] = visible_reason(entry["error_class"], entry["reason"], principal, namespace)
    record = entry.get("record")
    if record is not None:
        record["target"] = redact_target(record["target"])
        for attempt in record["history"]:
            attempt["message"] = visible_reason(
                attempt["error_class"], attempt["message"], principal, namespace
            )
    return entry


async def show_dlq_entry(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """One open DLQ entry with its record and attempt history (``walstream dlq show``), of the
    namespace's DLQ or of its region DLQ ``region``."""
    queue = _queue(deps, params, request.query.get("region"))
    record_id = params["id"]
    entry = await _dlq(deps).entry(queue.ns.topics.dlq, record_id, servers=queue.servers)
    if entry is None:
        raise RouteNotFoundError(f"no open DLQ entry {record_id} in {queue}")
    shown = _entry_for(request, queue.name, entry_json(entry, with_record=True))
    if queue.region is not None:
        shown["region"] = queue.region
    return web.Response(body=entry_bytes(shown), content_type="application/json")


async def _selection_body(request: web.BaseRequest, deps: ApiDeps) -> dict[str, Any]:
    raw = await read_body(request, deps.settings.body_read_timeout_s)
    body = decode_json(raw) if raw else {}
    if not isinstance(body, dict):
        raise BadRequestError("body", "must be a JSON object")
    return body


async def start_redrive(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """Redrive open DLQ entries in the background (202); one at a time per DLQ. The
    namespace's DLQ goes to its log; region ``region``'s DLQ to the region's topic, for its
    writer to apply again (``walstream dlq redrive --region``)."""
    queue = _queue(deps, params, request.query.get("region"))
    body = await _selection_body(request, deps)
    rate = body.pop("rate", None)
    if rate is not None and (
        not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0
    ):
        raise BadRequestError("rate", "must be a number of records per second > 0")
    target = body.pop("target", None)
    if target is not None:
        if queue.region is not None:
            raise BadRequestError(
                "target", "does not apply to a region DLQ (the region's writer applies it)"
            )
        target = parse_target(target).wire
        queue.ns.target_policy.check(target, reserved=reserved_for(deps))  # 403 naming the field
    selection = parse_selection(body, deps.clock.now_ms())
    # a claim on the DLQ first (409 when another process's redrive holds it), then coordinates
    # only, records a page at a time (walstream.dlq)
    progress = await _dlq(deps).start_redrive(
        queue.ns, selection, rate=rate, target=target, region=queue.region, servers=queue.servers
    )
    return json_response(progress.to_json(), status=202)


async def redrive_status(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """The latest redrive in this process of the namespace's DLQ (or its region DLQ)."""
    queue = _queue(deps, params, request.query.get("region"))
    redrives = _dlq(deps).running_redrives(queue.region, queue.servers)
    progress = redrives.status(queue.name) if redrives is not None else None
    if progress is None:
        raise RouteNotFoundError(f"no redrive of {queue} in this process")
    return json_response(progress.to_json())


async def cancel_redrive(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """Cancel the running redrive of the namespace's DLQ (or its region DLQ); what is
    redriven stays redriven."""
    queue = _queue(deps, params, request.query.get("region"))
    redrives = _dlq(deps).running_redrives(queue.region, queue.servers)
    progress = await redrives.cancel(queue.name) if redrives is not None else None
    if progress is None:
        raise RouteNotFoundError(f"no redrive of {queue} in this process")
    return json_response(progress.to_json())


async def discard_dlq(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """Close the open DLQ entries the body selects without redriving them (``walstream dlq
    discard``): a namespace DLQ entry's key is settled; a region DLQ's entries get no settle
    marker (nothing holds a key behind them)."""
    queue = _queue(deps, params, request.query.get("region"))
    selection = parse_selection(await _selection_body(request, deps), deps.clock.now_ms())
    if selection == Selection():
        raise BadRequestError(
            "body", "select what to discard: ids, since, until or error_class (not every entry)"
        )
    discarded = await _dlq(deps).discard(
        queue.ns, selection, region=queue.region, servers=queue.servers
    )
    return json_response(queue.named({"discarded": discarded}))


def install_dlq_routes(router: Router) -> None:
    """Register the DLQ routes (``install_routes`` calls it where they always were)."""
    router.add("GET", "/v1/namespaces/{namespace}/dlq", list_dlq)
    router.add("GET", "/v1/namespaces/{namespace}/dlq/{id}", show_dlq_entry)
    router.add("POST", "/v1/namespaces/{namespace}/dlq:discard", discard_dlq)
    router.add("POST", "/v1/namespaces/{namespace}/dlq:redrive", start_redrive)
    router.add("GET", "/v1/namespaces/{namespace}/dlq:redrive", redrive_status)
    router.add("DELETE", "/v1/namespaces/{namespace}/dlq:redrive", cancel_redrive)
