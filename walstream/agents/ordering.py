"""Per-key ordering in the worker: the ``ordering`` table (head records and parked entries).

The table holds, per blocked (namespace, ordering key), a small **head record** (its head record
id, since when, held or not, and counters ``first``/``next`` over what is parked: JSON, ~150
bytes) under ``<ns>\\0<key>``, and one **entry** per parked record (a reference to where it is
on the log: id, topic, partition, offset) under ``\\1<ns>\\0<key>\\0<seq>``. A park writes its
entry then the head record, a release reads and deletes the first entry: each costs the same
whatever waits behind the key (the state was once one value holding every reference, rewritten
whole on each park: 3.2 GB of changelog for 10k parked, and a crash past ~15.6k). Values in that
old form are still read, and rewritten in the new form the first time a handler touches the key.

The table is co-partitioned with the namespace topics: a key's log, retry and marker records
share a partition number, and every write happens while handling one of them. In the worker the
changelog is written straight to the producer (``walstream.agents.tables.TableChangelog``):
head and entries of a key go to one changelog partition, in write order, so a head record that
survived a crash never counts an entry that did not. A block (a key now waiting on a record in
retry or delay) is acknowledged before the record's copy is sent (``durable=True``).

At most ``max_parked`` records wait behind one key (WALSTREAM_ORDERING_MAX_PARKED_PER_KEY); a
record past it is dead-lettered with error class ``OrderingOverflow``, its reason naming the head
it would wait on, and can be redriven once the key moves (see ``walstream.agents.ordering_gate``).

When a head is settled, the next parked record is handed on by a **release marker** on the
namespace's retry topic (same key, same partition): the retry agent reads the record back from
the log and delivers it. The marker is written (acknowledged) before the table says the next
record heads the key, so a crash never leaves a head that nobody will deliver: either the marker
exists, or the state still names the old head, whose source record is read again. A **settle
marker** (written when a held DLQ entry is discarded) settles a head held in the DLQ. The
markers' format is ``walstream.core.outbox.markers``; the gate that writes and reads them,
``walstream.agents.ordering_gate``.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Protocol

import orjson

from walstream.core.ordering import (
    KeyHead,
    KeyState,
    ParkAt,
    RecordRef,
    head_from_json,
    head_to_json,
    state_from_json,
)

__all__ = [
    "DEFAULT_MAX_PARKED",
    "BlockedStats",
    "Changelog",
    "KeyOrder",
]

logger = logging.getLogger(__name__)

#: Records that may wait behind one key's head (WALSTREAM_ORDERING_MAX_PARKED_PER_KEY).
DEFAULT_MAX_PARKED = 100_000
#: Prefix of a parked entry's table key (a namespace name never starts with it).
_ENTRY = b"\x01"


class Changelog(Protocol):
    """Writes a table change to the changelog (the mapping already holds it)."""

    async def send(self, key: bytes, value: bytes | None, *, durable: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class BlockedStats:
    """One namespace's blocked keys, as the metrics show them."""

    keys: int = 0
    waiting: int = 0
    oldest_since_ms: int | None = None


class KeyOrder:
    """The ordering table: head records and parked entries per (namespace, key).

    ``table`` is the mapping the states live in (the Faust table's store in the worker, a dict
    in tests); ``changelog`` (the worker's) persists each write. The blocked-key gauges come
    from an index of the head records kept beside the table, updated on each write and rebuilt
    by ``reindex`` when the table was recovered: they cost O(blocked keys), never a decode of
    the table."""

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        changelog: Changelog | None = None,
        *,
        max_parked: int = DEFAULT_MAX_PARKED,
    ) -> None:
        self.table = table
        self.changelog = changelog
        self.max_parked = max_parked
        #: head table key -> (namespace, since_ms, parked): what the gauges show
        self._index: dict[bytes, tuple[str, int, int]] = {}
        if changelog is None:
            self.reindex()  # a table with a changelog is indexed once recovered

    @staticmethod
    def table_key(namespace: str, key: str) -> bytes:
        return namespace.encode() + b"\x00" + key.encode()

    @staticmethod
    def entry_key(namespace: str, key: str, seq: int) -> bytes:
        return _ENTRY + namespace.encode() + b"\x00" + key.encode() + b"\x00" + b"%d" % seq

    # -- reads -----------------------------------------------------------------------------

    def blocked(self, namespace: str, key: str) -> bool:
        """Whether the key waits on a record (cheap: no decode)."""
        return bool(self.table.get(self.table_key(namespace, key)))

    def head(self, namespace: str, key: str) -> KeyHead | None:
        """The key's head record, None when it is free or still in the old form."""
        raw = self.table.get(self.table_key(namespace, key))
        if not raw:
            return None
        try:
            return head_from_json(orjson.loads(raw))
        except ValueError:
            return None

    def entry(self, namespace: str, key: str, seq: int) -> RecordRef | None:
        raw = self.table.get(self.entry_key(namespace, key, seq))
        if not raw:
            return None
        record_id, topic, partition, offset = orjson.loads(raw)
        return RecordRef(str(record_id), str(topic), int(partition), int(offset))

    def behind(self, namespace: str, key: str, record_id: str, limit: int) -> tuple[str, ...]:
        """Ids of the first ``limit`` records parked behind ``record_id`` if it heads the key."""
        state = self._legacy(namespace, key)
        if state is not None:
            return state.behind[:limit] if state.head == record_id else ()
        head = self.head(namespace, key)
        if head is None or head.head != record_id:
            return ()
        ids = []
        for seq in range(head.first, min(head.next, head.first + limit)):
            ref = self.entry(namespace, key, seq)
            if ref is not None:
                ids.append(ref.id)
        return tuple(ids)

    def get(self, namespace: str, key: str) -> KeyState | None:
        """The key's whole state (reads every parked entry: for tests and tools, not handlers)."""
        state = self._legacy(namespace, key)
        if state is not None:
            return state
        head = self.head(namespace, key)
        if head is None:
            return None
        waiting = (self.entry(namespace, key, seq) for seq in range(head.first, head.next))
        return KeyState(
            head=head.head,
            since_ms=head.since_ms,
            held=head.held,
            waiting=tuple(ref for ref in waiting if ref is not None),
        )

    def _legacy(self, namespace: str, key: str) -> KeyState | None:
        raw = self.table.get(self.table_key(namespace, key))
        if not raw:
            return None
        obj = orjson.loads(raw)
        return state_from_json(obj) if "waiting" in obj else None

    # -- writes (from a handler) -----------------------------------------------------------

    async def load(self, namespace: str, key: str) -> KeyHead | None:
        """The key's head record; a value in the old form is rewritten in the new one first."""
        head = self.head(namespace, key)
        if head is not None:
            return head
        state = self._legacy(namespace, key)
        if state is None:
            return None
        tails: dict[tuple[str, int], int] = {}
        changes: list[tuple[bytes, bytes | None]] = []
        for seq, ref in enumerate(state.waiting):
            changes.append((self.entry_key(namespace, key, seq), _entry_value(ref)))
            tails[(ref.topic, ref.partition)] = max(
                ref.offset, tails.get((ref.topic, ref.partition), -1)
            )
        head = KeyHead(
            head=state.head,
            since_ms=state.since_ms,
            held=state.held,
            first=0,
            next=len(state.waiting),
            tails=tuple((t, p, o) for (t, p), o in tails.items()),
        )
        table_key = self.table_key(namespace, key)
        self._index[table_key] = (namespace, head.since_ms, head.parked)
        await self._write(*changes, (table_key, orjson.dumps(head_to_json(head))))
        logger.info("ordering state of %s/%r rewritten in the head/entries form", namespace, key)
        return head

    async def save(
        self, namespace: str, key: str, head: KeyHead | None, *, durable: bool = False
    ) -> None:
        """Store the key's head record (None: the key is free; its record goes)."""
        table_key = self.table_key(namespace, key)
        if head is None:
            self._index.pop(table_key, None)
            if table_key in self.table:
                await self._write((table_key, None))
            return
        self._index[table_key] = (namespace, head.since_ms, head.parked)
        await self._write((table_key, orjson.dumps(head_to_json(head))), durable=durable)

    async def park(self, namespace: str, key: str, at: ParkAt, ref: RecordRef) -> None:
        """Park ``ref`` as entry ``at.seq`` and count it in the head record (in that order on
        the changelog: a crash between the two parks it again at the same number)."""
        table_key = self.table_key(namespace, key)
        self._index[table_key] = (namespace, at.head.since_ms, at.head.parked)
        await self._write(
            (self.entry_key(namespace, key, at.seq), _entry_value(ref)),
            (table_key, orjson.dumps(head_to_json(at.head))),
        )

    async def drop(self, namespace: str, key: str, seq: int) -> None:
        """Entry ``seq`` was handed on."""
        entry_key = self.entry_key(namespace, key, seq)
        if entry_key in self.table:
            await self._write((entry_key, None))

    async def _write(self, *changes: tuple[bytes, bytes | None], durable: bool = False) -> None:
        """Apply ``changes`` to the table at once (other handlers read them from here on,
        before anything is awaited), then write them to the changelog in that order."""
        for table_key, value in changes:
            if value is None:
                self.table.pop(table_key, None)
            else:
                self.table[table_key] = value
        if self.changelog is not None:
            for table_key, value in changes:
                await self.changelog.send(table_key, value, durable=durable)

    def put(self, namespace: str, key: str, state: KeyState | None) -> None:
        """Store a whole state in the table form (tests and tools: the mapping only, no
        changelog)."""
        if self.changelog is not None:
            raise TypeError("put writes no changelog: use save/park from a handler")
        table_key = self.table_key(namespace, key)
        old = self.head(namespace, key)
        if old is not None:
            for seq in range(old.first, old.next):
                self.table.pop(self.entry_key(namespace, key, seq), None)
        if state is None:
            self.table.pop(table_key, None)
            self._index.pop(table_key, None)
            return
        for seq, ref in enumerate(state.waiting):
            self.table[self.entry_key(namespace, key, seq)] = _entry_value(ref)
        head = KeyHead(
            head=state.head, since_ms=state.since_ms, held=state.held, next=len(state.waiting)
        )
        self.table[table_key] = orjson.dumps(head_to_json(head))
        self._index[table_key] = (namespace, head.since_ms, head.parked)

    # -- gauges ----------------------------------------------------------------------------

    def reindex(self) -> None:
        """Rebuild the head index from the table (after recovery: it holds what the changelog
        said). Parked entries are skipped by their first byte, undecoded."""
        index: dict[bytes, tuple[str, int, int]] = {}
        for table_key, raw in list(self.table.items()):
            table_key = bytes(table_key)
            if not raw or table_key.startswith(_ENTRY):
                continue
            namespace = table_key.split(b"\x00", 1)[0].decode()
            obj = orjson.loads(raw)
            if "waiting" in obj:
                state = state_from_json(obj)
                index[table_key] = (namespace, state.since_ms, len(state.waiting))
            else:
                head = head_from_json(obj)
                index[table_key] = (namespace, head.since_ms, head.parked)
        self._index = index

    def stats(self) -> dict[str, BlockedStats]:
        """Blocked keys per namespace, over the partitions this worker holds."""
        out: dict[str, BlockedStats] = {}
        for namespace, since_ms, parked in self._index.values():
            seen = out.get(namespace, BlockedStats())
            oldest = seen.oldest_since_ms
            out[namespace] = BlockedStats(
                keys=seen.keys + 1,
                waiting=seen.waiting + parked,
                oldest_since_ms=since_ms if oldest is None else min(oldest, since_ms),
            )
        return out


def _entry_value(ref: RecordRef) -> bytes:
    return orjson.dumps([ref.id, ref.topic, ref.partition, ref.offset])
