"""One open transaction's state: what arrived, the marker, the commit progress (pure values).

The table holds this small record per transaction (``keys.state_key``); the chunks' bytes are
table rows of their own (``keys.chunk_key``), so each changelog record stays small: ~70 bytes
per operation here (digest, weight, chunk count, chunks received), none of its value.

Invariants: a seq holds one operation for ever (a re-sent identical chunk is a ``Duplicate``,
a different operation for the seq a ``Conflict``: never an overwrite); the transaction's bytes
stay within its limit, and so do the bytes its chunk rows hold: each operation's stored chunk
data stays within its announced size (``Slot.stored``), which its weight counts, so a record
written to the mutations topic by hand cannot store more than the limit (a chunk past it is
``Refused`` before its row is written); progress ``next_seq`` only moves forward, one seq at a
time, and only once every operation arrived whole. Encoded with orjson, ``"v": 1``; a reader
of another version refuses it (PoisonRecordError) rather than guess. ``"stored"`` (the chunk
bytes stored per seq, ``[[seq, bytes], ...]``, seqs holding none left out) came later within
version 1: a reader before it reads past it, and a state written before it reads as none
stored (the chunks arriving after are bounded from there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import orjson

from walstream.core.mutations.wire import Marker, MutationLimits, OpChunk, op_digest, value_digest
from walstream.errors import PoisonRecordError

__all__ = [
    "STATE_VERSION",
    "Conflict",
    "Duplicate",
    "Refused",
    "Slot",
    "Stored",
    "TxnState",
    "decode_state",
    "encode_state",
    "set_digest",
]

STATE_VERSION = 1


class Slot(NamedTuple):
    """One operation as far as it arrived: its identity (``op_digest``), weight, chunk count,
    a bit per chunk received, and the data bytes of the chunks received (at most the value's
    announced size)."""

    digest: str
    weight: int
    chunks: int
    got: int
    stored: int = 0

    @property
    def whole(self) -> bool:
        return self.got == (1 << self.chunks) - 1


@dataclass(frozen=True, slots=True)
class Stored:
    """A new chunk: keep its bytes (``keys.chunk_key``) and the new state."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The chunk (or marker) is one the state holds already: nothing changes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    """A different operation (or marker) for what the state holds: refused, state unchanged."""

    seq: int | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """The chunk breaks the transaction's bounds: refused, state unchanged."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnState:
    """A transaction between its first record and its commit (or its DLQ entry)."""

    namespace: str
    txn_id: str
    #: When the commit agent first saw the transaction (its completion timeout runs from here).
    opened_at_ms: int
    slots: Mapping[int, Slot] = field(default_factory=dict)
    #: The sum of the operations' weights (``Operation.weight``).
    bytes: int = 0
    #: From the first marker: the operation count, when the API accepted it (the write time of
    #: operations without their own), the operation set's digest (None: not given).
    count: int | None = None
    marked_at_ms: int | None = None
    marker_digest: str | None = None
    #: Commit progress: seqs below it are applied.
    next_seq: int = 0
    #: Failed apply attempts since the last progress.
    attempts: int = 0
    #: The wake id of the re-queued marker that drives the commit (0: client markers do), and
    #: how many ids were handed out (ids never repeat).
    wake: int = 0
    wakes: int = 0
    #: Redrives seen (a marker with a higher ``redrive`` resumes a dead-lettered transaction).
    redrive: int = 0
    #: Why it was dead-lettered (held for ``walstream dlq redrive``); None: it is not.
    dead: str | None = None

    @classmethod
    def open(cls, namespace: str, txn_id: str, now_ms: int) -> TxnState:
        """A transaction seen for the first time at ``now_ms``."""
        return cls(namespace=namespace, txn_id=txn_id, opened_at_ms=now_ms)

    def receive(
        self, c: OpChunk, limits: MutationLimits
    ) -> tuple[TxnState, Stored | Duplicate | Conflict | Refused]:
        """Take chunk ``c`` of an operation: the new state and what happened."""
        if c.seq >= limits.operations_max:
            return self, Refused(reason=f"seq {c.seq} is past the limit of {limits.operations_max}")
        if self.count is not None and c.seq >= self.count:
            return self, Refused(reason=f"seq {c.seq} is past the marker's count {self.count}")
        digest = op_digest(c)
        slot = self.slots.get(c.seq)
        if slot is None:
            weight = c.size + len(c.id.encode()) + len(c.table)
            if self.bytes + weight > limits.txn_bytes_max:
                return self, Refused(
                    reason=f"seq {c.seq} brings the transaction to {self.bytes + weight} bytes, "
                    f"over the limit of {limits.txn_bytes_max}"
                )
            slot = Slot(digest, weight, c.chunks, 0)
            new_bytes = self.bytes + weight
        elif slot.digest != digest:
            return self, Conflict(
                seq=c.seq, reason=f"seq {c.seq} holds another operation: a re-send must be equal"
            )
        else:
            new_bytes = self.bytes
        bit = 1 << c.chunk
        if slot.got & bit:
            return self, Duplicate()
        stored = slot.stored + len(c.data)
        if stored > c.size:  # only a record not written by the API: its chunks sum to its size
            return self, Refused(
                reason=f"seq {c.seq} chunk {c.chunk} brings its value's chunks to {stored} "
                f"bytes, over the {c.size} bytes it announced"
            )
        slots = {**self.slots, c.seq: slot._replace(got=slot.got | bit, stored=stored)}
        return replace(self, slots=slots, bytes=new_bytes), Stored()

    def mark(self, m: Marker) -> tuple[TxnState, Stored | Duplicate | Conflict]:
        """Take a completion marker: the first one sets the count; later ones must agree (a
        deadline wake, count 0, tells nothing)."""
        if m.op_count == 0:
            return self, Duplicate()
        if self.count is None:
            beyond = sorted(s for s in self.slots if s >= m.op_count)
            if beyond:
                return self, Conflict(
                    seq=beyond[0], reason=f"count {m.op_count} but seq {beyond[0]} arrived"
                )
            return replace(
                self, count=m.op_count, marked_at_ms=m.at_ms, marker_digest=m.digest
            ), Stored()
        if m.op_count != self.count:
            return self, Conflict(
                seq=None, reason=f"count {m.op_count}, the marker said {self.count}"
            )
        if m.digest is not None and self.marker_digest not in (None, m.digest):
            return self, Conflict(seq=None, reason="another operation set under the same txn id")
        return self, Duplicate()

    def missing(self) -> tuple[int, ...]:
        """Seqs not (wholly) arrived: below the count, or below the highest seq seen before
        the marker came."""
        upto = self.count if self.count is not None else max(self.slots, default=-1) + 1
        return tuple(s for s in range(upto) if s not in self.slots or not self.slots[s].whole)

    def complete(self) -> bool:
        """Whether the marker came and every operation arrived whole."""
        return self.count is not None and not self.missing()

    def done(self) -> bool:
        """Whether every operation is applied."""
        return self.count is not None and self.next_seq >= self.count

    def next_to_apply(self) -> int | None:
        """The seq to apply next (None: not complete, or all applied)."""
        return self.next_seq if self.complete() and not self.done() else None

    def applied(self, seq: int) -> TxnState:
        """The state once ``seq`` is applied: progress moves one step, failed attempts reset.

        Raises:
            ValueError: ``seq`` is not ``next_to_apply()`` (progress only moves forward, in order).
        """
        if seq != self.next_to_apply():
            raise ValueError(f"seq {seq} applied, but {self.next_to_apply()} is next")
        return replace(self, next_seq=seq + 1, attempts=0)

    def set_digest(self) -> str:
        """The digest of the operation set (the seqs' operations in order).

        Raises:
            ValueError: the transaction is not complete.
        """
        if not self.complete():
            raise ValueError("the operation set is not complete")
        assert self.count is not None  # noqa: S101 - complete() says so (for mypy)
        return set_digest([self.slots[s].digest for s in range(self.count)])


def set_digest(op_digests: Sequence[str]) -> str:
    """The digest of an operation set from its operations' ``op_digest`` in seq order."""
    return value_digest(orjson.dumps(list(op_digests)))


def encode_state(s: TxnState) -> bytes:
    """The table value of a state (its changelog record)."""
    obj: dict[str, Any] = {
        "v": STATE_VERSION,
        "ns": s.namespace,
        "txn": s.txn_id,
        "opened": s.opened_at_ms,
        "slots": [[q, *slot[:3], f"{slot.got:x}"] for q, slot in sorted(s.slots.items())],
        "bytes": s.bytes,
        "next": s.next_seq,
        "attempts": s.attempts,
        "wake": s.wake,
        "wakes": s.wakes,
        "redrive": s.redrive,
    }
    stored = [[q, slot.stored] for q, slot in sorted(s.slots.items()) if slot.stored]
    if stored:
        obj["stored"] = stored
    for name, value in (
        ("count", s.count),
        ("marked", s.marked_at_ms),
        ("mdigest", s.marker_digest),
        ("dead", s.dead),
    ):
        if value is not None:
            obj[name] = value
    return orjson.dumps(obj)


def decode_state(raw: bytes) -> TxnState:
    """A state from its table value.

    Raises:
        PoisonRecordError: undecodable, another version, or a field missing or malformed.
    """
    try:
        obj = orjson.loads(raw)
        if not isinstance(obj, dict) or obj.get("v") != STATE_VERSION:
            raise PoisonRecordError(f"mutation state: not a version {STATE_VERSION} state")
        stored = {int(q): int(n) for q, n in obj.get("stored", ())}
        slots = {
            int(q): Slot(str(d), int(w), int(n), int(got, 16), stored.get(int(q), 0))
            for q, d, w, n, got in obj["slots"]
        }
        return TxnState(
            namespace=str(obj["ns"]),
            txn_id=str(obj["txn"]),
            opened_at_ms=int(obj["opened"]),
            slots=slots,
            bytes=int(obj["bytes"]),
            count=obj.get("count"),
            marked_at_ms=obj.get("marked"),
            marker_digest=obj.get("mdigest"),
            next_seq=int(obj["next"]),
            attempts=int(obj["attempts"]),
            wake=int(obj["wake"]),
            wakes=int(obj["wakes"]),
            redrive=int(obj["redrive"]),
            dead=obj.get("dead"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PoisonRecordError(f"mutation state: malformed ({exc})") from None
