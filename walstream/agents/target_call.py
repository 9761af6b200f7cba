"""One attempt at a record's target: its endpoint, its circuit breaker, the call under a lease.

The attempt decides nothing about what follows: it says what happened (``Delivered``, a
``Failure``, or ``BreakerOpen`` until when) and the deliverer routes on that. The breaker is
told every answer: a success or a permanent refusal closes it (the target is up), a transient
failure counts against it. The call holds a lease of the target's pool, so an evicted cluster's
producer is not closed under the send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from walstream.clock import Clock
from walstream.core.retry import Failure
from walstream.core.validate import original_write_time_problem
from walstream.errors import TargetError, TargetRejectedError
from walstream.namespaces.config import NamespaceConfig
from walstream.records import Envelope
from walstream.targets.pool import TargetPool

__all__ = ["BreakerOpen", "Delivered", "Failed", "TargetCall"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivered:
    """The target acknowledged the record."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The attempt failed at ``at_ms`` (the target was not reached: when it began)."""

    failure: Failure
    at_ms: int


@dataclass(frozen=True, slots=True)
class BreakerOpen:
    """The target's breaker refuses calls until ``until_ms`` (its next probe, spread)."""

    until_ms: int


class TargetCall:
    """Attempts records at their targets through a ``TargetPool``."""

    def __init__(self, pool: TargetPool, clock: Clock, rand: Callable[[], float]) -> None:
        self.pool = pool
        self.clock = clock
        self.rand = rand

    async def attempt(
        self, env: Envelope, ns: NamespaceConfig, now: int
    ) -> Delivered | Failed | BreakerOpen:
        """Attempt ``env`` (due at ``now``) once, unless its target's breaker is open."""
        endpoint = await self._endpoint(env, ns, now)
        if isinstance(endpoint, Failure):
            return Failed(endpoint, now)
        breaker = self.pool.breaker(endpoint)
        if not breaker.allow(now):
            # The target is down: wait for the breaker's next probe.
            spread = int(self.rand() * self.pool.settings.breaker_base_open_ms)
            return BreakerOpen(breaker.retry_at_ms(now) + spread)
        failure = await self._call(env, ns, endpoint)
        if failure is None:
            breaker.record_success()
            return Delivered()
        if failure.retriable:
            breaker.record_failure(self.clock.now_ms())
        else:
            breaker.record_success()  # the target answered: it is up
        return Failed(failure, self.clock.now_ms())

    async def _endpoint(self, env: Envelope, ns: NamespaceConfig, now: int) -> str | Failure:
        """The record's target endpoint (checked, started: its breaker), or why not."""
        problem = original_write_time_problem(env.lifecycle.original_write_time_ms, now)
        if problem is not None:  # not from the API (produced into a log): its bounds hold
            error = TargetRejectedError(
                f"original_write_time {problem}", error_class="bad_write_time"
            )
            return _failure_of(error)
        try:
            _, endpoint = await self.pool.target(env.target, ns)
        except TargetError as exc:  # refused (unknown type, not allowed) or unreachable cluster
            return _failure_of(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. a cluster unreachable: its producer can't start
            # Not the record's fault: retried like a connection error at delivery (the README).
            logger.warning("target %s for %s not made: %r", env.target.get("type"), env.id, exc)
            return Failure(error_class="connection", message=repr(exc), retriable=True)
        return endpoint

    async def _call(self, env: Envelope, ns: NamespaceConfig, endpoint: str) -> Failure | None:
        """Deliver ``env`` to its target: None once it acknowledged, else the failure."""
        try:
            # leased: an evicted cluster's producer is not closed under the send
            async with self.pool.lease(env.target, ns) as (target, _):
                await target.deliver(env)
        except TargetError as exc:
            return _failure_of(exc)
        except Exception as exc:  # noqa: BLE001 - unclassified by the target: assume it may pass
            logger.warning("target %s raised %r unclassified", endpoint, exc)
            return Failure(error_class=type(exc).__name__, message=str(exc), retriable=True)
        return None


def _failure_of(exc: TargetError) -> Failure:
    return Failure(error_class=exc.error_class, message=str(exc), retriable=exc.retriable)
