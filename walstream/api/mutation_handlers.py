"""Multi-partition mutation handlers (issue 18): parse, check, write the records
walstream.core.mutations builds, and answer durable TRUE / FALSE / UNKNOWN as WriteToLog does.

``POST .../mutations/{txn_id}/{seq}`` writes one operation (its chunks) to ``wal.<ns>.mutations``,
``POST .../mutations/{txn_id}:complete`` the completion marker to ``wal.<ns>.markers``, and
``POST .../mutations`` a whole MutateItems: its operations, then (once all are acked) its
marker. Every record is keyed by the txn id, so the producer's default partitioner puts a
transaction's records on one partition number of both topics. Nothing is written unless the
whole request parses (4xx naming the field, 413 past the limits) and every operation's kv
table is one the namespace's target policy allows (403). ``GET .../mutations/{txn_id}`` asks a
worker (walstream.api.worker_pages).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from walstream.api.auth import PRINCIPAL
from walstream.api.body import BodyLimit, read_body
from walstream.api.deps import ApiDeps
from walstream.api.requests import Params, decode_json, namespace_for, reserved_for, send_records
from walstream.api.responses import json_response
from walstream.api.router import Router
from walstream.core.auth import visible_reason
from walstream.core.mutations.apply import kv_target
from walstream.core.mutations.chunks import items_records, op_chunks
from walstream.core.mutations.request import (
    Operation,
    parse_count,
    parse_mutate_items,
    parse_operation,
    parse_seq,
    parse_txn_id,
)
from walstream.core.mutations.wire import Marker, MutationLimits
from walstream.core.outbox import mutation_marker, mutation_ops
from walstream.core.validate import exact_body
from walstream.errors import (
    MutationsNotEnabledError,
    ServiceUnavailableError,
    TargetNotAllowedError,
)
from walstream.namespaces.config import NamespaceConfig

__all__ = ["install_mutation_routes"]


def _mutations(deps: ApiDeps, params: Params) -> tuple[NamespaceConfig, MutationLimits]:
    """The route's namespace, if it takes mutations, and the bounds of its transactions.

    Raises:
        NamespaceNotFoundError: (404) no such namespace.
        MutationsNotEnabledError: (404) its configuration has no ``mutations`` block.
    """
    ns = namespace_for(deps, params)
    if ns.mutations is None:
        raise MutationsNotEnabledError(ns.name)
    return ns, deps.settings.mutation_limits(ns)


def _check_targets(
    deps: ApiDeps, ns: NamespaceConfig, ops: Iterable[tuple[str, Operation]]
) -> None:
    """Refuse (403, naming ``<prefix>table``) an operation whose kv table the namespace's
    target policy does not allow; ``ops`` are (field prefix, operation)."""
    reserved = reserved_for(deps)
    for prefix, op in ops:
        try:
            ns.target_policy.check(kv_target(op), reserved=reserved)
        except TargetNotAllowedError as exc:
            raise TargetNotAllowedError(f"{prefix}table", exc.reason) from None


async def mutate(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """One operation of a transaction, with its seq (0-based)."""
    ns, limits = _mutations(deps, params)
    txn_id = parse_txn_id(params["txn_id"])
    raw = await read_body(request, deps.settings.body_read_timeout_s)
    op = parse_operation(
        decode_json(raw), limits, now_ms=deps.clock.now_ms(), exact=exact_body(raw)
    )
    del raw  # while the broker acks, hold the encoded records only
    # after the body: a bad body is a 400 whatever the seq (past the limit: 413)
    seq = parse_seq(params["seq"], limits)
    _check_targets(deps, ns, [("", op)])
    await send_records(deps, mutation_ops(op_chunks(ns.name, txn_id, seq, op, limits.chunk_bytes)))
    return json_response({"durable": "TRUE", "message": "written", "txn_id": txn_id, "seq": seq})


async def complete(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """The completion marker: the transaction holds ``count`` operations (seqs 0..count-1)."""
    ns, limits = _mutations(deps, params)
    txn_id = parse_txn_id(params["txn_id"])
    raw = await read_body(request, deps.settings.body_read_timeout_s)
    count = parse_count(decode_json(raw), limits)
    marker = Marker(namespace=ns.name, txn_id=txn_id, op_count=count, at_ms=deps.clock.now_ms())
    await send_records(deps, [mutation_marker(marker)])
    return json_response(
        {"durable": "TRUE", "message": "written", "txn_id": txn_id, "count": count}
    )


async def mutate_items(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """A whole MutateItems: its operations (operation i is seq i), then its marker, written
    only once every operation's records are acked."""
    ns, limits = _mutations(deps, params)
    raw = await read_body(request, deps.settings.body_read_timeout_s)
    now_ms = deps.clock.now_ms()
    items = parse_mutate_items(decode_json(raw), limits, now_ms=now_ms, exact=exact_body(raw))
    del raw
    _check_targets(deps, ns, ((f"operations[{i}].", op) for i, op in enumerate(items.operations)))
    chunks, marker = items_records(ns.name, items, limits.chunk_bytes, at_ms=now_ms)
    records = mutation_ops(chunks)
    del items, chunks
    await send_records(deps, records)
    del records
    await send_records(deps, [mutation_marker(marker)])
    return json_response(
        {
            "durable": "TRUE",
            "message": "written",
            "txn_id": marker.txn_id,
            "count": marker.op_count,
        }
    )


async def mutation_status(request: web.BaseRequest, deps: ApiDeps, params: Params) -> web.Response:
    """What a worker reports of the transaction: open, committing (with its progress),
    committed or dead_lettered (walstream.core.mutations.status)."""
    ns, _ = _mutations(deps, params)
    txn_id = parse_txn_id(params["txn_id"])
    if deps.worker is None:
        raise ServiceUnavailableError("this API process asks no worker (WALSTREAM_WORKER_URL)")
    report = await deps.worker.mutation_status(ns.name, txn_id)
    reason = report.get("reason")
    if isinstance(reason, str):  # an apply failure's may quote the database: admins only
        principal = request.get(PRINCIPAL)
        report["reason"] = visible_reason("mutation_dead_lettered", reason, principal, ns.name)
    return json_response({**report, "namespace": ns.name, "txn_id": txn_id})


def install_mutation_routes(router: Router) -> None:
    """Register the mutation routes (``{txn_id}:complete`` before ``{txn_id}``: the router
    tries patterns of one length in registration order)."""
    base = "/v1/namespaces/{namespace}/mutations"
    router.add("POST", base, mutate_items, body=BodyLimit.MUTATION)
    router.add("POST", base + "/{txn_id}:complete", complete)
    router.add("GET", base + "/{txn_id}", mutation_status)
    router.add("POST", base + "/{txn_id}/{seq}", mutate, body=BodyLimit.MUTATION)
