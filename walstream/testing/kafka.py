"""Kafka for tests: a stand-in admin client, the DLQ entry the worker writes, and for the delay
stage's tests a tier record, a consumer that records its commits, and its producer's parts
(metadata, client, record batch, a producer holding its first acknowledgement)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from walstream.core.delay import delay_headers
from walstream.core.dlq import entry_headers
from walstream.records import Envelope, Lifecycle, encode_envelope

# -- Kafka's admin client ----------------------------------------------------------------------


class FakeAdmin:
    """aiokafka's admin client as ``walstream.kafka.admin`` uses it, over class attributes a
    test sets (subclass it per test): a cluster of ``brokers`` brokers holding the topics
    ``existing``, describing each one's configs as ``described`` (or raising it, an exception);
    ``created`` holds the last topics asked for."""

    brokers = 1
    existing: tuple[str, ...] = ()
    described: Any = ()
    created: list[Any] = []  # noqa: RUF012 - replaced, never mutated

    def __init__(self, **kwargs: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return list(self.existing)

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": n} for n in range(self.brokers)]}

    async def create_topics(self, new_topics: list[Any]) -> Any:
        type(self).created = list(new_topics)
        return SimpleNamespace(topic_errors=[(t.name, 0, None) for t in new_topics])

    async def describe_configs(self, resources: Any) -> Any:
        if isinstance(self.described, Exception):
            raise self.described
        return [SimpleNamespace(resources=self.described)]


# -- the DLQ on a broker ---------------------------------------------------------------------


async def send_dead_letter(
    producer: Any, ns: str, record_id: str, partition: int, dead_at_ms: int
) -> None:
    """Writes with ``producer`` (an aiokafka producer) the DLQ entry the worker writes when
    keyless record ``record_id`` of ``ns`` dies on ``partition`` (after 3 attempts, HTTP 503)."""
    now = int(time.time() * 1000)
    value = encode_envelope(
        Envelope(
            id=record_id,
            namespace=ns,
            key=None,
            payload={"id": record_id},
            payload_encoding="json",
            target={"type": "kafka", "topic": "o"},
            lifecycle=Lifecycle(deliver_at_ms=now, original_write_time_ms=now),
            idempotency_token=f"tok-{record_id}",
            created_at_ms=now,
        )
    )
    await producer.send_and_wait(
        f"wal.{ns}.dlq",
        value,
        key=record_id.encode(),
        partition=partition,
        headers=entry_headers(
            namespace=ns,
            reason="HTTP 503",
            error_class="http_503",
            source=f"wal.{ns}.log[{partition}]@0",
            attempts=3,
            dead_at_ms=dead_at_ms,
        ),
    )


# -- The delay stage's records and commits -----------------------------------------------------


class TierRecord:
    """A record read from a delay tier: due at ``due_ms``, bound for partition 0 of
    ``wal.ns.log``."""

    def __init__(self, offset: int, due_ms: int = 60_000) -> None:
        self.offset = offset
        self.key = b"k"
        self.value = b"v"
        self.timestamp = 0
        self.headers = delay_headers(due_ms, "wal.ns.log", 0)


class CommitRecorder:
    """A consumer whose commits are recorded, in order."""

    def __init__(self) -> None:
        self.commits: list[dict[Any, int]] = []

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(dict(offsets))


class TierCluster:
    """The producer metadata the delay stage consults: every topic has 4 partitions unless
    ``topics`` (topic -> partition count) is given; a topic it does not name is unknown."""

    def __init__(self, topics: dict[str, int] | None = None) -> None:
        self.topics = topics

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        if self.topics is None:
            return {0, 1, 2, 3}
        count = self.topics.get(topic)
        return None if count is None else set(range(count))


class TierClient:
    """A producer's client: its metadata, and how often it was asked to refresh it."""

    def __init__(self, topics: dict[str, int] | None = None) -> None:
        self.cluster = TierCluster(topics)
        self.metadata_updates = 0

    async def force_metadata_update(self) -> bool:
        self.metadata_updates += 1
        return True


class TierBatch:
    """A record batch of hops; full at ``limit`` records (aiokafka's ``append`` then answers
    None), never when ``limit`` is None."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.records: list[Any] = []

    def append(self, **record: Any) -> object | None:
        if self.limit is not None and len(self.records) == self.limit:
            return None
        self.records.append(record)
        return object()


class HeldFirstProducer:
    """The delay stage's producer whose first send's (or batch's) acknowledgement is held:
    ``first``, for the test to settle; every later send is acknowledged at once. ``sends``
    counts the single sends, ``sent`` holds their ``timestamp_ms`` (0: none)."""

    def __init__(self) -> None:
        self.client = TierClient()
        self.first: asyncio.Future[Any] | None = None
        self.sends = 0
        self.sent: list[int] = []

    def create_batch(self) -> TierBatch:
        return TierBatch()

    def _future(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.first is None:
            self.first = future
        else:
            future.set_result(None)
        return future

    async def send_batch(self, batch: TierBatch, topic: str, *, partition: int) -> Any:
        return self._future()

    async def send(self, topic: str, value: Any, **kw: Any) -> Any:
        self.sends += 1
        self.sent.append(kw.get("timestamp_ms") or 0)
        return self._future()
