"""The ``mutations`` table's rows as the mutation agents use them (issue 18), and the index of
open transactions the gauges read.

``TableRows`` reads and writes the Faust table's store directly and writes its changelog straight
to the producer (as the ``ordering`` and ``attempts`` tables do, walstream.agents.tables): same
records, on the current event's partition, so call it from a handler bound to its event
(``walstream.worker.bind_event``). Keys are ``core.mutations.keys`` strings, stored as their
UTF-8 bytes; values are bytes. A write is on the producer's accumulator when ``put`` returns
(Faust flushes it before it commits the source offset); ``durable`` waits for the broker's ack.

``TxnRows``: a transaction's state, tombstone and chunk rows over ``Rows``; a commit's leftover
(a state beside its tombstone: a worker killed between the two) is deleted when read.

``OpenIndex``: the open transactions' first-record times by namespace, kept as states are
written and deleted, rebuilt from the table after its recovery: the gauges never scan the table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol

import faust.streams

from walstream.agents.tables import send_unacked
from walstream.core.mutations import (
    Tombstone,
    TxnState,
    chunk_keys,
    decode_state,
    decode_tombstone,
    encode_state,
    leftover,
    state_key,
    tombstone_key,
)
from walstream.core.placement import key_partition
from walstream.errors import PoisonRecordError

__all__ = ["OpenIndex", "Rows", "TableRows", "TxnRows", "row_txn"]

logger = logging.getLogger(__name__)


def row_txn(key: str) -> tuple[str, str]:
    """The (namespace, txn id) a row belongs to (``core.mutations.keys``: ``<kind>:<namespace>:
    <txn id>[:...]``; neither holds a ``:``)."""
    parts = key.split(":", 3)
    if len(parts) < 3:
        raise ValueError(f"not a mutation row key: {key!r}")
    return parts[1], parts[2]


class Rows(Protocol):
    """A table of raw rows (``TableRows``; ``walstream.testing.MemoryRows``)."""

    def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes | None, *, durable: bool = False) -> None:
        """Write ``value`` at ``key`` (None: delete it)."""

    def items(self) -> Iterator[tuple[str, bytes]]: ...


class TableRows:
    """``Rows`` over a Faust table of bytes keys and values (see the module docstring)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str) -> bytes | None:
        value: bytes | None = self.table.data.get(key.encode())
        return value

    def get_anywhere(self, key: str) -> bytes | None:
        """``get`` outside any event: a RocksDB store then looks in every partition it holds
        (for the status page, answered outside a record's handler)."""
        token = faust.streams._current_event.set(None)
        try:
            return self.get(key)
        finally:
            faust.streams._current_event.reset(token)

    async def put(self, key: str, value: bytes | None, *, durable: bool = False) -> None:
        """Write the store, then the changelog. A changelog write that fails (raises) leaves
        the store as it was: the record handled again writes it again (its decisions read the
        store, which then says no more than the changelog may)."""
        raw = key.encode()
        data = self.table.data
        before = data.get(raw)
        if value is None:
            if before is None:
                return
            del data[raw]
        else:
            data[raw] = value
        try:
            sent = await send_unacked(self.table, raw, value, self._partition(raw, key))
            if durable:
                await sent
        except Exception:
            if before is None:
                data.pop(raw, None)
            else:
                data[raw] = before
            raise

    def _partition(self, raw: bytes, key: str) -> int:
        """The changelog partition of a row: the current event's; outside any event (a purge of
        a namespace that left, ``MutationUpkeep.purge_gone``), the row's transaction's own (its
        txn id's key partition: where its records are read, ``MutationStage._placed``)."""
        try:
            partition: int = self.table.partition_for_key(raw)
        except TypeError:  # Faust: "Cannot modify table key from outside of stream iteration"
            return key_partition(row_txn(key)[1].encode(), self.table.partitions)
        return partition

    def items(self) -> Iterator[tuple[str, bytes]]:
        for key, value in list(self.table.data.items()):
            yield (key.decode() if isinstance(key, bytes) else str(key)), value


class OpenIndex:
    """(namespace, txn id) -> when the transaction opened, for the open (not dead-lettered)
    transactions this worker holds."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def note(self, namespace: str, txn_id: str, state: TxnState | None) -> None:
        """The transaction's state was written (None: deleted)."""
        if state is None or state.dead is not None:
            self._open.pop((namespace, txn_id), None)
        else:
            self._open[(namespace, txn_id)] = state.opened_at_ms

    def rebuild(self, states: Iterator[TxnState]) -> None:
        self._open = {}
        for state in states:
            self.note(state.namespace, state.txn_id, state)

    def stats(self) -> dict[str, tuple[int, int]]:
        """namespace -> (open transactions, the oldest one's opening time)."""
        out: dict[str, tuple[int, int]] = {}
        for (namespace, _), opened in self._open.items():
            count, oldest = out.get(namespace, (0, opened))
            out[namespace] = (count + 1, min(oldest, opened))
        return out


class TxnRows:
    """A transaction's rows as the agents read and write them: its state (indexed in
    ``open``), its tombstone, its chunk rows."""

    def __init__(self, rows: Rows, open_index: OpenIndex) -> None:
        self.rows = rows
        self.open = open_index

    def state(self, namespace: str, txn_id: str) -> TxnState | None:
        """The transaction's state (None: none)."""
        raw = self.rows.get(state_key(namespace, txn_id))
        return None if raw is None else decode_state(raw)

    def tombstone(self, namespace: str, txn_id: str) -> Tombstone | None:
        """The transaction's tombstone (None: not committed within the window)."""
        raw = self.rows.get(tombstone_key(namespace, txn_id))
        return None if raw is None else decode_tombstone(raw)

    async def rows_of(
        self, namespace: str, txn_id: str
    ) -> tuple[TxnState | None, Tombstone | None]:
        """The transaction's state and tombstone; a commit's leftover state deleted first."""
        state, tomb = self.state(namespace, txn_id), self.tombstone(namespace, txn_id)
        if state is not None and leftover(state, tomb):
            logger.info("mutation %s/%s: clearing a commit's leftover rows", namespace, txn_id)
            await self.clear(state)
            state = None
        return state, tomb

    async def clear(self, state: TxnState, *, durable: bool = False) -> None:
        """Delete a transaction's chunk rows, then its state."""
        for row in chunk_keys(state):
            await self.rows.put(row, None)
        await self.rows.put(state_key(state.namespace, state.txn_id), None, durable=durable)
        self.open.note(state.namespace, state.txn_id, None)

    async def purge(self, namespace: str, txn_id: str) -> None:
        """Delete every row of a transaction of a namespace that takes no mutations any more
        (deleted, or its block removed)."""
        try:
            state = self.state(namespace, txn_id)
        except PoisonRecordError:
            state = None
        if state is not None:
            await self.clear(state)
        await self.rows.put(state_key(namespace, txn_id), None)
        await self.rows.put(tombstone_key(namespace, txn_id), None)
        logger.info("mutation %s/%s: rows dropped (the namespace takes none)", namespace, txn_id)

    async def put_state(self, state: TxnState, *, durable: bool = False) -> None:
        """Write the transaction's state (and index it)."""
        key = state_key(state.namespace, state.txn_id)
        await self.rows.put(key, encode_state(state), durable=durable)
        self.open.note(state.namespace, state.txn_id, state)
