"""Circuit breaker per target: stop calling a target that fails every call, probe it now and then.

A target that is down would otherwise burn every record's attempts at full speed and flood the
retry path. After ``threshold`` transient failures in a row the breaker opens: calls are refused
without touching the target until ``open_until_ms``. Then one probe is let through (half-open);
success closes the breaker, failure opens it again for twice as long, up to ``max_open_ms``.
Permanent failures (the target answered, and refused this record) say the target is up: they
close the breaker like successes do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker"]


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When a breaker opens and for how long."""

    threshold: int = 5
    base_open_ms: int = 1_000
    max_open_ms: int = 60_000


class CircuitBreaker:
    """The breaker of one target (pure: the caller passes the time)."""

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.open_until_ms = 0
        self._open_ms = self.policy.base_open_ms
        self._probe_out = False

    def allow(self, now_ms: int) -> bool:
        """Whether a call may go to the target now (a half-open breaker lets one probe out)."""
        if self.state is BreakerState.CLOSED:
            return True
        if now_ms < self.open_until_ms:
            return False
        if self._probe_out:
            return False
        self.state = BreakerState.HALF_OPEN
        self._probe_out = True
        return True

    def retry_at_ms(self, now_ms: int) -> int:
        """When a refused call should be tried again."""
        return max(now_ms + 1, self.open_until_ms)

    def record_success(self) -> None:
        """The target answered (success, or a permanent refusal of one record)."""
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._probe_out = False
        self._open_ms = self.policy.base_open_ms

    def record_failure(self, now_ms: int) -> None:
        """A transient failure (timeout, connection refused, 5xx)."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._open_ms = min(self._open_ms * 2, self.policy.max_open_ms)
            self._open(now_ms)
        elif self.state is BreakerState.CLOSED and self.failures >= self.policy.threshold:
            self._open(now_ms)

    def _open(self, now_ms: int) -> None:
        self.state = BreakerState.OPEN
        self.open_until_ms = now_ms + self._open_ms
        self._probe_out = False
