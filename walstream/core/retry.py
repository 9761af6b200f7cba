"""Retry decisions: retry later (when) or dead-letter (why), for one failed delivery attempt."""

from __future__ import annotations

from dataclasses import dataclass, field

from walstream.core.backoff import next_delay_ms
from walstream.namespaces.config import BackoffPolicy

__all__ = ["DeadLetter", "Failure", "Retry", "RetryPolicy", "decide"]


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
