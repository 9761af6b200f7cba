"""What the API asks a worker's web server (WALSTREAM_WORKER_URL): a transaction's status.

Only workers hold the mutation table (issue 18), so ``GET .../mutations/{txn_id}`` is answered
by asking the worker page ``/walstream/mutations/{namespace}/{txn_id}``, which the worker owning
the transaction's partition answers (another one forwards it there). A worker that cannot be
reached, or answers anything but 200 or 404, is a 503 naming the worker's address (with the
worker's Retry-After while a rebalance leaves nobody holding the transaction's rows).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from walstream.errors import OverloadedError, RouteNotFoundError, ServiceUnavailableError

__all__ = ["WorkerPages"]

logger = logging.getLogger(__name__)


class WorkerPages:
    """An HTTP client of the workers' pages at ``base_url`` (one session, opened on first use).

    ``close()`` ends it; a closed client opens a new session if used again.
    """

    def __init__(self, base_url: str, *, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def mutation_status(self, namespace: str, txn_id: str) -> dict[str, Any]:
        """The worker's report of transaction ``txn_id`` of ``namespace``
        (walstream.core.mutations.status).

        Raises:
            RouteNotFoundError: the worker knows no such transaction (404).
            ServiceUnavailableError: no worker answered, or not with a report (503).
        """
        url = f"{self.base_url}/walstream/mutations/{quote(namespace)}/{quote(txn_id)}"
        try:
            async with self._client().get(url) as response:
                status, raw = response.status, await response.read()
                retry_after = response.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            logger.info("worker %s did not answer a status request: %r", self.base_url, exc)
            raise ServiceUnavailableError(
                f"no worker answered at {self.base_url} (WALSTREAM_WORKER_URL): {exc!r}"
            ) from None
        body = _json(raw)
        said = body.get("error") if isinstance(body, dict) else None
        detail = f" ({said})" if isinstance(said, str) and said else ""
        if status == 404:
            raise RouteNotFoundError(
                f"unknown transaction {txn_id!r} of namespace {namespace!r}{detail}"
            )
        if status == 503 and retry_after is not None and retry_after.isdigit():
            # a rebalance or a recovery: nobody holds the transaction's rows for a moment
            raise OverloadedError(
                float(retry_after), f"the worker at {self.base_url} cannot answer now{detail}"
            )
        if status != 200 or not isinstance(body, dict):
            raise ServiceUnavailableError(
                f"the worker at {self.base_url} answered {status} to a status request{detail}"
            )
        return body


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
