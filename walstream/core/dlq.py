"""The dead-letter queue's records and the view folded from them (pure; no I/O).

A namespace's DLQ topic holds two kinds of records, both keyed by the record id:

* an **entry**: the dead record's value as it was (the envelope with its whole attempt history,
  or a poison record's raw bytes), with headers saying why, from where (``wal-source``:
  ``topic[partition]@offset``), after how many attempts, its namespace and its key (``wal-key``,
  the key it is ordered by). An entry the broker refused with the record in it has no value: its
  headers alone name the record (where it stays, at its source) and the key it may hold;
* a **marker**: the entry was redriven or discarded (the topic is append-only, like the log).

An entry is open until the marker that names it closes it. A marker names the exact entry it
closes (``wal-closes: <partition>@<offset>``) and is written on that entry's partition, so it
always follows its entry, whatever order a reader sees the partitions in: a redriven keyless
record that dies again lands on any partition, and its new entry is a new open entry, never
closed by the marker of the earlier one. A marker from before ``wal-closes`` closes the latest
open entry of its id at a lower offset of its own partition (where markers were always written),
never a later one. Every reader (listings, redrives, the open-entries gauge) folds by these
rules, so every read of a DLQ shows the same open entries.

A DLQ may hold millions of entries of up to a megabyte each, so listings and redrives read it in
two passes: ``DlqIndex`` folds the topic keeping only each open entry's coordinates (id, death
time, error class, partition, offset; no value, no reason), then the entries of one page are
read back by offset. What is held at once is one page of records plus ~100 bytes per open
entry. Pages follow the listing order (oldest death first) and resume after a ``DlqCursor``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, NamedTuple, TypeVar

from walstream.core.numbers import as_integer
from walstream.core.origin import origin_of
from walstream.core.times import parse_time_ms
from walstream.errors import BadRequestError

__all__ = [
    "Claim",
    "ClaimFold",
    "DlqCursor",
    "DlqEntry",
    "DlqIndex",
    "DlqRef",
    "DlqTally",
    "DlqView",
    "Marker",
    "MarkerKind",
    "OpenEntries",
    "Selection",
    "claim_headers",
    "entry_headers",
    "marker_headers",
    "parse_dlq_record",
    "parse_selection",
    "parse_source",
]

H_KIND = "wal-dlq"
H_ERROR = "wal-error"
H_ERROR_CLASS = "wal-error-class"
H_SOURCE = "wal-source"
H_ATTEMPTS = "wal-attempt"
H_DEAD_AT = "wal-dead-at"
H_NAMESPACE = "wal-namespace"
H_BEHIND = "wal-behind"
H_KEY = "wal-key"
H_CLOSES = "wal-closes"
H_CLAIM = "wal-claim"
H_LEASE = "wal-lease-ms"
#: Redrive claims live on this partition of the DLQ topic (their order decides who runs).
CLAIM_PARTITION = 0
CLAIM_KEY = b"wal-redrive-claim"

Headers = Sequence[tuple[str, bytes]]
V = TypeVar("V")


class MarkerKind(Enum):
    REDRIVEN = "redriven"
    DISCARDED = "discarded"


@dataclass(frozen=True, slots=True, kw_only=True)
class DlqEntry:
    """One dead record, as the DLQ holds it."""

    id: str
    namespace: str
    reason: str
    error_class: str
    source: str
    attempts: int
    dead_at_ms: int
    value: bytes | None
    #: Ids of records that waited behind this one (per-key ordering).
    behind: tuple[str, ...] = ()
    #: The record's key (what per-key ordering holds), None: keyless or not known.
    key: str | None = None
    #: Where the worker first read the record (``wal-origin``: its log offset), None: not known.
    origin: str | None = None
    partition: int = -1
    offset: int = -1

    @property
    def poison(self) -> bool:
        return self.error_class == "PoisonRecordError"

    def source_coordinates(self) -> tuple[str, int, int] | None:
        """(topic, partition, offset) of ``source`` (None: not in that form)."""
        return parse_source(self.source)


def parse_source(source: str) -> tuple[str, int, int] | None:
    """``topic[partition]@offset`` as (topic, partition, offset); None if not in that form."""
    where, _, offset = source.rpartition("@")
    topic, _, partition = where.removesuffix("]").rpartition("[")
    if not topic or not where.endswith("]"):
        return None
    try:
        return topic, int(partition), int(offset)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Marker:
    """An entry was redriven or discarded."""

    id: str
    kind: MarkerKind
    at_ms: int
    #: The (partition, offset) of the entry it closes; None: a marker from before ``wal-closes``.
    closes: tuple[int, int] | None = None
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A redrive's claim on its namespace's DLQ (or its release), renewed while it runs.

    Readers other than redrive ignore it (older walstream versions too: an unknown kind)."""

    claim: str
    at_ms: int
    lease_ms: int
    released: bool = False
    partition: int = -1
    offset: int = -1


def claim_headers(
    claim: str, at_ms: int, lease_ms: int, *, released: bool = False
) -> list[tuple[str, bytes]]:
    """Headers of a claim (or release) record: key CLAIM_KEY, empty value, CLAIM_PARTITION."""
    return [
        (H_KIND, b"release" if released else b"claim"),
        (H_CLAIM, claim.encode()),
        (H_DEAD_AT, str(at_ms).encode()),
        (H_LEASE, str(lease_ms).encode()),
    ]


class ClaimFold:
    """Who may redrive a DLQ: the earliest live claim on CLAIM_PARTITION.

    A claim is live until it is released or its lease runs out (its last renewal's time plus
    its lease); a redrive that crashed holds the DLQ for one lease at most. Only claims on
    CLAIM_PARTITION count: their offsets order them the same for every reader.
    """

    def __init__(self) -> None:
        #: claim -> (offset of its first record, latest renewal time, lease, released)
        self.claims: dict[str, tuple[int, int, int, bool]] = {}

    def apply(self, item: object) -> None:
        if not isinstance(item, Claim) or item.partition != CLAIM_PARTITION or not item.claim:
            return
        first, at, lease, released = self.claims.get(
            item.claim, (item.offset, item.at_ms, item.lease_ms, False)
        )
        self.claims[item.claim] = (
            min(first, item.offset),
            max(at, item.at_ms),
            item.lease_ms or lease,
            released or item.released,
        )
        if len(self.claims) > 1024:  # keep what can still matter
            self.claims = {c: v for c, v in self.claims.items() if not v[3]}

    def holder_before(self, claim: str) -> str | None:
        """The live claim ahead of ``claim`` (None: ``claim`` holds the DLQ).

        Raises:
            KeyError: ``claim`` was not read (the index pass ended before it).
        """
        mine, my_at, _, _ = self.claims[claim]
        # pragma below: ``claim`` is among them, so the loop always stops, at it at the latest
        for other, (first, at, lease, released) in sorted(  # pragma: no branch
            self.claims.items(), key=lambda c: c[1][0]
        ):
            if first >= mine:
                break
            if not released and at + lease > my_at:
                return other
        return None


def entry_headers(
    *,
    namespace: str,
    reason: str,
    error_class: str,
    source: str,
    attempts: int,
    dead_at_ms: int,
    behind: Sequence[str] = (),
    key: str | None = None,
) -> list[tuple[str, bytes]]:
    """Headers of a DLQ entry; ``key``: the record's key (an entry written without its record
    still names the key it holds, for ``dlq discard`` to settle)."""
    headers = [
        (H_KIND, b"entry"),
        (H_NAMESPACE, namespace.encode()),
        (H_ERROR, reason.encode("utf-8", "replace")[:4096]),
        (H_ERROR_CLASS, error_class.encode()),
        (H_SOURCE, source.encode()),
        (H_ATTEMPTS, str(attempts).encode()),
        (H_DEAD_AT, str(dead_at_ms).encode()),
    ]
    if behind:
        headers.append((H_BEHIND, ",".join(behind).encode()))
    if key is not None:
        headers.append((H_KEY, key.encode("utf-8", "replace")))
    return headers


def marker_headers(
    kind: MarkerKind, at_ms: int, closes: tuple[int, int] | None = None
) -> list[tuple[str, bytes]]:
    """Headers of a marker record (its value is empty) closing the entry at ``closes``
    (partition, offset); write it on that partition."""
    headers = [(H_KIND, kind.value.encode()), (H_DEAD_AT, str(at_ms).encode())]
    if closes is not None:
        headers.append((H_CLOSES, f"{closes[0]}@{closes[1]}".encode()))
    return headers


def _coords(raw: bytes | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    partition, _, offset = raw.partition(b"@")
    try:
        return int(partition), int(offset)
    except ValueError:
        return None


def _int(raw: bytes | None, default: int = 0) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def parse_dlq_record(
    key: bytes | None, value: bytes | None, headers: Headers, *, partition: int, offset: int
) -> DlqEntry | Marker | Claim | None:
    """Read one DLQ topic record (None: not a walstream DLQ record)."""
    h = {name: raw for name, raw in headers}
    kind = h.get(H_KIND)
    if key is None or kind is None:
        return None
    record_id = key.decode("utf-8", "replace")
    if kind == b"entry":
        behind = h.get(H_BEHIND)
        entry_key = h.get(H_KEY)
        return DlqEntry(
            id=record_id,
            namespace=h.get(H_NAMESPACE, b"").decode("utf-8", "replace"),
            reason=h.get(H_ERROR, b"").decode("utf-8", "replace"),
            error_class=h.get(H_ERROR_CLASS, b"").decode("utf-8", "replace"),
            source=h.get(H_SOURCE, b"").decode("utf-8", "replace"),
            attempts=_int(h.get(H_ATTEMPTS)),
            dead_at_ms=_int(h.get(H_DEAD_AT)),
            value=value,
            behind=tuple(behind.decode().split(",")) if behind else (),
            key=entry_key.decode("utf-8", "replace") if entry_key is not None else None,
            origin=origin_of(headers),
            partition=partition,
            offset=offset,
        )
    if kind in (b"claim", b"release"):
        return Claim(
            claim=h.get(H_CLAIM, b"").decode("utf-8", "replace"),
            at_ms=_int(h.get(H_DEAD_AT)),
            lease_ms=_int(h.get(H_LEASE)),
            released=kind == b"release",
            partition=partition,
            offset=offset,
        )
    try:
        marker_kind = MarkerKind(kind.decode())
    except ValueError:
        return None
    return Marker(
        id=record_id,
        kind=marker_kind,
        at_ms=_int(h.get(H_DEAD_AT)),
        closes=_coords(h.get(H_CLOSES)),
        partition=partition,
        offset=offset,
    )


Coords = tuple[int, int]


class OpenEntries(Generic[V]):
    """The open entries of one DLQ by identity (partition, offset), with what a reader keeps of
    each (``V``): the one fold every reader uses (see the module docstring for the rules).

    Holds ``V`` and ~100 bytes per open entry; nothing for closed ones.
    """

    def __init__(self) -> None:
        self.items: dict[Coords, V] = {}
        self._ids: dict[str, list[Coords]] = {}

    def add(self, record_id: str, coords: Coords, value: V) -> None:
        if coords in self.items:
            return  # read twice
        self.items[coords] = value
        self._ids.setdefault(record_id, []).append(coords)

    def close(self, marker: Marker) -> tuple[Coords, V] | None:
        """Close the entry ``marker`` names; return it (None: not open here)."""
        coords = self._ids.get(marker.id)
        if not coords:
            return None
        if marker.closes is not None:
            found = marker.closes if marker.closes in coords else None
        else:  # an old marker: the latest earlier entry of its id on its partition
            earlier = [c for c in coords if c[0] == marker.partition and c[1] < marker.offset]
            found = max(earlier) if earlier else None
        if found is None:
            return None
        coords.remove(found)
        if not coords:
            del self._ids[marker.id]
        return found, self.items.pop(found)

    def of(self, record_id: str) -> list[V]:
        """The open entries of one record id (oldest coordinates first)."""
        return [self.items[c] for c in sorted(self._ids.get(record_id, ()))]

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which open entries a list or redrive takes (every given condition must hold)."""

    ids: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    error_class: str | None = None

    def matches(self, entry: DlqEntry) -> bool:
        if self.ids and entry.id not in self.ids:
            return False
        if self.since_ms is not None and entry.dead_at_ms < self.since_ms:
            return False
        if self.until_ms is not None and entry.dead_at_ms >= self.until_ms:
            return False
        return self.error_class is None or entry.error_class == self.error_class


@dataclass
class DlqView:
    """The open entries of one DLQ with their records (small DLQs and tests; listings use
    DlqIndex). ``closed``: the last marker that closed an entry of each id."""

    entries: OpenEntries[DlqEntry] = field(default_factory=OpenEntries)
    closed: dict[str, Marker] = field(default_factory=dict)

    def apply(self, item: DlqEntry | Marker | Claim | None) -> None:
        if isinstance(item, DlqEntry):
            self.entries.add(item.id, (item.partition, item.offset), item)
        elif isinstance(item, Marker) and self.entries.close(item) is not None:
            self.closed[item.id] = item

    @property
    def open(self) -> dict[str, DlqEntry]:
        """The newest open entry of each record id (``all_open`` has every open entry)."""
        newest: dict[str, DlqEntry] = {}
        for e in self.all_open():
            newest[e.id] = e
        return newest

    def all_open(self) -> list[DlqEntry]:
        """Every open entry, oldest first."""
        return sorted(self.entries.items.values(), key=_order)

    def select(self, selection: Selection) -> list[DlqEntry]:
        """Open entries matching ``selection``, oldest first."""
        return [e for e in self.all_open() if selection.matches(e)]

    def oldest_dead_at_ms(self) -> int | None:
        return min((e.dead_at_ms for e in self.entries.items.values()), default=None)

    @classmethod
    def fold(cls, items: Iterable[DlqEntry | Marker | Claim | None]) -> DlqView:
        view = cls()
        for item in items:
            view.apply(item)
        return view


def _order(entry: DlqEntry) -> tuple[int, int, int]:
    return entry.dead_at_ms, entry.partition, entry.offset


class DlqRef(NamedTuple):
    """Where an open entry is, and what a selection looks at (no value, no reason)."""

    dead_at_ms: int
    partition: int
    offset: int
    id: str
    error_class: str

    @property
    def cursor(self) -> DlqCursor:
        return DlqCursor(self.dead_at_ms, self.partition, self.offset)


class DlqCursor(NamedTuple):
    """A position in the listing order (oldest death first): a page resumes after it."""

    dead_at_ms: int
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.dead_at_ms}.{self.partition}.{self.offset}"

    @classmethod
    def parse(cls, raw: str, field: str = "after") -> DlqCursor:
        """The cursor a previous page gave as ``next``.

        Raises:
            BadRequestError: naming ``field``.
        """
        parts = raw.split(".")
        if len(parts) != 3 or not all(p.isascii() and p.lstrip("-").isdigit() for p in parts):
            raise BadRequestError(field, "must be a cursor from a previous page's 'next'")
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))


def _ref_matches(selection: Selection, ref: DlqRef) -> bool:
    if selection.ids and ref.id not in selection.ids:
        return False
    if selection.since_ms is not None and ref.dead_at_ms < selection.since_ms:
        return False
    if selection.until_ms is not None and ref.dead_at_ms >= selection.until_ms:
        return False
    return selection.error_class is None or ref.error_class == selection.error_class


class DlqIndex:
    """The open entries of one DLQ by coordinates only (the fold of OpenEntries)."""

    def __init__(self) -> None:
        self.entries: OpenEntries[DlqRef] = OpenEntries()
        self.claims = ClaimFold()

    @property
    def open(self) -> dict[Coords, DlqRef]:
        """Every open entry by (partition, offset)."""
        return self.entries.items

    def apply(self, item: DlqEntry | Marker | Claim | None) -> None:
        if isinstance(item, Claim):
            self.claims.apply(item)
        elif isinstance(item, DlqEntry):
            ref = DlqRef(item.dead_at_ms, item.partition, item.offset, item.id, item.error_class)
            self.entries.add(item.id, (item.partition, item.offset), ref)
        elif isinstance(item, Marker):
            self.entries.close(item)

    def select(self, selection: Selection, after: DlqCursor | None = None) -> list[DlqRef]:
        """Open entries matching ``selection`` after ``after``, oldest first."""
        chosen = [
            ref
            for ref in self.open.values()
            if _ref_matches(selection, ref) and (after is None or ref.cursor > after)
        ]
        chosen.sort()
        return chosen

    def page(
        self, selection: Selection, limit: int, after: DlqCursor | None = None
    ) -> tuple[list[DlqRef], int, DlqCursor | None]:
        """Up to ``limit`` refs after ``after``, how many match in all, and the cursor of the
        next page (None: this is the last)."""
        matching = [ref for ref in self.open.values() if _ref_matches(selection, ref)]
        later = (r for r in matching if after is None or r.cursor > after)
        page = heapq.nsmallest(limit + 1, later)  # n log(limit), not a sort of every entry
        more = len(page) > limit
        del page[limit:]
        return page, len(matching), page[-1].cursor if more and page else None

    def __len__(self) -> int:
        return len(self.entries)


class DlqTally:
    """How many entries of a DLQ are open and when the oldest died, without keeping the records
    (the fold of OpenEntries, keeping a death time per open entry).

    A heap of death times gives the oldest; its stale items (entries since closed) are dropped
    lazily and compacted when they pile up.
    """

    def __init__(self) -> None:
        self._open: OpenEntries[int] = OpenEntries()
        self._heap: list[tuple[int, Coords]] = []

    def apply(self, item: DlqEntry | Marker | Claim | None) -> None:
        if isinstance(item, DlqEntry):
            coords = (item.partition, item.offset)
            self._open.add(item.id, coords, item.dead_at_ms)
            heapq.heappush(self._heap, (item.dead_at_ms, coords))
        elif isinstance(item, Marker):
            self._open.close(item)
        if len(self._heap) > 2 * len(self._open) + 1024:
            self._heap = [(at, coords) for coords, at in self._open.items.items()]
            heapq.heapify(self._heap)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def oldest_dead_at_ms(self) -> int | None:
        heap, items = self._heap, self._open.items
        while heap and items.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


def _record_ids(value: Any, field: str) -> list[str]:
    """A selection's record ids: a list of them, or one string of them comma-separated."""
    ids = [i for i in value.split(",") if i] if isinstance(value, str) else value
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise BadRequestError(field, "must be a list of record ids")
    return ids


def parse_selection(obj: Mapping[str, Any], now_ms: int) -> Selection:
    """A Selection from a request (query string or JSON body).

    Raises:
        BadRequestError: naming the field.
    """
    unknown = sorted(set(obj) - {"ids", "id", "since", "until", "error_class"})
    if unknown:
        raise BadRequestError(unknown[0], "is not a selection field")
    # ``id`` (deprecated) is checked as ``ids`` is, whether or not ids is there (and wins)
    legacy = _record_ids(obj["id"], "id") if "id" in obj else []
    ids = _record_ids(obj["ids"], "ids") if "ids" in obj else legacy
    times: dict[str, int | None] = {}
    for name in ("since", "until"):
        raw = obj.get(name)
        if raw is None:
            times[name] = None
            continue
        if isinstance(raw, float) and (integral := as_integer(raw)) is not None:
            raw = integral  # 5.0 is the integer 5 (JSON Schema's integer), not "5.0"
        try:
            times[name] = parse_time_ms(str(raw), now_ms)
        except ValueError as exc:
            raise BadRequestError(name, str(exc)) from None
    error_class = obj.get("error_class")
    if error_class is not None and (not isinstance(error_class, str) or not error_class):
        raise BadRequestError("error_class", "must be a non-empty string")
    return Selection(
        ids=frozenset(ids),
        since_ms=times["since"],
        until_ms=times["until"],
        error_class=error_class,
    )
