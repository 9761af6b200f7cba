"""Where a record was first read from: the ``wal-origin`` header (pure; no I/O).

A record that fails goes round: its retry copy waits in the delay tiers, comes back on its
namespace's retry topic, and may end in the DLQ, whose entry's ``wal-source`` names where its
last copy was read (a retry topic's offset for a retried record). Every copy the worker writes
of a record (a retry, a delay or breaker deferral, a DLQ entry) carries ``wal-origin``: the
position, ``topic[partition]@offset`` like ``wal-source``, where the worker first read it
(for a write, its offset in the namespace's log), so an operator finds a record's first position
from any later copy. The delay stage carries the header on when it forwards a copy.

A copy that has none (read for the first time, or written before this header existed) is its
own origin: where it is read now.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["H_ORIGIN", "carried_origin", "origin_headers", "origin_of"]

H_ORIGIN = "wal-origin"

Headers = Iterable[tuple[str, bytes]]


def origin_of(headers: Headers | None) -> str | None:
    """The ``wal-origin`` a record carries (None: none, or not text)."""
    for name, raw in headers or ():
        if name == H_ORIGIN:
            try:
                return raw.decode() or None
            except (AttributeError, UnicodeDecodeError):
                return None
    return None


def origin_headers(origin: str | None) -> list[tuple[str, bytes]]:
    """The header a copy of a record first read at ``origin`` carries (none for None)."""
    return [(H_ORIGIN, origin.encode())] if origin else []


def carried_origin(headers: Headers | None) -> list[tuple[str, bytes]]:
    """The ``wal-origin`` header of ``headers``, to carry on to a record's next copy."""
    return origin_headers(origin_of(headers))
