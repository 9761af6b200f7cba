"""Ordering markers: the records that pass a key's turn on a namespace's retry topic (pure).

A **release marker** hands a key to its next parked record (``ref``: where that record is on the
log); a **settle marker** ends a head held in the DLQ (its entry was discarded). Both are keyed
by the record key, on the key's partition of the retry topic, with a ``wal-order`` header naming
the kind and a small JSON value. Written by the deliverer (release) and by ``walstream dlq
discard`` (settle); read by the deliverer. The builders are in ``walstream.core.outbox.records``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from walstream.core.ordering import KeyHead, RecordRef
from walstream.errors import PoisonRecordError

__all__ = [
    "H_ORDER",
    "Follow",
    "Marker",
    "MarkerKind",
    "Settle",
    "decode_marker",
    "marker_headers",
    "marker_kind",
    "marker_step",
    "marker_value",
]

#: Header naming an ordering marker on a retry topic (its value: the marker's kind).
H_ORDER = "wal-order"


class MarkerKind:
    RELEASE = b"release"
    SETTLE = b"settle"


class Marker(NamedTuple):
    """A key's turn passes: ``release`` hands ``ref`` (now the head) to delivery; ``settle``
    ends the head ``record_id`` (its held DLQ entry was discarded). ``tries``: times the
    released record could not be read from the log yet (the marker backs off)."""

    kind: bytes
    namespace: str
    record_id: str
    ref: RecordRef | None
    tries: int = 0


def marker_value(
    namespace: str, record_id: str, ref: RecordRef | None = None, *, tries: int = 0
) -> bytes:
    """The JSON value of a marker: ``{"ns", "id", "ref": [topic, partition, offset] | null}``
    (``tries`` when the released record could not be read back yet)."""
    where = [ref.topic, ref.partition, ref.offset] if ref is not None else None
    obj: dict[str, object] = {"ns": namespace, "id": record_id, "ref": where}
    if tries:
        obj["tries"] = tries
    return orjson.dumps(obj)


def marker_headers(kind: bytes) -> list[tuple[str, bytes]]:
    """The header naming a marker of ``kind`` (``MarkerKind.RELEASE`` or ``SETTLE``)."""
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
        marker = Marker(kind, str(obj["ns"]), str(obj["id"]), ref, int(obj.get("tries", 0)))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PoisonRecordError(f"undecodable ordering marker: {exc}") from exc
    if kind == MarkerKind.RELEASE and marker.ref is None:
        raise PoisonRecordError("release marker without a record reference")
    return marker


@dataclass(frozen=True, slots=True)
class Settle:
    """A settle marker for the head held in the DLQ: the head ends."""


@dataclass(frozen=True, slots=True)
class Follow:
    """A release marker to follow: deliver the record at ``ref`` (None: it names none, the
    marker cannot be followed). ``tries``: times it could not be read back yet."""

    ref: RecordRef | None
    tries: int


def marker_step(marker: Marker, head: KeyHead | None) -> Settle | Follow | None:
    """What a marker read back means for its key's ``head``; None: it is stale (handled
    already, or its record redriven).

    A release marker is followed while its record heads the key, or (``head.via``) while its
    handler was handing the key on when it stopped: it resumes with the head it had handed the
    key to, read back from ``head.ref``.
    """
    record_id = marker.record_id
    if marker.kind == MarkerKind.SETTLE:
        held = head is not None and head.head == record_id and head.held
        return Settle() if held else None
    if head is None:
        return None
    ref = marker.ref
    if head.head != record_id:
        if head.via != record_id:
            return None
        ref = head.ref
    tries = marker.tries if ref is not None and ref.id == record_id else 0
    return Follow(ref, tries)
