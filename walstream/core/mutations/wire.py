"""Mutation records on the log: one operation's chunk, and the markers that drive its commit.

The API writes them, the mutation agents read them back, and a log topic is writable by anyone
with produce rights: ``decode_op_chunk`` and ``decode_marker`` re-check every field the API
checked (PoisonRecordError with a reason, routed to the DLQ), so a record that did not come from
the API can neither name a table the kv target would not quote nor break the state's bounds.

Values are JSON objects with ``"v": 1`` and a ``kind``; bytes are base64 text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson

from walstream.core.target_policy import IDENTIFIER
from walstream.core.targets import KV_KEY_MAX_CHARS as KEY_MAX_CHARS
from walstream.core.targets import KV_KEY_PATTERN, NAMESPACE_NAME, kv_key_problem
from walstream.errors import ConfigError, PoisonRecordError

__all__ = [
    "CHUNKS_CAP",
    "CHUNK_BYTES_CAP",
    "DIGEST_CHARS",
    "IDEMPOTENCY_WINDOW_MIN_MS",
    "KEY_MAX_CHARS",
    "KV_KEY_PATTERN",
    "OPERATIONS_CAP",
    "TXN_ID",
    "WIRE_VERSION",
    "Forget",
    "Marker",
    "MutationLimits",
    "OpChunk",
    "OpKind",
    "decode_marker",
    "decode_op_chunk",
    "encode_marker",
    "encode_op_chunk",
    "kv_key_problem",
    "op_digest",
    "value_digest",
]

WIRE_VERSION = 1

#: A transaction id: it is a path segment (``/mutations/{txn_id}/{seq}``, ``{txn_id}:complete``:
#: so no ``/`` and no ``:``), the Kafka key that co-partitions the transaction, part of every
#: table key (``:`` separates their parts) and of each operation's idempotency token (sent as a
#: header: printable ASCII only). 128 characters hold a UUID, a ULID or a client's own prefix
#: plus one, and keep a token under the API's 256 (``walstream.core.mutations.apply``).
TXN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: The most operations a transaction may be configured to hold: the state keeps ~70 encoded
#: bytes per operation and is one changelog record (10,000 x 70 B < the worker's 1 MB producer
#: limit); seqs then fit the 8 digits of a token (``apply.op_token``).
OPERATIONS_CAP = 10_000
#: The largest chunk: base64 makes it 4/3 larger on the log (~700 KB), under the worker's 1 MB
#: producer limit less its allowances (``walstream.core.limits.max_record_bytes``).
CHUNK_BYTES_CAP = 512 * 1024
#: The most chunks of one value: a state keeps a bit per chunk of each operation.
CHUNKS_CAP = 1024
#: A re-sent transaction is recognised for at least this long (DynamoDB's is 10 minutes).
IDEMPOTENCY_WINDOW_MIN_MS = 24 * 3_600_000
#: Hex characters of a digest (blake2b, 128 bits: integrity and identity, not secrecy).
DIGEST_CHARS = 32

OpKind = Literal["put", "delete"]
_HEX = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class MutationLimits:
    """The bounds of one transaction (settings; the defaults beat DynamoDB's 100 actions / 4 MB).

    Raises:
        ConfigError: a bound outside what walstream can hold (named by its setting's key).
    """

    #: Operations per transaction (seq is 0..count-1, count <= this).
    operations_max: int = 1_000
    #: Bytes per transaction: the sum of its operations' weights (``Operation.weight``).
    txn_bytes_max: int = 16 * 1024 * 1024
    #: A value over this is split into chunks of this size, one log record each.
    chunk_bytes: int = 256 * 1024
    #: How long a transaction may wait for its operations, from its first record.
    completion_timeout_ms: int = 600_000
    #: How long a committed transaction's tombstone answers a re-send ("already committed").
    idempotency_window_ms: int = IDEMPOTENCY_WINDOW_MIN_MS

    def __post_init__(self) -> None:
        checks = (
            ("operations_max", self.operations_max, 1, OPERATIONS_CAP),
            ("txn_bytes_max", self.txn_bytes_max, 1, None),
            ("chunk_bytes", self.chunk_bytes, 1, CHUNK_BYTES_CAP),
            ("completion_timeout_ms", self.completion_timeout_ms, 1, None),
            ("idempotency_window_ms", self.idempotency_window_ms, IDEMPOTENCY_WINDOW_MIN_MS, None),
        )
        for key, value, low, high in checks:
            if value < low or (high is not None and value > high):
                bounds = f">= {low}" if high is None else f"in {low}..{high}"
                raise ConfigError(f"mutations.{key}", value, f"must be {bounds}")
        if -(-self.txn_bytes_max // self.chunk_bytes) > CHUNKS_CAP:
            raise ConfigError(
                "mutations.chunk_bytes",
                self.chunk_bytes,
                f"splits txn_bytes_max into more than {CHUNKS_CAP} chunks",
            )


def value_digest(value: bytes) -> str:
    """The digest of a value (or of anything a digest is asked for): 32 hex characters."""
    return hashlib.blake2b(value, digest_size=16).hexdigest()


class OpChunk(NamedTuple):
    """One log record of an operation: its identity, and chunk ``chunk`` of ``chunks`` of its
    value (a delete, or a value up to the chunk size: one chunk)."""

    namespace: str
    txn_id: str
    seq: int
    op: OpKind
    table: str
    id: str
    #: The client's original write time (None: the transaction's, see ``apply.op_version``).
    original_write_time_ms: int | None
    #: The whole value's bytes and digest (a delete: 0 and the digest of no bytes).
    size: int
    digest: str
    chunks: int
    chunk: int
    data: bytes


def op_digest(c: OpChunk) -> str:
    """The identity of ``c``'s operation: the same for each of its chunks, different for any
    other operation (another table, id, kind, write time or value)."""
    fields = [c.op, c.table, c.id, c.original_write_time_ms, c.size, c.digest, c.chunks]
    return value_digest(orjson.dumps(fields))


class Marker(NamedTuple):
    """A completion marker: the transaction holds ``op_count`` operations (seqs 0..count-1; 0 on a
    deadline wake sent before any marker came, or on the redrive of a transaction dead-lettered
    before its marker came: the count is not known yet; a client's marker counts at least one).

    ``wake`` 0 is a client's marker; a marker the commit agent re-queued carries the wake id the
    state names (``TxnState.wake``), so a superseded one is recognised. ``digest``: the digest
    of the operation set (``TxnState.set_digest``) when the API knew it (a one-shot MutateItems),
    else None. ``at_ms``: when the API accepted the client's marker (the transaction's write
    time for last-write-wins); ``redrive``: times the marker was redriven from the DLQ.
    """

    namespace: str
    txn_id: str
    op_count: int
    at_ms: int
    digest: str | None = None
    wake: int = 0
    redrive: int = 0


class Forget(NamedTuple):
    """Drop the tombstone of ``txn_id`` committed at ``committed_at_ms``: its idempotency window
    is over (sent through the delay tiers when the transaction commits)."""

    namespace: str
    txn_id: str
    committed_at_ms: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_op_chunk(c: OpChunk) -> bytes:
    """The Kafka value of an operation's chunk (keyed by ``txn_id``)."""
    obj: dict[str, Any] = {
        "v": WIRE_VERSION,
        "kind": "op",
        "ns": c.namespace,
        "txn": c.txn_id,
        "seq": c.seq,
        "op": c.op,
        "table": c.table,
        "id": c.id,
        "size": c.size,
        "digest": c.digest,
        "chunks": c.chunks,
        "chunk": c.chunk,
        "data": _b64(c.data),
    }
    if c.original_write_time_ms is not None:
        obj["owt"] = c.original_write_time_ms
    return orjson.dumps(obj)


def encode_marker(m: Marker | Forget) -> bytes:
    """The Kafka value of a marker or a forget record (keyed by ``txn_id``)."""
    if isinstance(m, Forget):
        obj: dict[str, Any] = {"kind": "forget", "committed_at_ms": m.committed_at_ms}
    else:
        obj = {"kind": "marker", "count": m.op_count, "at_ms": m.at_ms}
        if m.digest is not None:
            obj["digest"] = m.digest
        if m.wake:
            obj["wake"] = m.wake
        if m.redrive:
            obj["redrive"] = m.redrive
    return orjson.dumps({"v": WIRE_VERSION, "ns": m.namespace, "txn": m.txn_id, **obj})


def _int(obj: dict[str, Any], name: str, low: int, high: int | None = None) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise PoisonRecordError(f"mutation record: {name!r} missing or not an integer")
    if value < low or (high is not None and value > high):
        raise PoisonRecordError(f"mutation record: {name!r} = {value} out of range")
    return value


def _str(obj: dict[str, Any], name: str, pattern: re.Pattern[str] | None, max_len: int) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise PoisonRecordError(f"mutation record: {name!r} missing or malformed")
    if pattern is not None and not pattern.fullmatch(value):
        raise PoisonRecordError(f"mutation record: {name!r} missing or malformed")
    return value


def _load(raw: bytes | None, kind: str) -> dict[str, Any]:
    if raw is None:
        raise PoisonRecordError("mutation record: empty value")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoisonRecordError(f"mutation record: undecodable: {exc}") from None
    if not isinstance(obj, dict):
        raise PoisonRecordError("mutation record: not a JSON object")
    if obj.get("v") != WIRE_VERSION:
        raise PoisonRecordError(f"mutation record: unknown wire version {obj.get('v')!r}")
    if kind == "op" and obj.get("kind") != "op":
        raise PoisonRecordError(f"mutation record: kind {obj.get('kind')!r} is not op")
    obj["ns"] = _str(obj, "ns", NAMESPACE_NAME, 63)
    obj["txn"] = _str(obj, "txn", TXN_ID, 128)
    return obj


def decode_op_chunk(raw: bytes | None) -> OpChunk:
    """Decode and re-check an operation's chunk.

    Raises:
        PoisonRecordError: undecodable, another version or kind, or a field out of its bounds
            (txn id, table, id: ``kv_key_problem``, seq, chunk index, sizes, digest, data length).
    """
    obj = _load(raw, "op")
    op = obj.get("op")
    if op not in ("put", "delete"):
        raise PoisonRecordError(f"mutation record: op {op!r} is not put or delete")
    owt = obj.get("owt")
    if owt is not None:
        owt = _int(obj, "owt", 1)
    chunks = _int(obj, "chunks", 1, CHUNKS_CAP)
    chunk = _int(obj, "chunk", 0, chunks - 1)
    size = _int(obj, "size", 0)
    text = obj.get("data")
    if not isinstance(text, str):
        raise PoisonRecordError("mutation record: 'data' missing or not a string")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
        raise PoisonRecordError("mutation record: 'data' is not base64") from None
    if op == "delete" and (size or chunks != 1 or data):
        raise PoisonRecordError("mutation record: a delete carries no value")
    if len(data) > size or len(data) > CHUNK_BYTES_CAP:
        raise PoisonRecordError("mutation record: 'data' is longer than its value or a chunk")
    problem = kv_key_problem(obj.get("id"))
    if problem is not None:
        raise PoisonRecordError(f"mutation record: 'id' {problem}")
    return OpChunk(
        namespace=obj["ns"],
        txn_id=obj["txn"],
        seq=_int(obj, "seq", 0, OPERATIONS_CAP - 1),
        op=op,
        table=_str(obj, "table", IDENTIFIER, 63),
        id=obj["id"],
        original_write_time_ms=owt,
        size=size,
        digest=_str(obj, "digest", _HEX, DIGEST_CHARS),
        chunks=chunks,
        chunk=chunk,
        data=data,
    )


def decode_marker(raw: bytes | None) -> Marker | Forget:
    """Decode and re-check a marker or a forget record.

    Raises:
        PoisonRecordError: undecodable, another version or kind, or a field out of its bounds.
    """
    obj = _load(raw, "marker")
    kind = obj.get("kind")
    if kind == "forget":
        return Forget(obj["ns"], obj["txn"], _int(obj, "committed_at_ms", 1))
    if kind != "marker":
        raise PoisonRecordError(f"mutation record: kind {kind!r} is not marker or forget")
    digest = obj.get("digest")
    if digest is not None:
        digest = _str(obj, "digest", _HEX, DIGEST_CHARS)
    wake = _int(obj, "wake", 1) if "wake" in obj else 0
    redrive = _int(obj, "redrive", 1) if "redrive" in obj else 0
    return Marker(
        namespace=obj["ns"],
        txn_id=obj["txn"],
        # count 0 (not known): a wake, or a redrive of a transaction that never got its marker
        op_count=_int(obj, "count", 0 if wake or redrive else 1, OPERATIONS_CAP),
        at_ms=_int(obj, "at_ms", 1),
        digest=digest,
        wake=wake,
        redrive=redrive,
    )
