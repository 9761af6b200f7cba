"""An in-memory target with the Target protocol, able to fail on demand (tests and demos)."""

from __future__ import annotations

from collections import deque

from walstream.errors import TargetError
from walstream.records import Envelope

__all__ = ["MemoryTarget"]


class MemoryTarget:
    """Keeps what it is given; ``fail_next(error, n)`` makes the next n deliveries raise."""

    def __init__(self) -> None:
        self.delivered: list[Envelope] = []
        self.calls: list[Envelope] = []
        self._failures: deque[TargetError] = deque()
        self.always: TargetError | None = None

    def fail_next(self, error: TargetError, times: int = 1) -> None:
        self._failures.extend([error] * times)

    async def deliver(self, envelope: Envelope) -> None:
        self.calls.append(envelope)
        if self.always is not None:
            raise self.always
        if self._failures:
            raise self._failures.popleft()
        self.delivered.append(envelope)

    async def close(self) -> None:
        """Nothing to release."""
