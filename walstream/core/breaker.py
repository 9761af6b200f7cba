"""Circuit breaker per target: stop calling a target that fails every call, probe it now and then.

A target that is down would otherwise burn every record's attempts at full speed and flood the
retry path. After ``threshold`` transient failures in a row the breaker opens: calls are refused
without touching the target until ``open_until_ms``. Then one probe is let through (half-open);
success closes the breaker, failure opens it again for twice as long, up to ``max_open_ms``.
Permanent failures (the target answered, and refused this record) say the target is up: they
close the breaker like successes do.

``on_change`` hears every change of state (the pool counts the open breakers per target kind for
the ``walstream_target_breaker_open`` gauge); the breaker itself keeps no metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker", "OpenBreakers"]


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
    """The breaker of one target (pure: the caller passes the time).

    ``on_change(state)`` is called after each change of state (not when a call leaves it as it
    was); None: no one listens."""

    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        *,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self.on_change = on_change
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
        self._probe_out = True
        self._set(BreakerState.HALF_OPEN)
        return True

    def retry_at_ms(self, now_ms: int) -> int:
        """When a refused call should be tried again."""
        return max(now_ms + 1, self.open_until_ms)

    def record_success(self) -> None:
        """The target answered (success, or a permanent refusal of one record)."""
        self.failures = 0
        self._probe_out = False
        self._open_ms = self.policy.base_open_ms
        self._set(BreakerState.CLOSED)

    def record_failure(self, now_ms: int) -> None:
        """A transient failure (timeout, connection refused, 5xx)."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._open_ms = min(self._open_ms * 2, self.policy.max_open_ms)
            self._open(now_ms)
        elif self.state is BreakerState.CLOSED and self.failures >= self.policy.threshold:
            self._open(now_ms)

    def _open(self, now_ms: int) -> None:
        self.open_until_ms = now_ms + self._open_ms
        self._probe_out = False
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is self.state:
            return
        self.state = state
        if self.on_change is not None:
            self.on_change(state)


class OpenBreakers:
    """How many breakers refuse calls (open or half-open) per target kind, out of the breakers
    of a pool's endpoints; ``report(kind, count)`` hears each kind's count when it changes.

    An endpoint is ``<kind>:<where>`` or ``<kind>`` (walstream.targets.pool.TargetPool.endpoint).
    """

    def __init__(self, report: Callable[[str, int], None] | None = None) -> None:
        self._report = report
        self._open: dict[str, set[str]] = {}

    def watch(self, endpoint: str) -> Callable[[BreakerState], None]:
        """The ``on_change`` of ``endpoint``'s breaker."""

        def changed(state: BreakerState) -> None:
            self._mark(endpoint, state is not BreakerState.CLOSED)

        return changed

    def forget(self, evicted: Iterable[tuple[str, CircuitBreaker]]) -> None:
        """Breakers the pool forgot: no longer counted, and deaf from now on (a delivery that
        still holds one reports nothing more)."""
        for endpoint, breaker in evicted:
            breaker.on_change = None
            self._mark(endpoint, False)

    def count(self, kind: str) -> int:
        """Breakers of ``kind`` refusing calls now."""
        return len(self._open.get(kind, ()))

    def _mark(self, endpoint: str, refusing: bool) -> None:
        kind = endpoint.partition(":")[0]
        endpoints = self._open.setdefault(kind, set())
        before = len(endpoints)
        if refusing:
            endpoints.add(endpoint)
        else:
            endpoints.discard(endpoint)
        if self._report is not None and len(endpoints) != before:
            self._report(kind, len(endpoints))
