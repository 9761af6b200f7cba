"""The delay stage's outgoing records: ``Out`` (one record to send, and where it was read), a
batch of hops into one tier partition, and which send failures are permanent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiokafka import TopicPartition
from aiokafka.errors import (
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from walstream.core import outbox
from walstream.core.offsets import PartitionLedger

__all__ = ["PERMANENT", "HopBatch", "Out"]

#: The cluster says the destination does not exist or will never take the record. (aiokafka
#: asserts a partition it does not know: ``assert partition in ... "Unrecognized partition"``.)
PERMANENT = (
    UnknownTopicOrPartitionError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    AssertionError,
)


class Out(NamedTuple):
    """One record the stage produces: a hop into a tier, a forward to its destination, or a
    dead letter (a DLQ entry of the record as it was read)."""

    tp: TopicPartition  #: where it was read (its offset stays pending until this is acked)
    record: Any
    topic: str
    partition: int | None  #: None: the producer picks by key (a dead letter only)
    headers: list[tuple[str, bytes]] | None
    #: a hop's write time into the tier; None for a forward or a dead letter
    timestamp_ms: int | None = None
    #: a dead letter's key (the record's id); None for a hop or a forward
    dead_key: bytes | None = None
    #: sends of it that failed so far, and since when its destination fails permanently
    tries: int = 0
    failing_since_ms: int | None = None

    @classmethod
    def of(
        cls, tp: TopicPartition, record: Any, out: outbox.OutRecord, *, dead: bool = False
    ) -> Out:
        """What the outbox built for ``record`` (read at ``tp``), to send; its value is the
        record's as read."""
        return cls(
            tp,
            record,
            out.topic,
            out.partition,
            out.headers,
            out.timestamp_ms,
            dead_key=out.key if dead else None,
        )

    @property
    def key(self) -> bytes | None:
        return self.dead_key if self.dead_key is not None else self.record.key

    @property
    def hop(self) -> bool:
        return self.timestamp_ms is not None


@dataclass
class HopBatch:
    """A record batch of hops into one tier partition, and what it holds."""

    batch: Any
    #: each hop with the ledger its offset is pending in
    members: list[tuple[PartitionLedger, Out]] = field(default_factory=list)

    def add(self, part: PartitionLedger, out: Out) -> bool:
        """Append ``out`` (pending in ``part``); False when the batch is full."""
        record = out.record
        appended = self.batch.append(
            key=record.key, value=record.value, timestamp=out.timestamp_ms, headers=out.headers
        )
        if appended is None:
            return False
        self.members.append((part, out))
        return True
