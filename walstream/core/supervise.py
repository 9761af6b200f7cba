"""`make run`'s supervision: when a child that died is started again (pure; no I/O).

A worker or API that exits is restarted after a delay that doubles with each exit in a row
(``base_s``, 2 x ``base_s``, ... up to ``cap_s``); a child that had stayed up ``stable_s`` or
longer before it died starts the count again, so one crash a day never waits the cap.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Restart", "RestartPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Restart:
    """Start the child again after ``delay_s``; it has now exited ``exits_in_a_row`` times."""

    delay_s: float
    exits_in_a_row: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    """Backoff of restarts: ``base_s`` doubled per exit in a row, at most ``cap_s``."""

    base_s: float = 1.0
    cap_s: float = 30.0
    stable_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError("need 0 < base_s <= cap_s")
        if self.stable_s <= 0:
            raise ValueError("stable_s must be > 0")

    def after_exit(self, exits_in_a_row: int, uptime_s: float) -> Restart:
        """The restart of a child that exited after running ``uptime_s``, having exited
        ``exits_in_a_row`` times in a row before (0: it had not, or it had been stable)."""
        count = 1 if uptime_s >= self.stable_s else max(0, exits_in_a_row) + 1
        # 2**(count - 1) grows past any cap quickly: stop doubling once the cap is reached
        delay = self.base_s
        for _ in range(count - 1):
            delay *= 2
            if delay >= self.cap_s:
                break
        return Restart(delay_s=min(delay, self.cap_s), exits_in_a_row=count)
