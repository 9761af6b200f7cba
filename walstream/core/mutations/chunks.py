"""Large values in chunks: an operation becomes ordered log records, and back, checked.

A value over the chunk size is split into ``ceil(size / chunk_bytes)`` chunks (a delete or a
value up to the chunk size: one), each carrying the operation's identity, the chunk count, the
whole value's size and digest. Reassembly takes the chunks in index order and checks count, size
and digest, so a lost, repeated, reordered or foreign chunk is found, never applied.
"""

from __future__ import annotations

from collections.abc import Sequence

from walstream.core.mutations.request import MutateItems, Operation
from walstream.core.mutations.state import set_digest
from walstream.core.mutations.wire import Marker, OpChunk, op_digest, value_digest
from walstream.errors import PoisonRecordError

__all__ = ["items_records", "op_chunks", "reassemble", "split_value"]


def split_value(value: bytes, chunk_bytes: int) -> list[bytes]:
    """``value`` in chunks of ``chunk_bytes`` (the last one shorter); one empty chunk for b""."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be >= 1")
    return [value[i : i + chunk_bytes] for i in range(0, len(value), chunk_bytes)] or [b""]


def op_chunks(
    namespace: str, txn_id: str, seq: int, operation: Operation, chunk_bytes: int
) -> list[OpChunk]:
    """The log records of ``operation`` (seq ``seq`` of ``txn_id``), in chunk order."""
    value = operation.value if operation.value is not None else b""
    parts = split_value(value, chunk_bytes) if operation.value is not None else [b""]
    digest = value_digest(value)
    return [
        OpChunk(
            namespace=namespace,
            txn_id=txn_id,
            seq=seq,
            op=operation.op,
            table=operation.table,
            id=operation.id,
            original_write_time_ms=operation.original_write_time_ms,
            size=len(value),
            digest=digest,
            chunks=len(parts),
            chunk=i,
            data=part,
        )
        for i, part in enumerate(parts)
    ]


def items_records(
    namespace: str, items: MutateItems, chunk_bytes: int, *, at_ms: int
) -> tuple[list[OpChunk], Marker]:
    """The records of a whole MutateItems: its operations' chunks in seq order, then its
    marker, which names the operation set's digest (a re-send of another set under the same
    txn id is then told apart from a retry)."""
    records: list[OpChunk] = []
    digests: list[str] = []
    for seq, op in enumerate(items.operations):
        chunks = op_chunks(namespace, items.txn_id, seq, op, chunk_bytes)
        records += chunks
        digests.append(op_digest(chunks[0]))
    marker = Marker(
        namespace=namespace,
        txn_id=items.txn_id,
        op_count=len(items.operations),
        at_ms=at_ms,
        digest=set_digest(digests),
    )
    return records, marker


def reassemble(chunks: Sequence[OpChunk]) -> Operation:
    """The operation ``chunks`` hold (all of one operation, in index order), its value checked.

    Raises:
        PoisonRecordError: no chunks, chunks of different operations, a chunk missing, out of
            place or repeated, or a value whose size or digest is not the one announced.
    """
    if not chunks:
        raise PoisonRecordError("reassembly: no chunks")
    first = chunks[0]
    identity = op_digest(first)
    for i, c in enumerate(chunks):
        if c.chunk != i or (c.txn_id, c.seq) != (first.txn_id, first.seq):
            raise PoisonRecordError(f"reassembly: chunk {c.chunk} found at place {i}")
        if op_digest(c) != identity:
            raise PoisonRecordError(f"reassembly: chunk {i} belongs to another operation")
    if len(chunks) != first.chunks:
        raise PoisonRecordError(f"reassembly: {len(chunks)} chunks of {first.chunks}")
    value = b"".join(c.data for c in chunks)
    if len(value) != first.size or value_digest(value) != first.digest:
        raise PoisonRecordError(
            f"reassembly: the value ({len(value)} bytes) is not the one announced "
            f"({first.size} bytes, digest {first.digest})"
        )
    return Operation(
        op=first.op,
        table=first.table,
        id=first.id,
        value=value if first.op == "put" else None,
        original_write_time_ms=first.original_write_time_ms,
    )
