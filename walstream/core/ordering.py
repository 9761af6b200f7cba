"""Per-key ordering (a namespace's ``ordering = "key"``): which record of a key may go now (pure).

Strict per key, non-blocking for every other key. While a key's *head* record waits in retry (or
delay), later records with that key wait behind it; records with other keys flow on. A key's state
holds references to the waiting records (where they are on the log), never their payloads: the
worker keeps it in a Faust table keyed by ordering key, so it survives restarts and rebalances,
and re-reads a released record from the log by its reference.

Transitions, each a pure function of the key's state (``None``: the key is not blocked):

* a record arrives: it goes now if the key is free or it is the head coming back (from retry, or
  redriven); otherwise it is parked behind the head;
* the record being delivered fails transiently: the key is blocked with it as head;
* the head is settled (delivered, or dead-lettered with ``on_dlq = "release"``): the first parked
  record becomes the head, handed back for delivery; the key is free once nothing is parked;
* the head is dead-lettered with ``on_dlq = "hold"``: the key stays blocked until its DLQ entry is
  redriven (the head comes back) or discarded (settled then).

The worker's ordering gate (``walstream.agents.ordering_gate``) applies these to its table
(``walstream.agents.ordering``) and hands a released record over with a marker on the retry topic
(its format: ``walstream.core.outbox.markers``); this module decides, and does no I/O.

``KeyState`` is the whole of a key's state at once: what these transitions are specified on, and
the table form of earlier releases (one value per key, holding every parked reference, rewritten
whole on each park: O(n^2) bytes). The table now keeps a small ``KeyHead`` per blocked key (its
head and counters) and each parked reference as an entry of its own, numbered ``first`` ..
``next - 1``; the ``*_head`` functions below are the same transitions over that form, so a park,
a release and a settle each cost O(1) whatever is parked. ``admit`` bounds what waits behind one
key (``max_parked``): past it a record is not parked but dead-lettered, naming the head (see
``Overflow``), so nothing is lost and the key's state stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

__all__ = [
    "AlreadyParked",
    "Free",
    "Go",
    "KeyHead",
    "KeyState",
    "OnDlq",
    "Overflow",
    "Park",
    "ParkAt",
    "RecordRef",
    "ReleaseNext",
    "admit",
    "arrive",
    "blocked_by_failure",
    "dead_lettered",
    "dead_lettered_head",
    "hand_to",
    "head_from_json",
    "head_to_json",
    "hold",
    "settled",
    "settled_head",
    "skip_first",
    "state_from_json",
    "state_to_json",
]


class OnDlq(Enum):
    """What dead-lettering a key's head does to the records behind it."""

    RELEASE = "release"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where a parked record is on the log."""

    id: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class KeyState:
    """A blocked key: its head record and the records parked behind it, oldest first."""

    head: str
    since_ms: int
    waiting: tuple[RecordRef, ...] = ()
    #: the head was dead-lettered with on_dlq = hold: nothing moves until it is redriven/discarded
    held: bool = False

    @property
    def behind(self) -> tuple[str, ...]:
        """Ids of the parked records (a DLQ entry for the head names them)."""
        return tuple(ref.id for ref in self.waiting)


@dataclass(frozen=True, slots=True)
class Go:
    """Deliver the record now."""


@dataclass(frozen=True, slots=True)
class Park:
    """The key is blocked: the record waits behind the head (the new state records it)."""

    state: KeyState


def arrive(state: KeyState | None, ref: RecordRef) -> Go | Park:
    """A record of the key reached the deliver or retry agent."""
    if state is None or ref.id == state.head:
        return Go()  # a free key, or the head itself back from retry or a redrive
    if any(parked.id == ref.id for parked in state.waiting):
        return Park(state)  # read again (a restart re-reads what was in flight): parked once
    return Park(replace(state, waiting=(*state.waiting, ref)))


def blocked_by_failure(state: KeyState | None, record_id: str, now_ms: int) -> KeyState:
    """The record being delivered will be retried (or waits for its time): the key waits on it.

    Another head already (only a stale copy replayed after a crash can be delivered while its
    key is blocked): the state stays; the record's retry copy is parked behind that head when it
    comes back."""
    if state is None:
        return KeyState(head=record_id, since_ms=now_ms)
    if state.head != record_id:
        return state
    return replace(state, held=False)  # a redriven head failing again waits like any head


def settled(
    state: KeyState | None, record_id: str, now_ms: int
) -> tuple[KeyState | None, RecordRef | None]:
    """The record is done with (delivered, discarded from the DLQ, or dead with on_dlq release).

    Returns the key's new state and the parked record to deliver next, if any (it is the head now,
    so the key stays blocked until it too is settled)."""
    if state is None or state.head != record_id:
        return state, None  # not the head (the key was free, or this is a stale copy)
    if not state.waiting:
        return None, None
    first, *rest = state.waiting
    return KeyState(head=first.id, since_ms=now_ms, waiting=tuple(rest)), first


def dead_lettered(
    state: KeyState | None, record_id: str, on_dlq: OnDlq, now_ms: int
) -> tuple[KeyState | None, RecordRef | None]:
    """The record went to the DLQ. With ``release`` it is settled; with ``hold`` its key keeps
    waiting (and keeps its place) until the entry is redriven or discarded."""
    if on_dlq is OnDlq.RELEASE:
        return settled(state, record_id, now_ms)
    if state is None:
        return KeyState(head=record_id, since_ms=now_ms, held=True), None
    if state.head != record_id:
        return state, None
    return replace(state, held=True), None


def state_to_json(state: KeyState) -> dict[str, object]:
    """The table form of a key's state."""
    return {
        "head": state.head,
        "since_ms": state.since_ms,
        "held": state.held,
        "waiting": [[r.id, r.topic, r.partition, r.offset] for r in state.waiting],
    }


def state_from_json(obj: dict[str, object]) -> KeyState:
    """Inverse of ``state_to_json``."""
    waiting = obj.get("waiting") or []
    if not isinstance(waiting, list):
        raise ValueError(f"waiting must be a list, not {waiting!r}")
    return KeyState(
        head=str(obj["head"]),
        since_ms=int(obj["since_ms"]),  # type: ignore[call-overload]
        held=bool(obj.get("held", False)),
        waiting=tuple(RecordRef(str(i), str(t), int(p), int(o)) for i, t, p, o in waiting),
    )


# -- the table form: a head record per blocked key, one entry per parked record ----------------

#: Topic partitions whose last parked offset a head remembers (a key's records come from its
#: log and retry topics, one partition each; more only after a namespace's topics were renamed).
TAILS_MAX = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyHead:
    """A blocked key as the table keeps it: its head, and counters over the records parked
    behind it (entries ``first`` .. ``next - 1``, oldest first, each stored on its own)."""

    head: str
    since_ms: int
    held: bool = False
    first: int = 0
    next: int = 0
    #: (topic, partition, offset) of the last record parked from each topic partition. A key's
    #: records of one topic partition are handled one at a time in offset order, so one at or
    #: below it was handled already: read again after a crash, it is not parked twice.
    tails: tuple[tuple[str, int, int], ...] = ()
    #: Set when the head was handed on inline by the release marker of record ``via`` (the
    #: handler of one marker drains several parked records): a marker read again after a crash
    #: then resumes with this head, read back from ``ref``.
    via: str | None = None
    ref: RecordRef | None = None

    @property
    def parked(self) -> int:
        """How many records wait behind the head."""
        return self.next - self.first

    def parked_already(self, ref: RecordRef) -> bool:
        return any(
            t == ref.topic and p == ref.partition and ref.offset <= o for t, p, o in self.tails
        )


@dataclass(frozen=True, slots=True)
class ParkAt:
    """Park the record as entry ``seq``; then store ``head`` (the entry first: a crash between
    the two writes parks it again at the same number)."""

    seq: int
    head: KeyHead


@dataclass(frozen=True, slots=True)
class AlreadyParked:
    """The record was parked (or handed on) before: read again after a crash."""


@dataclass(frozen=True, slots=True)
class Overflow:
    """``max_parked`` records wait behind the head already: the record is dead-lettered (its
    entry names the head), and ``head`` notes it so a re-read does not dead-letter it twice."""

    head: KeyHead


@dataclass(frozen=True, slots=True)
class Free:
    """The head was the last of its key: the key is free (its head record goes)."""


@dataclass(frozen=True, slots=True)
class ReleaseNext:
    """The head is done: parked entry ``seq`` goes next (``hand_to`` once its marker is out)."""

    seq: int


def _tails(head: KeyHead, ref: RecordRef) -> tuple[tuple[str, int, int], ...]:
    kept = [t for t in head.tails if (t[0], t[1]) != (ref.topic, ref.partition)]
    return (*kept[-(TAILS_MAX - 1) :], (ref.topic, ref.partition, ref.offset))


def admit(
    head: KeyHead | None, ref: RecordRef, *, max_parked: int
) -> Go | ParkAt | AlreadyParked | Overflow:
    """A record of the key reached the deliver or retry agent (``arrive`` on the table form)."""
    if head is None or ref.id == head.head:
        return Go()
    if head.parked_already(ref):
        return AlreadyParked()
    if head.parked >= max_parked:
        return Overflow(replace(head, tails=_tails(head, ref)))
    return ParkAt(head.next, replace(head, next=head.next + 1, tails=_tails(head, ref)))


def hold(head: KeyHead | None, record_id: str, now_ms: int) -> KeyHead | None:
    """``blocked_by_failure`` on the table form: a copy of ``record_id`` goes to wait (retry,
    delay, deferral), so its key waits on it, written before the copy is sent. A head already
    waiting stays as it is; another head stays too (a stale copy's retry is parked behind it)."""
    if head is None:
        return KeyHead(head=record_id, since_ms=now_ms)
    if head.head != record_id:
        return head
    return replace(head, held=False) if head.held else head


def settled_head(head: KeyHead | None, record_id: str) -> KeyHead | Free | ReleaseNext | None:
    """``settled`` on the table form: None when ``record_id`` does not head the key (nothing
    changes), else what follows it."""
    if head is None or head.head != record_id:
        return None
    if head.parked == 0:
        return Free()
    return ReleaseNext(head.first)


def dead_lettered_head(
    head: KeyHead | None, record_id: str, on_dlq: OnDlq, now_ms: int
) -> KeyHead | Free | ReleaseNext | None:
    """``dead_lettered`` on the table form (a ``KeyHead`` result: the key is held)."""
    if on_dlq is OnDlq.RELEASE:
        return settled_head(head, record_id)
    if head is None:
        return KeyHead(head=record_id, since_ms=now_ms, held=True)
    if head.head != record_id:
        return None
    return replace(head, held=True, via=None) if not head.held else None


def hand_to(
    head: KeyHead, seq: int, ref: RecordRef, now_ms: int, *, via: str | None = None
) -> KeyHead:
    """Entry ``seq`` (``ref``) heads the key now: its release marker is out, or (``via``) the
    handler of marker ``via`` delivers it inline."""
    return replace(
        head,
        head=ref.id,
        since_ms=now_ms,
        held=False,
        first=seq + 1,
        via=via,
        ref=ref if via is not None else None,
    )


def skip_first(head: KeyHead) -> KeyHead:
    """Entry ``first`` cannot be found (it never should): go on with the next."""
    return replace(head, first=head.first + 1)


def head_to_json(head: KeyHead) -> dict[str, object]:
    """The table form of a key's head record."""
    out: dict[str, object] = {
        "v": 2,
        "head": head.head,
        "since_ms": head.since_ms,
        "held": head.held,
        "first": head.first,
        "next": head.next,
        "tails": [list(t) for t in head.tails],
    }
    if head.via is not None and head.ref is not None:
        out["via"] = head.via
        out["ref"] = [head.ref.topic, head.ref.partition, head.ref.offset]
    return out


def head_from_json(obj: dict[str, object]) -> KeyHead:
    """Inverse of ``head_to_json``. Raises ValueError for the old whole-state form (a
    ``waiting`` list: read it with ``state_from_json``) or a malformed value."""
    if "waiting" in obj or obj.get("v") != 2:
        raise ValueError("not a head record")
    tails: Any = obj.get("tails") or []
    via, where = obj.get("via"), obj.get("ref")
    ref = None
    if via is not None and isinstance(where, list):
        topic, partition, offset = where
        ref = RecordRef(str(obj["head"]), str(topic), int(partition), int(offset))
    return KeyHead(
        head=str(obj["head"]),
        since_ms=int(obj["since_ms"]),  # type: ignore[call-overload]
        held=bool(obj.get("held", False)),
        first=int(obj["first"]),  # type: ignore[call-overload]
        next=int(obj["next"]),  # type: ignore[call-overload]
        tails=tuple((str(t), int(p), int(o)) for t, p, o in tails),
        via=None if via is None else str(via),
        ref=ref,
    )
