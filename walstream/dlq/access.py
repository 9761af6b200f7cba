"""The DLQ as the operator surfaces see it: ``DlqAccess`` (what the HTTP API's DLQ endpoints
call: paged reads and this process's redrives, a silent broker a 503) and ``entry_json`` (an
entry as the CLI and the API show it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from walstream.core.dlq import DlqCursor, DlqEntry, DlqRef, Selection
from walstream.dlq.kafka_io import unavailable_broker
from walstream.dlq.reading import DEFAULT_PAGE, DlqPage, DlqReader, flatten
from walstream.dlq.redrives import Redrives
from walstream.dlq.redriving import RedriveProgress
from walstream.errors import PoisonRecordError, RedriveConflictError
from walstream.namespaces.config import NamespaceConfig
from walstream.records import decode_envelope

__all__ = ["DlqAccess", "entry_json"]


def entry_json(entry: DlqEntry, *, with_record: bool = False) -> dict[str, Any]:
    """An entry as the CLI and the HTTP API show it."""
    body: dict[str, Any] = {
        "id": entry.id,
        "namespace": entry.namespace,
        "dead_at_ms": entry.dead_at_ms,
        "error_class": entry.error_class,
        "reason": entry.reason,
        "attempts": entry.attempts,
        "source": entry.source,
        "origin": entry.origin,
        "behind": list(entry.behind),
    }
    if with_record:
        try:
            env = decode_envelope(entry.value)
        except PoisonRecordError as exc:
            body["record"] = None
            body["raw"] = (entry.value or b"")[:4096].decode("utf-8", "replace")
            body["undecodable"] = exc.reason
        else:
            body["record"] = {
                "key": env.key,
                "payload": env.payload,
                "payload_encoding": env.payload_encoding,
                "target": dict(env.target),
                "idempotency_token": env.idempotency_token,
                "original_write_time_ms": env.lifecycle.original_write_time_ms,
                "created_at_ms": env.created_at_ms,
                "history": [h._asdict() for h in env.history],
            }
    return body


class DlqAccess:
    """What the API needs for DLQ endpoints: paged reads, and this process's redrives.

    A broker that does not answer is a ``BrokerUnavailableError`` (503, Retry-After:
    ``retry_after_s``), never a wait beyond ``request_timeout_s`` per request to the broker
    (its clients' start and metadata waits included; None: aiokafka's 40 s) or a read that
    gives nothing for ``stall_s``.
    """

    def __init__(
        self,
        servers: str | list[str],
        *,
        batch_records: int = DEFAULT_PAGE,
        request_timeout_s: float | None = None,
        retry_after_s: float = 1.0,
        stall_s: float = 30.0,
    ) -> None:
        self.servers = servers
        self.retry_after_s = retry_after_s
        self.reader = DlqReader(
            servers,
            batch_records=batch_records,
            stall_s=stall_s,
            request_timeout_s=request_timeout_s,
            retry_after_s=retry_after_s,
        )
        self.redrives = Redrives(servers, request_timeout_s=request_timeout_s)

    async def page(
        self,
        topic: str,
        selection: Selection,
        *,
        limit: int,
        after: DlqCursor | None,
        servers: str | list[str] | None = None,
    ) -> DlqPage:
        """A listing page (entries without their records: a listing shows no payloads), of a
        DLQ on ``servers`` (None: this API's cluster; a region DLQ may be on its own).

        Raises:
            BrokerUnavailableError: the broker did not answer.
        """
        reader = self.reader
        if servers is not None and servers != self.servers:
            reader = DlqReader(
                servers,
                batch_records=reader.batch_records,
                stall_s=reader.stall_s,
                request_timeout_s=reader.request_timeout_s,
                retry_after_s=reader.retry_after_s,
            )
        with unavailable_broker(self.retry_after_s):
            return await reader.page(topic, selection, limit=limit, after=after, keep_values=False)

    async def selected(self, topic: str, selection: Selection) -> list[DlqRef]:
        """Coordinates of the open entries ``selection`` takes, oldest first (no records).

        Raises:
            BrokerUnavailableError: the broker did not answer.
        """
        with unavailable_broker(self.retry_after_s):
            return (await self.reader.index(topic)).select(selection)

    async def start_redrive(
        self,
        ns: NamespaceConfig,
        selection: Selection,
        *,
        rate: float | None,
        target: Mapping[str, Any] | None,
    ) -> RedriveProgress:
        """Claim the namespace's DLQ, then redrive what ``selection`` takes in the background.

        Raises:
            RedriveConflictError: a redrive of the namespace runs here or in another process.
            BrokerUnavailableError: the broker did not answer.
        """
        with unavailable_broker(self.retry_after_s):
            return await self._start_redrive(ns, selection, rate=rate, target=target)

    async def _start_redrive(
        self,
        ns: NamespaceConfig,
        selection: Selection,
        *,
        rate: float | None,
        target: Mapping[str, Any] | None,
    ) -> RedriveProgress:
        redrives = self.redrives
        redrives.check_local(ns.name)
        claim = await redrives.claim(ns)
        try:
            index = await self.reader.index(ns.topics.dlq)
            holder = index.claims.holder_before(claim)
            if holder is not None:
                raise RedriveConflictError(
                    f"a redrive of {ns.name} is already running (claim {holder} on its DLQ)"
                )
            refs = index.select(selection)
            entries = flatten(self.reader.pages(ns.topics.dlq, refs))
            return await redrives.start(
                ns, entries, rate=rate, target=target, total=len(refs), claim=claim
            )
        except BaseException:
            await redrives.release(ns, claim)
            raise

    async def close(self) -> None:
        await self.redrives.close()
