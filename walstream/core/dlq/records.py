"""The DLQ topic's records (pure): entries, close markers and redrive claims, the headers
that make them (the wire format) and ``parse_dlq_record``, which reads any of them back.

Every DLQ reader and writer goes through here, so the header names live in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from walstream.core.origin import origin_of

__all__ = [
    "CLAIM_KEY",
    "CLAIM_PARTITION",
    "Claim",
    "DlqEntry",
    "Headers",
    "Marker",
    "MarkerKind",
    "claim_headers",
    "entry_headers",
    "expiry_header",
    "marker_headers",
    "mutation_header",
    "parse_dlq_record",
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
#: A multi-partition mutation's entry (issue 18): ``marker`` (a transaction, or a rejected
#: marker) or ``op`` (an operation's record); its value is no Envelope
#: (walstream.core.dlq.mutations).
H_MUTATION = "wal-mutation"
#: A dead-lettered transaction's entry: the wake id of its expiry (the wake that drops its rows
#: when the idempotency window ends), which ``dlq discard`` sends at once
#: (walstream.core.dlq.mutations.expiry_marker).
H_MUTATION_EXPIRY = "wal-mutation-expiry"
#: Redrive claims live on this partition of the DLQ topic (their order decides who runs).
CLAIM_PARTITION = 0
CLAIM_KEY = b"wal-redrive-claim"

Headers = Sequence[tuple[str, bytes]]


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
    #: ``wal-mutation``: a mutation's entry (``marker`` or ``op``), None: a log record's.
    mutation: str | None = None
    #: ``wal-mutation-expiry``: a dead-lettered transaction's expiry wake id, None: none named
    #: (another entry, or one written before the header).
    expiry_wake: int | None = None
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


def mutation_header(kind: str) -> tuple[str, bytes]:
    """The header a mutation's DLQ entry carries besides ``entry_headers``: ``kind`` is
    ``marker`` (its value a completion marker) or ``op`` (an operation's record)."""
    return (H_MUTATION, kind.encode())


def expiry_header(wake: int) -> tuple[str, bytes]:
    """The header naming a dead-lettered transaction's expiry wake id (``H_MUTATION_EXPIRY``)."""
    return (H_MUTATION_EXPIRY, str(wake).encode())


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
        mutation = h.get(H_MUTATION)
        expiry = _int(h.get(H_MUTATION_EXPIRY), -1)
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
            mutation=mutation.decode("utf-8", "replace") if mutation is not None else None,
            expiry_wake=expiry if expiry > 0 else None,
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
