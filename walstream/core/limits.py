"""In-flight limiting: admit a write only while fewer than ``limit`` are awaiting the broker."""

from __future__ import annotations

__all__ = ["InFlightLimiter"]


class InFlightLimiter:
    """A non-blocking counting limiter: a caller over the limit is refused at once, never queued.

    Queueing would turn overload into latency and then into timeouts (durable=UNKNOWN); refusing
    gives the client a definite durable=FALSE it can retry.
    """

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("limit must be > 0")
        self.limit = limit
        self.in_flight = 0

    def try_acquire(self, n: int = 1) -> bool:
        """Take ``n`` slots if all are free; return whether they were taken."""
        if self.in_flight + n > self.limit:
            return False
        self.in_flight += n
        return True

    def release(self, n: int = 1) -> None:
        self.in_flight -= n
        if self.in_flight < 0:
            raise RuntimeError("released more slots than were acquired")
