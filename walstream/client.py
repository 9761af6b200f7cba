"""WalClient: a small asyncio client for the WriteToLog HTTP API (and multi-partition mutations).

It never raises for a write's outcome: every call returns WriteResult(durable=TRUE|FALSE|UNKNOWN).
A connection that could not be opened is FALSE (nothing was sent); a request that broke or timed
out after it was sent is UNKNOWN (the write may exist).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from walstream.core.exact import unkept_in_value
from walstream.core.validate import MAX_PAYLOAD_DEPTH

__all__ = ["WalClient", "WriteResult", "mutation_operation", "write_request"]

#: Bodies over this are sent from a buffer rather than as one bytes object (aiohttp's threshold).
_STREAMED_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteResult:
    """The answer to one write."""

    durable: str
    message: str
    id: str | None = None
    status: int | None = None
    field: str | None = None

    @property
    def ok(self) -> bool:
        return self.durable == "TRUE"


def _result(obj: dict[str, Any], status: int) -> WriteResult:
    return WriteResult(
        durable=str(obj.get("durable", "UNKNOWN")),
        message=str(obj.get("message", "")),
        id=obj.get("id"),
        status=status,
        field=obj.get("field"),
    )


def _unsendable(record: dict[str, Any]) -> WriteResult | None:
    """A write the log would not keep as given, answered without sending it (as the API
    would answer it: FALSE naming ``payload``): an integer beyond 64 bits, which the encoder
    refuses, or NaN or infinity, which it would write as null (walstream.core.exact)."""
    if record.get("payload_encoding", "json") != "json":
        return None
    number = unkept_in_value(record.get("payload"))
    if number is None:
        return None
    return WriteResult(
        durable="FALSE",
        message=f"payload: holds {number.text}, {number.reason}: not sent; send such a number "
        "as a string, or the payload with payload_encoding=base64",
        field="payload",
    )


def _encoded(record: dict[str, Any]) -> bytes | WriteResult:
    """A record's JSON, or the FALSE answer to a record that cannot be sent as it is: one the
    log would not keep (``_unsendable``), or one the encoder cannot write (a string that is
    not valid Unicode, a lone surrogate; nesting past what a log record holds; a value of no
    JSON type), answered without sending it (naming ``payload`` when the payload is why)."""
    refused = _unsendable(record)
    if refused is not None:
        return refused
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError as exc:
        try:  # one level down, as in the log record (the API's rule)
            orjson.dumps([record.get("payload")])
        except orjson.JSONEncodeError:
            field: str | None = "payload"
        else:
            field = None  # another field (a token, a key ...)
        return WriteResult(
            durable="FALSE",
            message=f"{field or 'body'}: cannot be encoded as JSON ({exc}): not sent; a payload "
            f"nests at most {MAX_PAYLOAD_DEPTH} levels and its strings are valid Unicode",
            field=field,
        )


def write_request(
    payload: Any,
    *,
    payload_encoding: str | None = None,
    delay_ms: int | None = None,
    deliver_at: int | None = None,
    jitter_ms: int | None = None,
    original_write_time: int | None = None,
    target: dict[str, Any] | None = None,
    idempotency_token: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """A WriteToLog request body (leaving out what is not given)."""
    body: dict[str, Any] = {"payload": payload}
    lifecycle = {
        name: value
        for name, value in (
            ("delay_ms", delay_ms),
            ("deliver_at", deliver_at),
            ("jitter_ms", jitter_ms),
            ("original_write_time", original_write_time),
        )
        if value is not None
    }
    optional = {
        "payload_encoding": payload_encoding,
        "lifecycle": lifecycle or None,
        "target": target,
        "idempotency_token": idempotency_token,
        "key": key,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def mutation_operation(
    op: str,
    table: str,
    id: str,
    value: Any = None,
    *,
    original_write_time: int | None = None,
) -> dict[str, Any]:
    """One operation of a mutation (issue 18): ``put`` (``value``: any JSON value, or bytes,
    sent as base64) or ``delete`` of row ``id`` in kv table ``table``."""
    body: dict[str, Any] = {"op": op, "table": table, "id": id}
    if op == "put":
        if isinstance(value, bytes | bytearray | memoryview):
            body["value"] = base64.b64encode(bytes(value)).decode("ascii")
            body["value_encoding"] = "base64"
        else:
            body["value"] = value
    if original_write_time is not None:
        body["original_write_time"] = original_write_time
    return body


class WalClient:
    """``async with WalClient("http://127.0.0.1:8080", token=...) as wal: await wal.write(...)``.

    ``token`` is the bearer token the API checks (the CLI passes WALSTREAM_TOKEN); a missing
    or refused token answers durable=FALSE with status 401 or 403.
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"content-type": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:  # never the token
        return f"WalClient({self.base_url!r})"

    async def __aenter__(self) -> WalClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, data: bytes) -> tuple[int, Any]:
        if self._session is None:
            raise RuntimeError("use 'async with WalClient(...)'")
        # a large body (a whole transaction) is streamed from a buffer: aiohttp writes raw bytes
        # over 1 MiB in one call (and warns that it may hold the event loop)
        body: bytes | io.BytesIO = io.BytesIO(data) if len(data) > _STREAMED_BYTES else data
        async with self._session.post(
            self.base_url + path,
            data=body,
            headers=self._headers,
        ) as response:
            return response.status, orjson.loads(await response.read())

    async def write(self, namespace: str, payload: Any, **options: Any) -> WriteResult:
        """WriteToLog one record; see :func:`write_request` for the options."""
        data = _encoded(write_request(payload, **options))
        if isinstance(data, WriteResult):
            return data
        try:
            status, obj = await self._post(f"/v1/namespaces/{namespace}/log", data)
        except aiohttp.ClientConnectorError as exc:
            return WriteResult(durable="FALSE", message=f"not sent: {exc}")
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            return WriteResult(durable="UNKNOWN", message=f"no clear answer: {exc!r}")
        return _result(obj, status)

    async def write_batch(self, namespace: str, records: list[dict[str, Any]]) -> list[WriteResult]:
        """WriteToLog many records (bodies from :func:`write_request`); a result per record.

        A record the log would not keep as given, or that cannot be encoded, is answered FALSE
        without being sent; the others are sent. Each record is encoded on its own, so one may
        nest as deep as in a single write (the API takes that in a batch)."""
        encoded = [_encoded(record) for record in records]
        parts = [e for e in encoded if isinstance(e, bytes)]
        if len(parts) < len(encoded):
            sent = iter(await self._send_batch(namespace, parts) if parts else [])
            return [e if isinstance(e, WriteResult) else next(sent) for e in encoded]
        return await self._send_batch(namespace, parts)

    async def _send_batch(self, namespace: str, records: list[bytes]) -> list[WriteResult]:
        try:
            status, obj = await self._post(
                f"/v1/namespaces/{namespace}/log:batch",
                b'{"records":[' + b",".join(records) + b"]}",
            )
        except aiohttp.ClientConnectorError as exc:
            return [WriteResult(durable="FALSE", message=f"not sent: {exc}")] * len(records)
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            return [WriteResult(durable="UNKNOWN", message=f"no clear answer: {exc!r}")] * len(
                records
            )
        if status != 200 or "results" not in obj:
            return [_result(obj, status)] * len(records)
        return [_result(item, int(item.get("status", status))) for item in obj["results"]]

    async def _write(self, path: str, body: Any) -> WriteResult:
        """POST a write whose answer is durable TRUE/FALSE/UNKNOWN; never raises for it."""
        try:
            data = orjson.dumps(body)
        except orjson.JSONEncodeError as exc:
            return WriteResult(durable="FALSE", message=f"body: cannot be encoded as JSON ({exc})")
        try:
            status, obj = await self._post(path, data)
        except aiohttp.ClientConnectorError as exc:
            return WriteResult(durable="FALSE", message=f"not sent: {exc}")
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            return WriteResult(durable="UNKNOWN", message=f"no clear answer: {exc!r}")
        return _result(obj, status)

    async def mutate(
        self,
        namespace: str,
        txn_id: str,
        seq: int,
        op: str,
        table: str,
        id: str,
        value: Any = None,
        *,
        original_write_time: int | None = None,
    ) -> WriteResult:
        """Write operation ``seq`` (0-based) of transaction ``txn_id`` (see
        :func:`mutation_operation`); the transaction commits once its marker (:meth:`complete`)
        and all its operations are on the log."""
        body = mutation_operation(op, table, id, value, original_write_time=original_write_time)
        return await self._write(f"/v1/namespaces/{namespace}/mutations/{txn_id}/{seq}", body)

    async def complete(self, namespace: str, txn_id: str, count: int) -> WriteResult:
        """Write the completion marker of ``txn_id``: it holds ``count`` operations."""
        path = f"/v1/namespaces/{namespace}/mutations/{txn_id}:complete"
        return await self._write(path, {"count": count})

    async def mutate_items(
        self, namespace: str, txn_id: str, operations: list[dict[str, Any]]
    ) -> WriteResult:
        """Write a whole MutateItems (operations from :func:`mutation_operation`; operation i
        is seq i), its marker included. Sending it again is idempotent."""
        body = {"txn_id": txn_id, "operations": operations}
        return await self._write(f"/v1/namespaces/{namespace}/mutations", body)

    async def mutation_status(self, namespace: str, txn_id: str) -> tuple[int, dict[str, Any]]:
        """The transaction's state, as a worker reports it: (status, body); 200 with
        ``status`` open, committing, committed or dead_lettered, 404 unknown."""
        return await self._admin("GET", f"/v1/namespaces/{namespace}/mutations/{txn_id}", None)

    async def _admin(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if self._session is None:
            raise RuntimeError("use 'async with WalClient(...)'")
        data = orjson.dumps(body) if body is not None else None
        async with self._session.request(
            method, self.base_url + path, data=data, headers=self._headers
        ) as response:
            return response.status, orjson.loads(await response.read())

    async def replay(
        self,
        namespace: str,
        from_: int | str,
        to: int | str,
        *,
        skip_ids: list[str] | None = None,
        resume_from: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Start a replay of [from_, to) (a namespace-admin or admin token): (status, body),
        202 with the replay's progress; raises aiohttp/OSError errors as they come."""
        body: dict[str, Any] = {"from": from_, "to": to}
        if skip_ids:
            body["skip_ids"] = skip_ids
        if resume_from is not None:
            body["resume_from"] = resume_from
        return await self._admin("POST", f"/v1/namespaces/{namespace}/replay", body)

    async def replay_status(self, namespace: str) -> tuple[int, dict[str, Any]]:
        """The namespace's latest replay in the API process: (status, progress)."""
        return await self._admin("GET", f"/v1/namespaces/{namespace}/replay", None)

    async def cancel_replay(self, namespace: str) -> tuple[int, dict[str, Any]]:
        """Cancel the namespace's running replay: (status, progress)."""
        return await self._admin("DELETE", f"/v1/namespaces/{namespace}/replay", None)
