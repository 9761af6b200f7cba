"""Commit decisions: what a transaction's records make the commit agent do (pure).

* ``on_chunk``: an operation's chunk is stored (or is a duplicate, a conflict, refused); a
  transaction already committed ignores it; the first record of a transaction also schedules
  its deadline (a wake marker due after the completion timeout), so a transaction whose marker
  never comes is dead-lettered too instead of staying in the table.
* ``on_complete``: a chunk that completes a transaction whose marker waits re-queued sends a
  wake due now (the commit does not wait out the backoff).
* ``on_marker``: complete: ``Apply`` from the first unapplied seq, when the operations held
  are the set the marker names (a MutateItems' digest; else ``DeadLetter`` naming the
  mismatch); incomplete within the completion timeout: ``Requeue`` (a wake marker through the
  delay tiers, its delay the namespace's backoff, never past the timeout); past it:
  ``DeadLetter`` naming the missing seqs. Committed already (a tombstone):
  ``AlreadyCommitted``, or ``Reject`` when the marker names another operation set or another
  operation count.
* ``after_failure``: an apply failed: ``Requeue`` with backoff (walstream.core.retry.decide,
  attempts counted since the last progress) or ``DeadLetter`` with the progress.
* ``expiry`` / ``expired``: a dead-lettered transaction's rows are dropped by a wake of its own
  due when the idempotency window ends, unless a redrive revived it (the table stays
  O(open transactions)).
* ``leftover``: a state beside its tombstone is a commit's leftover (a worker killed between
  the tombstone and the deletes), deleted when the transaction's next record comes.
* ``committed``: the tombstone left in the state's place, and the ``Forget`` record that drops
  it when the idempotency window ends.
* ``live_tombstone``: a tombstone counts only while its window lasts, by the clock: once it
  ended the txn id is free again, whether its ``Forget`` was handled yet or not (the delay
  stage behind, down or rebalancing); ``on_chunk`` and ``on_marker`` read an ended one as none,
  and a new transaction's state opened beside it is no commit's leftover.

Only one re-queued marker drives a transaction: each ``Requeue`` hands out a new wake id and
the state names it; a re-queued marker whose id is not the state's is ``Ignore``\\ d, and so is
a client's marker while a re-queued one is on its way. The marker being handled when a worker
dies is read again and still drives (its id is still the state's), so a resume needs no other
record.

A dead-lettered transaction is driven by a redriven marker only; a client's marker arriving
then is ``Ignore``\\ d but what it tells is kept (count, write time, digest), as late operations
are: the DLQ entry of a transaction dead-lettered before its marker came holds count 0, and its
redrive (``walstream.core.dlq.mutations.redrive_marker``: count 0, wake 0, redrive >= 1) revives
the state, which commits with the count it now holds.

A wake (wake != 0) that finds no state is ``Ignore``\\ d whatever its redrive: its transaction is
gone (its expiry dropped it, read again; or ``dlq discard`` sent the expiry at once and the
agent's own copy comes later), and opening a state for it would make a ghost (a count and no
operation, dead-lettered again). Only a client's or a redriven marker (wake 0) opens one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import orjson

from walstream.core.backoff import next_delay_ms
from walstream.core.mutations.state import (
    Conflict,
    Duplicate,
    Refused,
    Stored,
    TxnState,
)
from walstream.core.mutations.wire import (
    IDEMPOTENCY_WINDOW_MIN_MS,
    Forget,
    Marker,
    MutationLimits,
    OpChunk,
)
from walstream.core.retry import DeadLetter as RetryDeadLetter
from walstream.core.retry import Failure, RetryPolicy, decide
from walstream.errors import PoisonRecordError

__all__ = [
    "SET_MISMATCH",
    "AlreadyCommitted",
    "Apply",
    "CommitPolicy",
    "DeadLetter",
    "Ignore",
    "Reject",
    "Requeue",
    "Tombstone",
    "after_failure",
    "committed",
    "decode_tombstone",
    "encode_tombstone",
    "expired",
    "expiry",
    "leftover",
    "live_tombstone",
    "on_chunk",
    "on_complete",
    "on_forget",
    "on_marker",
    "wake_marker",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitPolicy:
    """A namespace's rules for its transactions: bounds and timeouts, and its retry policy
    (backoff and max attempts) for waits and failed applies."""

    limits: MutationLimits = field(default_factory=MutationLimits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, slots=True, kw_only=True)
class Apply:
    """Apply seqs ``from_seq``..count-1 in order (from_seq == count: all applied, commit)."""

    from_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Requeue:
    """Send the wake marker ``wake`` back through the delay tiers, due in ``delay_ms``."""

    delay_ms: int
    wake: int
    reason: str


#: ``DeadLetter.kind`` of a transaction whose operations are not the set its marker names.
SET_MISMATCH = "set_mismatch"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """Dead-letter the transaction (its state is kept for ``walstream dlq redrive``)."""

    reason: str
    missing: tuple[int, ...] = ()
    progress: int = 0
    #: Why, when a DLQ entry's error class must tell it: ``set_mismatch`` (the operations held
    #: are not the set its marker names: a redrive finds the same mismatch, so it is not
    #: redrivable, only discarded). None: incomplete, or its apply gave up.
    kind: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlreadyCommitted:
    """The transaction committed at ``committed_at_ms``: nothing to do."""

    committed_at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ignore:
    """Nothing to do with this record (why: for the log at debug level)."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """This record alone goes to the DLQ; the transaction is untouched."""

    reason: str


class Tombstone(NamedTuple):
    """A committed transaction, remembered for the idempotency window."""

    committed_at_ms: int
    #: ``TxnState.set_digest``: a re-sent MutateItems with another set is not "the same".
    digest: str
    op_count: int


def encode_tombstone(t: Tombstone) -> bytes:
    """The table value of a tombstone."""
    return orjson.dumps({"v": 1, "at": t.committed_at_ms, "digest": t.digest, "count": t.op_count})


def decode_tombstone(raw: bytes) -> Tombstone:
    """A tombstone from its table value.

    Raises:
        PoisonRecordError: undecodable or malformed.
    """
    try:
        obj = orjson.loads(raw)
        if obj["v"] != 1:
            raise PoisonRecordError(f"mutation tombstone: version {obj['v']!r}")
        return Tombstone(int(obj["at"]), str(obj["digest"]), int(obj["count"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PoisonRecordError(f"mutation tombstone: malformed ({exc})") from None


def _requeue(state: TxnState, delay_ms: int, reason: str) -> tuple[TxnState, Requeue]:
    wake = state.wakes + 1
    return replace(state, wake=wake, wakes=wake), Requeue(
        delay_ms=delay_ms, wake=wake, reason=reason
    )


def on_chunk(
    state: TxnState | None,
    tombstone: Tombstone | None,
    chunk: OpChunk,
    policy: CommitPolicy,
    *,
    now_ms: int,
) -> tuple[
    TxnState | None, Stored | Duplicate | Conflict | Refused | AlreadyCommitted, Requeue | None
]:
    """An operation's chunk arrived: (new state, what happened, the deadline wake to send when
    this chunk opened the transaction).

    A stored chunk's bytes go to ``keys.chunk_key``; a conflict or a refusal goes to the DLQ.
    A tombstone whose window ended (``live_tombstone``) is none: the chunk opens a transaction.
    """
    tombstone = live_tombstone(tombstone, policy.limits, now_ms=now_ms)
    if tombstone is not None:
        return state, AlreadyCommitted(committed_at_ms=tombstone.committed_at_ms), None
    deadline = None
    if state is None:
        state = TxnState.open(chunk.namespace, chunk.txn_id, now_ms)
        timeout = policy.limits.completion_timeout_ms
        state, deadline = _requeue(state, timeout, f"deadline of {timeout} ms")
    new, outcome = state.receive(chunk, policy.limits)
    if deadline is not None and not isinstance(outcome, Stored):
        return None, outcome, None  # nothing was kept: no transaction opened
    return new, outcome, deadline


def on_complete(before: TxnState, after: TxnState) -> tuple[TxnState, Requeue | None]:
    """A stored chunk took ``before`` to ``after``: when it completed a transaction whose marker
    came and waits re-queued (its operations were missing), a wake due now (delay 0: straight to
    the markers topic) that supersedes the waiting one, so the commit does not wait out the
    backoff. None: nothing to send (not complete, complete already, or dead-lettered: only a
    redrive resumes it)."""
    if before.complete() or not after.complete() or after.dead is not None or not after.wake:
        return after, None
    return _requeue(after, 0, "complete: its last operation arrived")


def on_marker(
    state: TxnState | None,
    tombstone: Tombstone | None,
    marker: Marker,
    policy: CommitPolicy,
    *,
    now_ms: int,
    rand: float,
) -> tuple[TxnState | None, Apply | Requeue | DeadLetter | AlreadyCommitted | Ignore | Reject]:
    """A completion marker (a client's, a redriven or a re-queued one) arrived.

    Args:
        state: the transaction's state (None: no record of it arrived yet).
        tombstone: its tombstone (None: not committed within the idempotency window; one whose
            window ended by ``now_ms`` is read as None, ``live_tombstone``).
        marker: the marker.
        policy: the namespace's rules.
        now_ms: the time now.
        rand: a number in [0, 1) for the backoff's jitter.

    A complete transaction whose marker names its operation set (a MutateItems' digest) is
    applied only if the operations it holds make that set. Otherwise a seq holds another
    request's operation: a first MutateItems partly landed (answered FALSE or UNKNOWN) and a
    retry with other operations under the same txn id (answered TRUE; its clashing operations
    dead-lettered one by one as conflicts) would commit a mix neither request sent. The
    transaction is then dead-lettered naming the mismatch, not its marker rejected alone: the
    retry was answered durable TRUE, so its user expects it applied or in the DLQ as a
    transaction at once (its status dead-lettered, the reason on the entry), never applied
    in part or mixed; a rejected marker would leave it open, unmarked, until its deadline
    dead-lettered it as "no completion marker", which names the wrong cause. A redrive finds
    the same mismatch (a seq's operation is never replaced); the entry is discarded.

    Returns:
        The new state (None: none) and the decision.
    """
    tombstone = live_tombstone(tombstone, policy.limits, now_ms=now_ms)
    if tombstone is not None:
        other = None
        if marker.digest is not None and marker.digest != tombstone.digest:
            other = "another operation set"
        elif marker.op_count and marker.op_count != tombstone.op_count:
            # a client's marker names no set: its count alone tells another transaction
            # (count 0, a wake of a transaction that had no count yet, tells nothing)
            other = f"{tombstone.op_count} operations, not {marker.op_count}"
        if other is not None:
            return state, Reject(
                reason=f"txn {marker.txn_id} committed at {tombstone.committed_at_ms} with "
                f"{other}: a txn id is not reused within the idempotency window"
            )
        return state, AlreadyCommitted(committed_at_ms=tombstone.committed_at_ms)
    if state is None:
        if marker.wake:  # its transaction is gone (expired, discarded): whatever its redrive
            return state, Ignore(reason=f"wake {marker.wake} of no open transaction")
        state = TxnState.open(marker.namespace, marker.txn_id, now_ms)
    revive = marker.redrive > state.redrive  # a redriven marker drives, whatever its wake
    marked, outcome = state.mark(marker)
    if isinstance(outcome, Conflict):
        return state, Reject(reason=outcome.reason)
    if not revive:
        if state.dead is not None:
            # a late marker's count, time and digest are kept (as on_chunk keeps late
            # operations): a redrive of an entry written before it came (count 0) then commits
            return marked, Ignore(reason=f"dead-lettered ({state.dead}): a redrive resumes it")
        if marker.wake and marker.wake != state.wake:
            return state, Ignore(reason=f"wake {marker.wake} superseded by {state.wake}")
        if not marker.wake and state.count is not None and state.wake:
            return state, Ignore(reason=f"re-queued marker {state.wake} drives the commit")
    state = marked
    if revive:
        state = replace(state, redrive=marker.redrive, dead=None, attempts=0, opened_at_ms=now_ms)
    if revive or not marker.wake:
        # this marker drives (read again after a crash, it still does); others are superseded
        state = replace(state, wake=marker.wake)
    if state.complete():
        held = state.set_digest()
        if state.marker_digest is not None and held != state.marker_digest:
            # never a mix of two requests' operations: nothing applied, the transaction (its
            # state kept, as the status page shows it) dead-lettered naming why
            reason = (
                f"operation set mismatch: the marker names set {state.marker_digest}, the "
                f"operations held make set {held} (a seq holds another request's operation "
                "under this txn id): nothing applied"
            )
            return replace(state, dead=reason), DeadLetter(
                reason=reason, progress=state.next_seq, kind=SET_MISMATCH
            )
        return state, Apply(from_seq=state.next_seq)
    missing = state.missing()
    timeout = policy.limits.completion_timeout_ms
    waited = now_ms - state.opened_at_ms
    if waited >= timeout:
        what = "no completion marker" if state.count is None else "incomplete"
        reason = f"{what} after {waited} ms (timeout {timeout} ms): missing seqs {list(missing)}"
        return replace(state, dead=reason), DeadLetter(
            reason=reason, missing=missing, progress=state.next_seq
        )
    delay = min(next_delay_ms(policy.retry.backoff, state.wakes, rand), timeout - waited)
    return _requeue(state, delay, f"waiting for seqs {list(missing)}")


def after_failure(
    state: TxnState, failure: Failure, policy: CommitPolicy, *, now_ms: int, rand: float
) -> tuple[TxnState, Requeue | DeadLetter]:
    """Applying ``state.next_seq`` failed: re-queue the marker with backoff, or give up.

    A permanent failure, a non-retryable class or the namespace's max attempts (counted since
    the last progress) dead-letter the transaction with its progress; its state is kept, and a
    redrive resumes from the first unapplied seq.
    """
    decision = decide(
        policy.retry, attempt=state.attempts, failure=failure, now_ms=now_ms,
        first_attempt_ms=now_ms, rand=rand,
    )  # fmt: skip
    if isinstance(decision, RetryDeadLetter):
        reason = f"seq {state.next_seq} of {state.count}: {decision.reason}"
        return replace(state, dead=reason), DeadLetter(reason=reason, progress=state.next_seq)
    failed = replace(state, attempts=state.attempts + 1)
    return _requeue(failed, decision.delay_ms, f"seq {state.next_seq} failed: {failure.message}")


def committed(
    state: TxnState, limits: MutationLimits, *, now_ms: int
) -> tuple[Tombstone, Forget, int]:
    """Every operation applied: (the tombstone to write in the state's place, the ``Forget``
    record to send through the delay tiers, when it is due: the idempotency window's end).

    Raises:
        ValueError: not every operation is applied.
    """
    if not state.done():
        raise ValueError(f"{state.next_seq} of {state.count} operations applied")
    assert state.count is not None  # noqa: S101 - done() says so (for mypy)
    tomb = Tombstone(now_ms, state.set_digest(), state.count)
    forget = Forget(state.namespace, state.txn_id, now_ms)
    return tomb, forget, now_ms + limits.idempotency_window_ms


def wake_marker(state: TxnState, requeue: Requeue) -> Marker:
    """The marker a ``Requeue`` sends back through the delay tiers (a deadline wake before any
    marker came carries count 0 and the time the transaction opened)."""
    return Marker(
        namespace=state.namespace,
        txn_id=state.txn_id,
        op_count=state.count or 0,
        at_ms=state.marked_at_ms or state.opened_at_ms,
        wake=requeue.wake,
        redrive=state.redrive,
    )


def leftover(state: TxnState | None, tombstone: Tombstone | None) -> bool:
    """Whether ``state`` is what a commit left behind: a state beside its transaction's
    tombstone (the commit writes the tombstone, then deletes the chunk rows and the state; a
    worker killed in between leaves them). Its chunk rows and state are deleted before the
    record at hand is handled (as if the state were gone).

    A state opened once the tombstone's window ended (a txn id reused after it, its
    predecessor's ``Forget`` not handled yet: ``live_tombstone``) is not: it opened at least the
    shortest window (``IDEMPOTENCY_WINDOW_MIN_MS``, 24 h) after that commit, a leftover before
    it (opened or revived before its commit; clocks of workers never 24 h apart)."""
    return (
        state is not None
        and tombstone is not None
        and state.opened_at_ms < tombstone.committed_at_ms + IDEMPOTENCY_WINDOW_MIN_MS
    )


def live_tombstone(
    tombstone: Tombstone | None, limits: MutationLimits, *, now_ms: int
) -> Tombstone | None:
    """``tombstone`` while its idempotency window lasts; None once it ended (``committed_at_ms``
    + ``idempotency_window_ms`` <= ``now_ms``): the txn id is free again, whether the
    ``Forget`` that drops the row was handled yet or not. The ended row may stay until that
    ``Forget`` comes (``on_forget`` drops only it, never a newer tombstone of the id)."""
    if tombstone is None or tombstone.committed_at_ms + limits.idempotency_window_ms <= now_ms:
        return None
    return tombstone


def expiry(state: TxnState, limits: MutationLimits) -> tuple[TxnState, Requeue]:
    """A dead-lettered transaction's expiry: a wake of its own, due when the idempotency window
    ends, that drops its rows (``expired``) unless a redrive revived it meanwhile (a revived
    state names another wake). Until then ``walstream dlq redrive`` resumes it; after, a
    redriven marker finds no operations (they are dead-lettered again as missing)."""
    window = limits.idempotency_window_ms
    return _requeue(state, window, f"expiry of the dead-lettered state after {window} ms")


def expired(state: TxnState | None, marker: Marker) -> bool:
    """Whether ``marker`` is ``state``'s expiry wake (``expiry``): the state is still the
    dead-lettered one it was sent for (same wake id, same redrive count)."""
    return (
        state is not None
        and state.dead is not None
        and marker.wake != 0
        and (marker.wake, marker.redrive) == (state.wake, state.redrive)
    )


def on_forget(tombstone: Tombstone | None, forget: Forget) -> bool:
    """Whether ``forget`` drops the tombstone: only the one it was sent for (a txn id reused
    after its window has a newer tombstone, which its own ``Forget`` drops)."""
    return tombstone is not None and tombstone.committed_at_ms == forget.committed_at_ms
