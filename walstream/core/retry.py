"""Retry decisions: retry later (when) or dead-letter (why), for one failed delivery attempt."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from walstream.core.backoff import next_delay_ms
from walstream.namespaces.config import BackoffPolicy
from walstream.records import AttemptError

__all__ = [
    "HISTORY_MAX_BYTES",
    "MESSAGE_MAX",
    "DeadLetter",
    "Failure",
    "Retry",
    "RetryPolicy",
    "bound_history",
    "decide",
    "history_bytes",
    "may_defer",
]

#: Default bound of a record's history, in encoded bytes (WALSTREAM_HISTORY_MAX_BYTES).
HISTORY_MAX_BYTES = 16 * 1024
#: Characters kept of an error message / an error class in a history entry.
MESSAGE_MAX = 500
CLASS_MAX = 100
#: An entry's encoded bytes besides its texts and numbers: braces, quoted keys, colons, commas
#: (``{"at_ms":..,"attempt":..,"error_class":..,"message":..}``), less the two brackets and the
#: comma of the array its texts are measured in.
_ENTRY_FRAME = len('{"at_ms":,"attempt":,"error_class":,"message":}') - len("[,]")


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """How a delivery attempt failed, as the target classified it."""

    error_class: str
    message: str
    retriable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """A namespace's retry rules."""

    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    max_attempts: int = 10
    #: Error classes never retried, whatever the target said.
    non_retryable: frozenset[str] = frozenset()
    #: Total time from the first attempt after which the record is dead-lettered (None: no limit).
    budget_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Try again: as attempt ``attempt`` (0-based), not before ``not_before_ms``."""

    attempt: int
    delay_ms: int
    not_before_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """Give up: the record goes to the namespace's DLQ with this reason."""

    reason: str


def decide(
    policy: RetryPolicy,
    *,
    attempt: int,
    failure: Failure,
    now_ms: int,
    first_attempt_ms: int,
    rand: float,
) -> Retry | DeadLetter:
    """Decide what follows failed attempt ``attempt`` (0-based) of a record.

    Args:
        policy: the namespace's retry rules.
        attempt: the 0-based number of the attempt that failed.
        failure: the classified error.
        now_ms: the current time.
        first_attempt_ms: when the record's first attempt ran (for the time budget).
        rand: a number in [0, 1) for the jitter.
    """
    label = f"{failure.error_class}: {failure.message}"
    if not failure.retriable:
        return DeadLetter(reason=f"permanent error: {label}")
    if failure.error_class in policy.non_retryable:
        return DeadLetter(reason=f"non-retryable error class: {label}")
    if attempt + 1 >= policy.max_attempts:
        return DeadLetter(reason=f"gave up after {attempt + 1} attempts: {label}")
    delay = next_delay_ms(policy.backoff, attempt, rand)
    not_before = now_ms + delay
    if policy.budget_ms is not None and not_before - first_attempt_ms > policy.budget_ms:
        return DeadLetter(reason=f"retry budget of {policy.budget_ms} ms spent: {label}")
    return Retry(attempt=attempt + 1, delay_ms=delay, not_before_ms=not_before)


def may_defer(
    policy: RetryPolicy, *, attempt: int, until_ms: int, first_attempt_ms: int
) -> DeadLetter | None:
    """Whether a record may wait until ``until_ms`` for its target's circuit breaker to close.

    A deferral spends no attempt, but it spends time: the record is dead-lettered when its
    attempts are used up already (the namespace's limit may have been lowered) or when waiting
    that long would overrun its retry budget, counted from ``first_attempt_ms``.
    """
    if attempt >= policy.max_attempts:
        return DeadLetter(
            reason=f"gave up after {attempt} attempts: target unavailable (circuit breaker open)"
        )
    if policy.budget_ms is not None and until_ms - first_attempt_ms > policy.budget_ms:
        return DeadLetter(
            reason=f"retry budget of {policy.budget_ms} ms spent: "
            "target unavailable (circuit breaker open)"
        )
    return None


def history_entry(at_ms: int, attempt: int, failure: Failure) -> AttemptError:
    """A history entry for a failed attempt, its texts cut to a fixed length."""
    return AttemptError(
        at_ms, attempt, failure.error_class[:CLASS_MAX], failure.message[:MESSAGE_MAX]
    )


def _entry_bytes(entry: AttemptError) -> int:
    at_ms, attempt, error_class, message = entry
    texts = len(orjson.dumps((error_class, message)))  # exact, escapes included
    return texts + _ENTRY_FRAME + len(str(at_ms)) + len(str(attempt))


def history_bytes(history: tuple[AttemptError, ...]) -> int:
    """Bytes ``history`` takes in an encoded envelope (its JSON array of objects)."""
    if not history:
        return 0
    return sum(map(_entry_bytes, history)) + len(history) + 1  # commas and brackets


def bound_history(history: tuple[AttemptError, ...], max_bytes: int) -> tuple[AttemptError, ...]:
    """``history`` cut to at most ``max_bytes`` encoded: the first entry and the latest ones.

    The first failure often says most about why a record could never be delivered, the latest
    ones what happens now; the middle goes. An entry alone over the bound is dropped too (it
    cannot be, with messages cut to MESSAGE_MAX characters and a bound of a few KiB).
    """
    if history_bytes(history) <= max_bytes:
        return history
    budget = max_bytes - 2  # the array's brackets
    first = history[0]
    first_cost = _entry_bytes(first) + 1
    head: tuple[AttemptError, ...] = ()
    if first_cost <= budget:
        head, budget = (first,), budget - first_cost
    kept: list[AttemptError] = []
    for entry in reversed(history[1:]):
        cost = _entry_bytes(entry) + 1  # and its comma
        if cost > budget:
            break
        kept.append(entry)
        budget -= cost
    return (*head, *reversed(kept))
