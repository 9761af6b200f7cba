"""The deliverer's vocabulary: where a record was read, what became of it, and who it talks to.

Shared by the deliverer (``walstream.agents.deliver``), its ordering gate
(``walstream.agents.ordering_gate``), its failure routing (``walstream.agents.failures``) and the
post-delivery stages registered with it, so none of them imports another's module for a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from walstream.core.delay import HANDOFF_LEAD_MS, TIERS_MS
from walstream.core.outbox import OutRecord
from walstream.core.retry import HISTORY_MAX_BYTES
from walstream.kafka.log_reader import LoggedRecord
from walstream.namespaces.config import NamespaceConfig
from walstream.records import Envelope

__all__ = [
    "DeliverySettings",
    "Emitter",
    "Handled",
    "LogReading",
    "Outcome",
    "PostDelivery",
    "Source",
    "Stage",
    "count_key",
    "send",
]


class Emitter(Protocol):
    """Writes a record and returns once the broker acknowledged it (retrying until it does)."""

    async def emit(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None: ...


class LogReading(Protocol):
    """Reads a parked record back by its reference (``walstream.kafka.log_reader.LogReader``)."""

    async def read(self, topic: str, partition: int, offset: int) -> LoggedRecord: ...


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record was read from."""

    topic: str
    partition: int
    offset: int
    #: ``wal-origin`` of a copy: where the record was first read (walstream.core.origin)
    origin: str | None = None

    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def first_read(self) -> str:
        """Where the record was first read: its origin, else here."""
        return self.origin or self.coordinates()


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    DELAYED = "delayed"
    DEFERRED = "deferred"
    DUPLICATE = "duplicate"
    PARKED = "parked"
    #: parked behind the record its key waits on (ordering = key)
    WAITING = "waiting"
    #: an ordering marker whose turn had passed already
    STALE = "stale"


class Stage(Enum):
    """Where in the deliverer a record was handled (the deliveries metric's ``stage`` label)."""

    #: a record read from its namespace's log
    LOG = "log"
    #: a copy read from its namespace's retry topic (a retry, a deferral, a delay's end)
    RETRY = "retry"
    #: bytes that are not a record, dead-lettered as they were
    POISON = "poison"
    #: a record of a namespace this worker does not know, sent to look again later
    PARKED = "parked"
    #: an ordering marker, and the parked records its handler delivers
    ORDER = "order"
    #: the deliverer's catch-all (a bug): dead-lettered as it was
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Handled:
    """One record of a namespace the deliverer handled, and what became of it."""

    namespace: NamespaceConfig
    env: Envelope
    source: Source
    stage: Stage
    outcome: Outcome


class PostDelivery(Protocol):
    """A stage that runs after each record of a known namespace is handled (registered with
    ``Deliverer.register``). It sees every outcome and decides for itself which concern it; an
    exception it raises is logged and changes nothing for the record."""

    async def after(self, handled: Handled) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    """The deliverer's tunables (the worker takes them from its ``Settings``)."""

    #: partitions of each delay tier (every tier is made with the deployment's default)
    delay_partitions: int
    #: the deployment's app id: it names the delay tier topics
    app_id: str = "walstream"
    #: the delay tiers, smallest first
    tiers: tuple[int, ...] = TIERS_MS
    #: A retry due within this goes straight to the retry topic (its due time in a header: the
    #: retry agent holds it until then) instead of through the delay stage.
    handoff_lead_ms: int = HANDOFF_LEAD_MS
    #: records a release marker's handler delivers inline (0: one marker per record)
    drain_max: int = 0
    #: a record's history is kept within this many encoded bytes (WALSTREAM_HISTORY_MAX_BYTES)
    history_max_bytes: int = HISTORY_MAX_BYTES


def count_key(env: Envelope) -> str:
    """The attempts table's key for ``env``: one count per redrive of a record."""
    return env.id if not env.redrive else f"{env.id}~r{env.redrive}"


async def send(emitter: Emitter, record: OutRecord) -> None:
    """Send a record the outbox built, exactly as built (returns once the broker acknowledged)."""
    await emitter.emit(
        record.topic,
        record.value,
        key=record.key,
        partition=record.partition,
        headers=record.headers,
        timestamp_ms=record.timestamp_ms,
    )
