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

The worker (``walstream.agents.ordering``) applies these to its table and hands a released
record over with a marker on the retry topic; this module decides, and does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

__all__ = [
    "Go",
    "KeyState",
    "OnDlq",
    "Park",
    "RecordRef",
    "arrive",
    "blocked_by_failure",
    "dead_lettered",
    "settled",
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
