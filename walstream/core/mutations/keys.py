"""The mutation table's keys: a transaction's state, its chunks' bytes, its tombstone.

Every row of a transaction is written while its agent handles a record keyed by its txn id, so
Faust writes all of them to that record's partition of the changelog: the rows of one
transaction live on one partition, owned by the worker that owns the transaction's topics'
partition. The namespace is part of each key (one table serves every namespace); neither a
namespace nor a txn id holds a ``:``, so keys never collide.
"""

from __future__ import annotations

from collections.abc import Iterator

from walstream.core.mutations.state import TxnState

__all__ = ["chunk_key", "chunk_keys", "state_key", "tombstone_key"]


def state_key(namespace: str, txn_id: str) -> str:
    """The row of a transaction's ``TxnState``."""
    return f"s:{namespace}:{txn_id}"


def tombstone_key(namespace: str, txn_id: str) -> str:
    """The row of a committed transaction's ``Tombstone``."""
    return f"t:{namespace}:{txn_id}"


def chunk_key(namespace: str, txn_id: str, seq: int, chunk: int) -> str:
    """The row holding chunk ``chunk`` of operation ``seq`` (its encoded ``OpChunk``)."""
    return f"c:{namespace}:{txn_id}:{seq}:{chunk}"


def chunk_keys(state: TxnState) -> Iterator[str]:
    """The chunk rows a state has stored (to delete them once it is committed)."""
    for seq, slot in sorted(state.slots.items()):
        for chunk in range(slot.chunks):
            if slot.got >> chunk & 1:
                yield chunk_key(state.namespace, state.txn_id, seq, chunk)
