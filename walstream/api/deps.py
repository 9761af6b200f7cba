"""What the API handlers depend on, built once and passed in (tests pass fakes)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from walstream.api.replays import Replays
from walstream.api.worker_pages import WorkerPages
from walstream.clock import Clock, SystemClock
from walstream.core.limits import InFlightLimiter
from walstream.dlq import DlqAccess
from walstream.kafka.producer import LogProducer
from walstream.namespaces.registry import NamespaceRegistry
from walstream.settings import Settings

__all__ = ["ApiDeps"]


def _always_ready() -> bool:
    return True


@dataclass(kw_only=True)
class ApiDeps:
    """The API's collaborators."""

    settings: Settings
    registry: NamespaceRegistry
    producer: LogProducer
    limiter: InFlightLimiter
    clock: Clock = field(default_factory=SystemClock)
    #: A number in [0, 1) per record: where inside its jitter window it lands.
    rand: Callable[[], float] = random.random
    #: Whether the namespace registry has caught up with the control topic.
    registry_loaded: Callable[[], bool] = _always_ready
    #: DLQ reads and redrives (None: this API serves no DLQ endpoints).
    dlq: DlqAccess | None = None
    #: Replays over HTTP (None: this API serves no replay endpoints).
    replays: Replays | None = None
    #: The workers' pages (a mutation's status; None: this API asks no worker, 503).
    worker: WorkerPages | None = None
    #: Start/stop work (the real producer and namespace feed): each yields once while serving.
    lifespan: list[Callable[[], AsyncIterator[None]]] = field(default_factory=list)
