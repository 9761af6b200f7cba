"""The open entries of a DLQ (pure): ``OpenEntries``, the one fold of entries and close markers
every reader uses, so every read of a DLQ shows the same open entries; ``DlqView`` keeps their
records (small DLQs, tests), ``DlqTally`` only their count and oldest death (the gauge)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from walstream.core.dlq.records import Claim, DlqEntry, Marker
from walstream.core.dlq.selection import Selection

__all__ = ["Coords", "DlqTally", "DlqView", "OpenEntries"]

Coords = tuple[int, int]
V = TypeVar("V")


class OpenEntries(Generic[V]):
    """The open entries of one DLQ by identity (partition, offset), with what a reader keeps of
    each (``V``): the one fold every reader uses (``walstream.core.dlq`` states the rules).

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
