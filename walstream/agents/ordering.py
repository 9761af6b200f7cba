"""Per-key ordering in the worker: the ``ordering`` table and the markers that hand a key on.

The table maps (namespace, ordering key) to the key's state (``walstream.core.ordering``) as
JSON: its head record and references to the records parked behind it. It is co-partitioned with
the namespace topics: a key's log, retry and marker records share a partition number, and every
write happens while handling one of them.

When a head is settled, the next parked record is handed on by a **release marker** on the
namespace's retry topic (same key, same partition): the retry agent reads the record back from
the log and delivers it. The marker is written (acknowledged) before the table says the next
record heads the key, so a crash never leaves a head that nobody will deliver: either the marker
exists, or the state still names the old head, whose source record is read again. A **settle
marker** (written when a held DLQ entry is discarded) settles a head held in the DLQ.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from walstream.core.ordering import KeyState, RecordRef, state_from_json, state_to_json
from walstream.errors import PoisonRecordError

__all__ = [
    "H_ORDER",
    "BlockedStats",
    "KeyOrder",
    "Marker",
    "MarkerKind",
    "decode_marker",
    "marker_headers",
    "marker_kind",
    "marker_value",
]

#: Header naming an ordering marker on a retry topic (its value: the marker's kind).
H_ORDER = "wal-order"


class MarkerKind:
    RELEASE = b"release"
    SETTLE = b"settle"


class Marker(NamedTuple):
    """A key's turn passes: ``release`` hands ``ref`` (now the head) to delivery; ``settle``
    ends the head ``record_id`` (its held DLQ entry was discarded)."""

    kind: bytes
    namespace: str
    record_id: str
    ref: RecordRef | None


def marker_value(namespace: str, record_id: str, ref: RecordRef | None = None) -> bytes:
    where = [ref.topic, ref.partition, ref.offset] if ref is not None else None
    return orjson.dumps({"ns": namespace, "id": record_id, "ref": where})


def marker_headers(kind: bytes) -> list[tuple[str, bytes]]:
    return [(H_ORDER, kind)]


def marker_kind(headers: Iterable[tuple[str, bytes]] | None) -> bytes | None:
    """The marker kind when these are a marker's headers, else None (a record)."""
    for name, value in headers or ():
        if name == H_ORDER:
            return value
    return None


def decode_marker(kind: bytes, value: bytes | None) -> Marker:
    """Raises PoisonRecordError for a marker that cannot be read."""
    if kind not in (MarkerKind.RELEASE, MarkerKind.SETTLE):
        raise PoisonRecordError(f"unknown ordering marker {kind!r}")
    try:
        obj: Any = orjson.loads(value or b"")
        where = obj["ref"]
        ref = None
        if where is not None:
            topic, partition, offset = where
            ref = RecordRef(str(obj["id"]), str(topic), int(partition), int(offset))
        marker = Marker(kind, str(obj["ns"]), str(obj["id"]), ref)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PoisonRecordError(f"undecodable ordering marker: {exc}") from exc
    if kind == MarkerKind.RELEASE and marker.ref is None:
        raise PoisonRecordError("release marker without a record reference")
    return marker


@dataclass(frozen=True, slots=True)
class BlockedStats:
    """One namespace's blocked keys, as the metrics show them."""

    keys: int = 0
    waiting: int = 0
    oldest_since_ms: int | None = None


class KeyOrder:
    """The ordering table, read and written as key states per (namespace, key)."""

    def __init__(self, table: MutableMapping[bytes, bytes]) -> None:
        self.table = table

    @staticmethod
    def table_key(namespace: str, key: str) -> bytes:
        return namespace.encode() + b"\x00" + key.encode()

    def get(self, namespace: str, key: str) -> KeyState | None:
        raw = self.table.get(self.table_key(namespace, key))
        return state_from_json(orjson.loads(raw)) if raw else None

    def put(self, namespace: str, key: str, state: KeyState | None) -> None:
        """Store ``state`` (None: the key is free; its entry goes)."""
        table_key = self.table_key(namespace, key)
        if state is not None:
            self.table[table_key] = orjson.dumps(state_to_json(state))
        elif table_key in self.table:
            del self.table[table_key]

    def stats(self) -> dict[str, BlockedStats]:
        """Blocked keys per namespace, over the partitions this worker holds."""
        out: dict[str, BlockedStats] = {}
        for table_key, raw in list(self.table.items()):
            if not raw:
                continue
            namespace = bytes(table_key).split(b"\x00", 1)[0].decode()
            state = state_from_json(orjson.loads(raw))
            seen = out.get(namespace, BlockedStats())
            oldest = seen.oldest_since_ms
            out[namespace] = BlockedStats(
                keys=seen.keys + 1,
                waiting=seen.waiting + len(state.waiting),
                oldest_since_ms=state.since_ms if oldest is None else min(oldest, state.since_ms),
            )
        return out
