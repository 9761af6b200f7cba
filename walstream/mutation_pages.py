"""The worker's page of a multi-partition mutation's status (issue 18):
``GET /walstream/mutations/{namespace}/{txn_id}``, which the API's ``GET
/v1/namespaces/{ns}/mutations/{txn_id}`` asks (WALSTREAM_WORKER_URL).

A transaction's table rows sit on one partition of the ``mutations`` table's changelog: the
partition the API's producer put its records on (the default partitioner over its txn id), which
the worker handling them writes its rows to. The worker holding that partition answers from its
rows; any other worker forwards the question to it (once: a forwarded question is answered or
refused, never forwarded again), by the assignor's map of which worker holds which changelog
partition, each worker named by its canonical URL (its web host and port). The decisions are
``walstream.core.placement``'s; Faust's own router hashes the table's key, not the txn id.

Answers: 200 with ``core.mutations.status.txn_status``; 404 ``{"error": "unknown transaction
..."}``; 400 a malformed namespace or txn id; 503 with Retry-After while a rebalance or a
recovery leaves nobody to answer, or the owner does not answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import faust
from faust.types import TP

from walstream.core.mutations.wire import TXN_ID
from walstream.core.placement import Answer, Forward, key_partition, owner_of, route
from walstream.core.targets import NAMESPACE_NAME
from walstream.errors import WalError

__all__ = ["FORWARDED_HEADER", "MUTATION_PAGE", "StatusOf", "install_mutation_page"]

logger = logging.getLogger(__name__)

MUTATION_PAGE = "/walstream/mutations/{namespace}/{txn_id}"
#: Set on a question one worker forwards to another (it is not forwarded again).
FORWARDED_HEADER = "X-Walstream-Forwarded"
#: How long a forwarded question may take (the owner reads two rows).
FORWARD_TIMEOUT_S = 10.0
#: What a 503 tells the caller to wait (a rebalance takes a few seconds).
RETRY_AFTER_S = 1

#: A transaction's status from this worker's rows (None: no such transaction here).
StatusOf = Callable[[str, str], "dict[str, Any] | None"]


def install_mutation_page(app: faust.App, table: Any, status: StatusOf, partitions: int) -> None:
    """Add the status page to ``app``, answering from ``status`` (the mutation stage's, reading
    ``table``'s rows) when this worker holds the transaction's changelog partition.

    ``partitions``: the table's partition count (= its namespaces' mutation topics').
    """
    changelog = table.changelog_topic.get_topic_name()

    def unavailable(web: Any, reason: str) -> Any:
        return web.json({"error": reason}, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.page(MUTATION_PAGE)
    async def mutation_status(web: Any, request: Any, namespace: str, txn_id: str) -> Any:
        if not NAMESPACE_NAME.fullmatch(namespace) or not TXN_ID.fullmatch(txn_id):
            return web.json({"error": "malformed namespace or txn id"}, status=400)
        partition = key_partition(txn_id.encode(), partitions)
        assignor: Any = app.assignor
        tables: Any = app.tables  # faust's TableManager; its type omits ``recovery``
        decision = route(
            partition=partition,
            held_here=assignor.is_active(TP(changelog, partition)),
            ready=(
                tables.recovery.completed.is_set() and not app.rebalancing and not app.in_recovery
            ),
            owner=owner_of(assignor.tables_metadata(), changelog, partition),
            own_url=str(app.conf.canonical_url),
            forwarded=request.headers.get(FORWARDED_HEADER) is not None,
        )
        if isinstance(decision, Forward):
            return await _forward(app, web, request, decision.url)
        if not isinstance(decision, Answer):
            return unavailable(web, decision.reason)
        try:
            body = status(namespace, txn_id)
        except WalError as exc:  # an unreadable row: said, never a stack trace
            logger.error("mutation %s/%s: unreadable status: %s", namespace, txn_id, exc)
            return web.json({"error": f"unreadable transaction state: {exc}"}, status=500)
        if body is None:
            return web.json(
                {"error": f"unknown transaction {txn_id} in namespace {namespace}"}, status=404
            )
        return web.json(body)


async def _forward(app: faust.App, web: Any, request: Any, owner: str) -> Any:
    """Ask the worker at ``owner`` the same question; its answer as it gave it."""
    url = owner.rstrip("/") + request.rel_url.raw_path
    session: Any = app.http_client  # an aiohttp ClientSession, closed with the app
    try:
        async with session.get(
            url,
            headers={FORWARDED_HEADER: "1"},
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
        ) as answer:
            body = await answer.read()
            status = answer.status
            retry = answer.headers.get("Retry-After", str(RETRY_AFTER_S))
            headers = {"Retry-After": retry} if status == 503 else None
    except (aiohttp.ClientError, TimeoutError) as exc:
        return web.json(
            {"error": f"the worker holding the transaction ({owner}) did not answer: {exc!r}"},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return web.bytes(body, status=status, content_type="application/json", headers=headers)
