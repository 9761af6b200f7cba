"""Multi-partition mutations in tests (issue 18): the table's rows in memory, transactions written
with the core builders through a real producer, and the model of what the database must hold.

* ``MemoryRows`` — a ``Rows`` (``walstream.agents.mutation_rows.TableRows`` in the worker).
* ``MutationWriter`` — writes operations and markers as the API does (``chunks.op_chunks``,
  ``wire.encode_op_chunk``/``encode_marker``, keyed by the txn id) with a plain aiokafka producer
  (acks=all), in any order the test picks.
* ``random_transactions`` / ``model`` — transactions of puts and deletes over a few tables and
  keys, and the rows they leave: each transaction applied in seq order, transactions ordered by
  their versions (the marker's time, then the token), as last-write-wins decides.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer

from walstream.core.mutations import (
    Marker,
    Operation,
    encode_marker,
    encode_op_chunk,
    op_chunks,
    op_token,
)
from walstream.topology import mutation_topics

__all__ = ["MemoryRows", "MutationWriter", "Txn", "model", "random_transactions"]


class MemoryRows(dict[str, bytes]):
    """The mutation table's rows in a dict; ``writes`` counts puts, ``durable`` the acked ones."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, bytes | None, bool]] = []

    async def put(self, key: str, value: bytes | None, *, durable: bool = False) -> None:
        self.writes.append((key, value, durable))
        if value is None:
            self.pop(key, None)
        else:
            self[key] = value

    def items(self) -> Iterator[tuple[str, bytes]]:  # type: ignore[override]
        return iter(list(super().items()))


@dataclass
class Txn:
    """One transaction: its id, operations (seq = index) and marker time."""

    txn_id: str
    operations: list[Operation]
    at_ms: int
    digest: str | None = None


def random_transactions(
    rng: random.Random,
    count: int,
    *,
    tables: Sequence[str],
    keys: int,
    ops: tuple[int, int] = (2, 10),
    now_ms: int,
    prefix: str = "t",
) -> list[Txn]:
    """``count`` transactions of ``ops`` puts and deletes over ``tables`` x ``keys`` keys; marker
    times spread over the last minute (unique, so the model's order is the versions')."""
    times = rng.sample(range(now_ms - 60_000, now_ms), count)
    out = []
    for i in range(count):
        operations = []
        for seq in range(rng.randint(*ops)):
            table, key = rng.choice(tables), f"k{rng.randrange(keys)}"
            if rng.random() < 0.2:
                operations.append(Operation(op="delete", table=table, id=key, value=None))
            else:
                value = orjson.dumps({"txn": i, "seq": seq, "r": rng.random()})
                operations.append(Operation(op="put", table=table, id=key, value=value))
        out.append(Txn(f"{prefix}{i:05d}", operations, times[i]))
    return out


def model(namespace: str, txns: Iterable[Txn]) -> dict[tuple[str, str], bytes | None]:
    """(table, key) -> the value the database holds (None: deleted) after every transaction."""
    versions = []
    for txn in txns:
        for seq, op in enumerate(txn.operations):
            version = (txn.at_ms, op_token(namespace, txn.txn_id, seq))
            versions.append((version, op))
    rows: dict[tuple[str, str], bytes | None] = {}
    for _, op in sorted(versions, key=lambda v: v[0]):
        rows[(op.table, op.id)] = op.value
    return rows


class MutationWriter:
    """Writes a namespace's mutation records with a real producer (``async with``)."""

    def __init__(self, servers: str, namespace: str, *, chunk_bytes: int = 256 * 1024) -> None:
        self.namespace = namespace
        self.topics = mutation_topics(namespace)
        self.chunk_bytes = chunk_bytes
        self.producer = AIOKafkaProducer(
            bootstrap_servers=servers, acks="all", max_request_size=2_000_000, linger_ms=2
        )

    async def __aenter__(self) -> MutationWriter:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    def op_records(self, txn: Txn, seq: int) -> list[bytes]:
        """The values of operation ``seq``'s records, in chunk order."""
        chunks = op_chunks(self.namespace, txn.txn_id, seq, txn.operations[seq], self.chunk_bytes)
        return [encode_op_chunk(c) for c in chunks]

    def marker(
        self, txn: Txn, count: int | None = None, *, wake: int = 0, redrive: int = 0
    ) -> bytes:
        count = len(txn.operations) if count is None else count
        return encode_marker(
            Marker(self.namespace, txn.txn_id, count, txn.at_ms, txn.digest, wake, redrive)
        )

    async def send(self, topic: str, txn_id: str, values: Iterable[bytes]) -> None:
        """Send ``values`` keyed by ``txn_id`` and wait for every ack."""
        futures = [await self.producer.send(topic, v, key=txn_id.encode()) for v in values]
        for future in futures:
            await future

    async def send_many(self, records: Iterable[tuple[str, str, bytes]]) -> None:
        """Send (topic, txn id, value) records in this order, then wait for every ack."""
        futures = [
            await self.producer.send(topic, value, key=txn_id.encode())
            for topic, txn_id, value in records
        ]
        for future in futures:
            await future

    def interleaved(
        self, txns: Sequence[Txn], rng: random.Random, *, markers: bool = True
    ) -> list[tuple[str, str, bytes]]:
        """Every record of ``txns``: operations interleaved across transactions and out of order
        within each (a value's chunks in order), each marker somewhere among them."""
        pending = []
        for txn in txns:
            seqs = list(range(len(txn.operations)))
            rng.shuffle(seqs)
            items = [
                (self.topics.mutations, txn.txn_id, v)
                for s in seqs
                for v in self.op_records(txn, s)
            ]
            if markers:
                items.insert(
                    rng.randrange(len(items) + 1),
                    (self.topics.markers, txn.txn_id, self.marker(txn)),
                )
            pending.append(items)
        out = []
        while pending:
            items = rng.choice(pending)
            out.append(items.pop(0))
            if not items:
                pending.remove(items)
        return out
