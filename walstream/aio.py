"""Small asyncio helpers shared by walstream's background services.

``supervised`` is the one loop every background service runs (the delay stage, the namespace
feed, the DLQ monitor): it runs a step again and again, and a step that fails is logged and
tried again after a backoff (``Backoff``: doubling up to a cap) that starts over after a step
that succeeds. Nothing but a cancellation ends it early: a background service must outlive any
surprise (its records wait safely in Kafka).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

__all__ = ["Backoff", "cancel_and_wait", "supervised"]


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task this service owns and wait until it has finished."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Waits between failures in a row: ``first_s``, then doubled each time, at most ``cap_s``."""

    first_s: float
    cap_s: float

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.cap_s:
            raise ValueError("need 0 < first_s <= cap_s")

    def delays(self) -> Iterator[float]:
        """The waits after the 1st, 2nd, ... failure in a row (endless)."""
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * 2, self.cap_s)


def _always() -> bool:
    return True


async def supervised(
    name: str,
    step: Callable[[], Awaitable[None]],
    *,
    backoff: Backoff,
    log: logging.Logger,
    running: Callable[[], bool] = _always,
    expected: tuple[type[Exception], ...] = (),
    on_error: Callable[[Exception], None] | None = None,
    retry_word: str = "retrying",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run ``step()`` while ``running()``; a step that fails is retried after a backoff.

    A step that raises an exception (other than a cancellation) is logged, ``on_error`` is
    called with it, and the next step runs after the next wait of ``backoff``; a step that
    returns starts the backoff over. The exceptions in ``expected`` (a broker away, say) are
    logged as a warning with their message, any other with its traceback.

    Args:
        name: what the log lines name (``"delay stage"``).
        step: one round of the service's work (a fresh coroutine per call).
        backoff: the waits after failures in a row.
        log: the logger of the service.
        running: checked before each step; False ends the loop (a mode service's
            ``lambda: not self.should_stop``).
        expected: exceptions logged without a traceback.
        on_error: called with each failure before the wait (an exception it raises is logged,
            not raised).
        retry_word: the log's verb for the next step (``"starting over"``).
        sleep: waits between steps (tests pass a recorder).

    Raises:
        asyncio.CancelledError: the task running it was cancelled (during a step or a wait).
    """
    delays = backoff.delays()
    while running():
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the service must outlive any surprise
            delay = next(delays)
            if isinstance(exc, expected):
                log.warning("%s: %s; %s in %.1fs", name, exc, retry_word, delay)
            else:
                log.exception("%s failed; %s in %.1fs", name, retry_word, delay)
            if on_error is not None:
                try:
                    on_error(exc)
                except Exception:  # as for the step itself
                    log.exception("%s: its error handler failed", name)
            await sleep(delay)
        else:
            delays = backoff.delays()
