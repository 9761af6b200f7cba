"""The DLQ as the operator surfaces see it: ``DlqAccess`` (what the HTTP API's DLQ endpoints
call: paged reads and this process's redrives, a silent broker a 503) and ``entry_json`` (an
entry as the CLI and the API show it)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

from walstream.core.dlq import (
    DlqCursor,
    DlqEntry,
    DlqRef,
    Selection,
    describe_mutation,
    entry_marker,
)
from walstream.core.mutations.wire import decode_op_chunk
from walstream.dlq.closing import discard
from walstream.dlq.kafka_io import unavailable_broker
from walstream.dlq.reading import DEFAULT_PAGE, DlqPage, DlqReader, flatten
from walstream.dlq.redrives import Redrives
from walstream.dlq.redriving import RedriveProgress
from walstream.errors import PoisonRecordError, RedriveConflictError
from walstream.namespaces.config import NamespaceConfig
from walstream.records import decode_envelope

__all__ = ["DlqAccess", "entry_bytes", "entry_json"]


def entry_json(entry: DlqEntry, *, with_record: bool = False) -> dict[str, Any]:
    """An entry as the CLI and the HTTP API show it. A mutation's entry (issue 18) also says
    what it is (``kind``: ``transaction`` with its ``txn_id`` and ``missing`` seqs, or a single
    bad record) and with its record shows its marker or operation (``mutation``), not a log
    record."""
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
    mutation = describe_mutation(entry)
    if mutation is not None:
        body.update(mutation)
        if with_record:
            body.update(_mutation_record(entry))
        return body
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


def _mutation_record(entry: DlqEntry) -> dict[str, Any]:
    """A mutation entry's value as ``entry_json`` shows it: its marker or operation (an
    operation's data left out: ``size`` says how much), else its raw bytes."""
    try:
        if entry.mutation == "op":
            c = decode_op_chunk(entry.value)
            shown: dict[str, Any] = c._asdict()
            del shown["data"]
            return {"record": None, "mutation": shown}
        marker = entry_marker(entry.value)
    except PoisonRecordError as exc:
        raw = (entry.value or b"")[:4096].decode("utf-8", "replace")
        return {"record": None, "raw": raw, "undecodable": exc.reason}
    return {"record": None, "mutation": {"kind": "marker", **marker._asdict()}}


def entry_bytes(shown: dict[str, Any]) -> bytes:
    """``entry_json(entry, with_record=True)`` as JSON bytes, whatever its payload's depth: orjson
    writes 254 levels at most and the payload sits two levels down, so a payload nested deeper
    than 252 levels goes in encoded apart (as a fragment); one too deep for that too (a record
    from before writes were bounded) is left out, said in ``payload_omitted``."""
    try:
        return orjson.dumps(shown)
    except orjson.JSONEncodeError:
        record = shown["record"]
        payload = record["payload"]
        try:
            record["payload"] = orjson.Fragment(orjson.dumps(payload))
        except orjson.JSONEncodeError:
            try:
                text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
            except RecursionError:
                record["payload"] = None
                shown["payload_omitted"] = "nests too deep to show here: walstream dlq show"
            else:
                record["payload"] = orjson.Fragment(text.encode())
        return orjson.dumps(shown)


class DlqAccess:
    """What the API needs for DLQ endpoints: paged reads, one entry, discards, and this
    process's redrives, of a namespace's DLQ or of one of its region DLQs (``region``: the
    namespace's view of walstream.dlq.regions, whose DLQ and log are the region's, on
    ``servers``, the region's cluster), as the CLI does them.

    A region's redrives are kept apart from the namespace's (``redrives_of``): a redrive of the
    namespace's DLQ and one of a region DLQ are two redrives of two queues, each one at a time
    (its claim on its own DLQ topic, across processes: a second one is a 409).

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
        self.request_timeout_s = request_timeout_s
        self.reader = DlqReader(
            servers,
            batch_records=batch_records,
            stall_s=stall_s,
            request_timeout_s=request_timeout_s,
            retry_after_s=retry_after_s,
        )
        self.redrives = Redrives(servers, request_timeout_s=request_timeout_s)
        #: (region, its cluster) -> the redrives of that region's DLQs (by namespace)
        self._region_redrives: dict[tuple[str, str], Redrives] = {}

    def _reader_on(self, servers: str | list[str] | None) -> DlqReader:
        """A reader of a DLQ on ``servers`` (None: this API's cluster), bounded as ours."""
        reader = self.reader
        if servers is None or servers == self.servers:
            return reader
        return DlqReader(
            servers,
            batch_records=reader.batch_records,
            stall_s=reader.stall_s,
            request_timeout_s=reader.request_timeout_s,
            retry_after_s=reader.retry_after_s,
        )

    def redrives_of(self, region: str | None, servers: str | list[str] | None = None) -> Redrives:
        """The redrives of the namespaces' own DLQs (``region`` None), or of their region
        ``region``'s DLQs on ``servers`` (made on first use)."""
        found = self.running_redrives(region, servers)
        if found is None:
            where = servers if servers is not None else self.servers
            found = Redrives(where, request_timeout_s=self.request_timeout_s)
            self._region_redrives[(str(region), _servers_key(where))] = found
        return found

    def running_redrives(
        self, region: str | None, servers: str | list[str] | None = None
    ) -> Redrives | None:
        """``redrives_of``, or None for a region whose DLQs no redrive here has touched."""
        if region is None:
            return self.redrives
        where = servers if servers is not None else self.servers
        return self._region_redrives.get((region, _servers_key(where)))

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
        reader = self._reader_on(servers)
        with unavailable_broker(self.retry_after_s):
            return await reader.page(topic, selection, limit=limit, after=after, keep_values=False)

    async def entry(
        self, topic: str, record_id: str, *, servers: str | list[str] | None = None
    ) -> DlqEntry | None:
        """The open entry ``record_id`` of a DLQ on ``servers``, with its record (None: no such
        open entry); what ``walstream dlq show`` reads.

        Raises:
            BrokerUnavailableError: the broker did not answer.
        """
        reader = self._reader_on(servers)
        with unavailable_broker(self.retry_after_s):
            page = await reader.page(topic, Selection(ids=frozenset({record_id})), limit=1)
        return page.entries[0] if page.entries else None

    async def selected(self, topic: str, selection: Selection) -> list[DlqRef]:
        """Coordinates of the open entries ``selection`` takes, oldest first (no records).

        Raises:
            BrokerUnavailableError: the broker did not answer.
        """
        with unavailable_broker(self.retry_after_s):
            return (await self.reader.index(topic)).select(selection)

    async def discard(
        self,
        ns: NamespaceConfig,
        selection: Selection,
        *,
        region: str | None = None,
        servers: str | list[str] | None = None,
    ) -> int:
        """Close the open entries ``selection`` takes without redriving them, as ``walstream dlq
        discard`` does (walstream.dlq.closing.discard: a namespace DLQ entry's key is settled; a
        region DLQ's, ``ns`` that region's view, gets no settle marker); return how many.

        Raises:
            BrokerUnavailableError: the broker did not answer.
        """
        reader = self._reader_on(servers)
        redrives = self.redrives_of(region, servers)
        with unavailable_broker(self.retry_after_s):
            refs = (await reader.index(ns.topics.dlq)).select(selection)
            if not refs:
                return 0
            producer = await redrives.producer()
            done = 0
            async for page in reader.pages(ns.topics.dlq, refs):
                done += await discard(producer, ns, page, settle=region is None)
            return done

    async def start_redrive(
        self,
        ns: NamespaceConfig,
        selection: Selection,
        *,
        rate: float | None,
        target: Mapping[str, Any] | None,
        region: str | None = None,
        servers: str | list[str] | None = None,
    ) -> RedriveProgress:
        """Claim the DLQ, then redrive what ``selection`` takes in the background: a namespace's
        DLQ to its log, or (``region``; ``ns`` that region's view, its DLQ on ``servers``) a
        region DLQ's operations to the region's topic, for its writer to apply again: the
        CLI's ``dlq redrive --region`` (walstream.dlq.redriving.redrive on the same view).

        Raises:
            RedriveConflictError: a redrive of that DLQ runs here or in another process.
            BrokerUnavailableError: the broker did not answer.
        """
        with unavailable_broker(self.retry_after_s):
            return await self._start_redrive(
                ns, selection, rate=rate, target=target, region=region, servers=servers
            )

    async def _start_redrive(
        self,
        ns: NamespaceConfig,
        selection: Selection,
        *,
        rate: float | None,
        target: Mapping[str, Any] | None,
        region: str | None,
        servers: str | list[str] | None,
    ) -> RedriveProgress:
        redrives = self.redrives_of(region, servers)
        reader = self._reader_on(servers)
        what = ns.name if region is None else f"{ns.name}'s region {region} DLQ"
        try:
            redrives.check_local(ns.name)
        except RedriveConflictError:
            raise RedriveConflictError(f"a redrive of {what} is already running") from None
        claim = await redrives.claim(ns)
        try:
            index = await reader.index(ns.topics.dlq)
            holder = index.claims.holder_before(claim)
            if holder is not None:
                raise RedriveConflictError(
                    f"a redrive of {what} is already running (claim {holder} on its DLQ)"
                )
            refs = index.select(selection)
            entries = flatten(reader.pages(ns.topics.dlq, refs))
            return await redrives.start(
                ns, entries, rate=rate, target=target, total=len(refs), claim=claim, region=region
            )
        except BaseException:
            await redrives.release(ns, claim)
            raise

    async def close(self) -> None:
        await self.redrives.close()
        regions, self._region_redrives = self._region_redrives, {}
        for redrives in regions.values():
            await redrives.close()


def _servers_key(servers: str | list[str]) -> str:
    return servers if isinstance(servers, str) else ",".join(servers)
