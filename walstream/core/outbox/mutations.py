"""The outbox's mutation records (issue 18): an operation's chunks on its namespace's
``wal.<ns>.mutations`` topic and a completion marker on ``wal.<ns>.markers``, each keyed by its
txn id's UTF-8 bytes, so Kafka's default partitioner puts a transaction's records on one
partition number of both topics (they have the same partition count), whoever sends them.
"""

from __future__ import annotations

from collections.abc import Iterable

from walstream.core.mutations.wire import Marker, OpChunk, encode_marker, encode_op_chunk
from walstream.core.outbox.records import Outgoing
from walstream.topology import mutation_topics

__all__ = ["mutation_marker", "mutation_ops"]


def mutation_ops(chunks: Iterable[OpChunk]) -> list[Outgoing]:
    """The records of operations' chunks (``core.mutations.chunks.op_chunks`` /
    ``items_records``), in their order, each on its namespace's mutations topic."""
    return [
        Outgoing(mutation_topics(c.namespace).mutations, c.txn_id.encode(), encode_op_chunk(c))
        for c in chunks
    ]


def mutation_marker(marker: Marker) -> Outgoing:
    """The record of a client's completion marker, on its namespace's markers topic."""
    return Outgoing(
        mutation_topics(marker.namespace).markers, marker.txn_id.encode(), encode_marker(marker)
    )
