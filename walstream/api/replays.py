"""Replays the API runs in the background: one per namespace at a time in this process.

``POST /v1/namespaces/{ns}/replay`` starts one (walstream.replay.replay, the function
``walstream replay`` runs), ``GET`` shows its progress, ``DELETE`` cancels it. Records are
delivered through a TargetPool of this process, so the namespace's target policy holds.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from walstream.clock import Clock, SystemClock
from walstream.core.replay import partition_refusal
from walstream.core.replay_request import ReplayRequest
from walstream.errors import BadRequestError, ReplayConflictError
from walstream.namespaces.config import NamespaceConfig
from walstream.namespaces.registry import NamespaceRegistry
from walstream.replay import ReplayResult, replay
from walstream.settings import Settings
from walstream.targets.pool import TargetPool

__all__ = ["ReplayProgress", "ReplayState", "Replays"]

logger = logging.getLogger(__name__)

#: walstream.replay.replay's signature (tests pass a fake).
Runner = Callable[..., Awaitable[ReplayResult]]


class ReplayState(Enum):
    RUNNING = "running"
    DONE = "done"
    #: stopped by an error: ``resume_from`` says where to go on from
    STOPPED = "stopped"
    CANCELLED = "cancelled"


@dataclass
class ReplayProgress:
    """Where a replay is (shared with whoever watches it)."""

    id: str
    namespace: str
    request: ReplayRequest
    started_at_ms: int
    state: ReplayState = ReplayState.RUNNING
    #: records of the log read so far (in the window or not yet decided)
    seen: int = 0
    result: ReplayResult | None = None

    def to_json(self) -> dict[str, Any]:
        result = self.result or ReplayResult()
        return {
            "id": self.id,
            "namespace": self.namespace,
            "state": self.state.value,
            "from_ms": self.request.from_ms,
            "to_ms": self.request.to_ms,
            "started_at_ms": self.started_at_ms,
            "seen": self.seen,
            "delivered": result.delivered,
            "skipped": result.skipped,
            "undecodable": result.undecodable,
            "pending": result.pending,
            "pending_skipped": list(result.pending_skipped),
            "failed": list(result.failed),
            "error": result.error,
            "resume_from": result.cursor,
        }


class Replays:
    """The replays this process runs: one per namespace at a time, cancellable."""

    def __init__(
        self,
        settings: Settings,
        registry: NamespaceRegistry,
        clock: Clock | None = None,
        *,
        run: Runner = replay,
        pool_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.clock = clock or SystemClock()
        self._run = run
        self._pool_factory = pool_factory or (
            lambda: TargetPool(self.settings, self.registry, self.clock)
        )
        self._pool: Any = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, ReplayProgress] = {}

    def status(self, namespace: str) -> ReplayProgress | None:
        return self._progress.get(namespace)

    def start(self, ns: NamespaceConfig, request: ReplayRequest) -> ReplayProgress:
        """Start replaying ``request``'s window of ``ns`` in the background.

        Raises:
            BadRequestError: ``resume_from`` names a partition the log does not have (every
                namespace's topics have WALSTREAM_DEFAULT_PARTITIONS; an offset past a
                partition's end stops the replay once it has read the ends).
            ReplayConflictError: one is already running for this namespace in this process.
        """
        if request.resume_from is not None:
            partitions = range(self.settings.default_partitions)
            refused = partition_refusal(request.resume_from, partitions)
            if refused is not None:
                raise BadRequestError("resume_from", refused)
        running = self._tasks.get(ns.name)
        if running is not None and not running.done():
            raise ReplayConflictError(f"a replay of {ns.name} is already running")
        if self._pool is None:
            self._pool = self._pool_factory()
        progress = ReplayProgress(
            id=uuid.uuid4().hex,
            namespace=ns.name,
            request=request,
            started_at_ms=self.clock.now_ms(),
        )
        self._progress[ns.name] = progress
        self._tasks[ns.name] = asyncio.create_task(
            self._replay(ns, progress), name=f"replay-{ns.name}"
        )
        return progress

    async def _replay(self, ns: NamespaceConfig, progress: ReplayProgress) -> None:
        def seen() -> None:
            progress.seen += 1

        request = progress.request
        try:
            result = await self._run(
                self.settings.bootstrap_list,
                ns,
                self._pool,
                from_ms=request.from_ms,
                to_ms=request.to_ms,
                skip_ids=request.skip_ids,
                on_record=seen,
                clock=self.clock,
                resume_from=request.resume_from,
            )
        except asyncio.CancelledError:
            progress.state = ReplayState.CANCELLED
            raise
        except Exception as exc:  # replay() reports its own errors: this is a bug
            logger.exception("replay %s of %s failed", progress.id, ns.name)
            progress.result = ReplayResult(error=f"{type(exc).__name__}: {exc}")
            progress.result.resume_from = request.resume_from
            progress.state = ReplayState.STOPPED
            return
        progress.result = result
        progress.state = ReplayState.DONE if result.error is None else ReplayState.STOPPED
        logger.info(
            "replay %s of %s %s: delivered %d, skipped %d, failed %d, pending %d",
            progress.id,
            ns.name,
            progress.state.value,
            result.delivered,
            result.skipped,
            len(result.failed),
            result.pending,
        )

    async def cancel(self, namespace: str) -> ReplayProgress | None:
        task = self._tasks.get(namespace)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        progress = self._progress.get(namespace)
        if progress is not None and progress.state is ReplayState.RUNNING:
            progress.state = ReplayState.CANCELLED  # cancelled before its first step
        return progress

    async def close(self) -> None:
        """Cancel running replays and close the target clients."""
        for namespace in list(self._tasks):
            await self.cancel(namespace)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
