"""A DLQ's open entries by coordinates only (pure): ``DlqIndex``, the first pass of a listing or
redrive, paged in listing order (oldest death first) after a ``DlqCursor``; a DLQ of millions
of large entries costs ~100 bytes an open entry, and records are read back a page at a time."""

from __future__ import annotations

import heapq
from typing import NamedTuple

from walstream.core.dlq.claims import ClaimFold
from walstream.core.dlq.open_entries import Coords, OpenEntries
from walstream.core.dlq.records import Claim, DlqEntry, Marker
from walstream.core.dlq.selection import Selection
from walstream.errors import BadRequestError

__all__ = ["DlqCursor", "DlqIndex", "DlqRef"]


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
            if selection.matches(ref) and (after is None or ref.cursor > after)
        ]
        chosen.sort()
        return chosen

    def page(
        self, selection: Selection, limit: int, after: DlqCursor | None = None
    ) -> tuple[list[DlqRef], int, DlqCursor | None]:
        """Up to ``limit`` refs after ``after``, how many match in all, and the cursor of the
        next page (None: this is the last)."""
        matching = [ref for ref in self.open.values() if selection.matches(ref)]
        later = (r for r in matching if after is None or r.cursor > after)
        page = heapq.nsmallest(limit + 1, later)  # n log(limit), not a sort of every entry
        more = len(page) > limit
        del page[limit:]
        return page, len(matching), page[-1].cursor if more and page else None

    def __len__(self) -> int:
        return len(self.entries)
