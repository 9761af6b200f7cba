"""Every aiokafka client walstream makes, and helpers around their lifecycles.

One place builds the clients, as ``walstream.topology`` names the topics: a reader (a consumer
that commits nothing: groupless, assigning its own partitions, or in a consumer group that
commits by hand), a producer that waits for acks from every in-sync replica, an admin client.
Each client of the code base is described here with its settings (``NAMESPACE_FEED``,
``DLQ_MONITOR``, ...; ``log_reader``, ``api_producer``, ...), and its client id and consumer
group come from ``ClientIds`` below: the broker's logs, quotas and ACLs know walstream's
clients by them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

# the lifecycle helpers live in their own module; named here too, where their callers look
from walstream.kafka.stopping import PRODUCER_STOP_S, start_client, stop_consumer, stop_producer

__all__ = [
    "CLI",
    "DLQ_MONITOR",
    "DLQ_READER",
    "END_OFFSETS",
    "NAMESPACE_FEED",
    "NAMESPACE_PUBLISHER",
    "PRODUCER_STOP_S",
    "REDRIVE",
    "REPLAY",
    "TARGETS",
    "ClientIds",
    "Producer",
    "Reader",
    "acked_producer",
    "admin_client",
    "api_producer",
    "assign_from_start",
    "delay_consumer",
    "delay_producer",
    "log_reader",
    "producer",
    "reader",
    "reader_consumer",
    "stage_consumer",
    "stage_producer",
    "start_client",
    "stop_consumer",
    "stop_producer",
]

logger = logging.getLogger(__name__)

Servers = str | list[str]
Reset = Literal["earliest", "latest", "none"]


class ClientIds:
    """The client ids and consumer groups of walstream's own clients (Faust's are the app id)."""

    ADMIN: Final = "walstream-admin"
    API: Final = "walstream-api"
    #: the CLI's producer has aiokafka's own id ("aiokafka-producer-N"), as it always had
    CLI: Final = None
    DLQ_MONITOR: Final = "walstream-dlq-monitor"
    DLQ_READER: Final = "walstream-dlq-reader"
    DLQ_SOURCE: Final = "walstream-dlq-source"
    END_OFFSETS: Final = "walstream-end-offsets"
    LOG_READER: Final = "walstream-log-reader"
    NAMESPACE_FEED: Final = "walstream-namespaces"
    NAMESPACE_PUBLISHER: Final = "walstream-namespace-publisher"
    REDRIVE: Final = "walstream-dlq"
    REPLAY: Final = "walstream-replay"
    TARGETS: Final = "walstream-targets"

    @staticmethod
    def delay_group(app_id: str) -> str:
        """The delay stage's consumer group (also its consumer's client id); its producers are
        ``<group>-hops`` and ``<group>-due`` (``delay_producer``)."""
        return f"{app_id}-delay"

    @staticmethod
    def fanout_group(namespace: str, region: str | None = None) -> str:
        """A replicated namespace's fan-out stage's consumer group (of the namespace's log;
        issue 17): ``walstream.<ns>.fanout`` copies to the regions on the deployment's own
        cluster, ``walstream.<ns>.fanout.<r>`` to region r, which names a cluster of its own (a
        group of its own: r's cluster away holds back no other region's copies)."""
        if region is None:
            return f"walstream.{namespace}.fanout"
        return f"walstream.{namespace}.fanout.{region}"

    @staticmethod
    def region_group(namespace: str, region: str) -> str:
        """A replicated namespace's region writer's consumer group (of the region's topic)."""
        return f"walstream.{namespace}.region.{region}"

    @staticmethod
    def parked_reader(app_id: str) -> str:
        """The worker's reader of parked records at their source."""
        return f"{app_id}-parked"


# -- every client walstream makes, with its settings --------------------------------------------


@dataclass(frozen=True, slots=True)
class Reader:
    """A groupless consumer's settings (``reader`` makes it)."""

    client_id: str
    auto_offset_reset: Reset
    fetch_max_wait_ms: int
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Producer:
    """An acks=all producer's settings (``producer`` makes it); ``client_id`` None: aiokafka's."""

    client_id: str | None
    options: Mapping[str, Any] = field(default_factory=dict)


#: reads the whole control topic from its beginning (walstream.namespaces.broadcast)
NAMESPACE_FEED = Reader(ClientIds.NAMESPACE_FEED, "earliest", 200)
#: tails every DLQ topic from its beginning (walstream.agents.dlq_monitor)
DLQ_MONITOR = Reader(ClientIds.DLQ_MONITOR, "earliest", 500)
#: reads a DLQ topic from its beginning (walstream.dlq)
DLQ_READER = Reader(ClientIds.DLQ_READER, "earliest", 50)
#: reads a log's partitions from the offsets it seeks (walstream.replay)
REPLAY = Reader(ClientIds.REPLAY, "latest", 50)
#: fetches at reported end offsets to read high watermarks (walstream.kafka.offsets)
END_OFFSETS = Reader(ClientIds.END_OFFSETS, "latest", 20, {"max_partition_fetch_bytes": 65536})

#: writes namespace events to the control topic (walstream.namespaces.broadcast)
NAMESPACE_PUBLISHER = Producer(ClientIds.NAMESPACE_PUBLISHER)
#: a DLQ redrive's claims, markers and re-sent records (walstream.dlq)
REDRIVE = Producer(ClientIds.REDRIVE)
#: the operator commands' writes (walstream.cli)
CLI = Producer(ClientIds.CLI)
#: a Kafka target's writes, to the target's own cluster (walstream.targets.pool)
TARGETS = Producer(ClientIds.TARGETS, {"linger_ms": 1})


def reader_consumer(
    servers: Servers,
    *,
    client_id: str,
    auto_offset_reset: Reset,
    fetch_max_wait_ms: int,
    group_id: str | None = None,
    **options: Any,
) -> AIOKafkaConsumer:
    """A consumer that never commits by itself (no auto-commit); groupless by default.

    ``options``: any other AIOKafkaConsumer setting (fetch sizes, session timeouts).
    """
    return AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset,
        fetch_max_wait_ms=fetch_max_wait_ms,
        client_id=client_id,
        **options,
    )


def reader(servers: Servers, spec: Reader, **options: Any) -> AIOKafkaConsumer:
    """The groupless consumer ``spec`` describes; ``options`` add to its settings."""
    return reader_consumer(
        servers,
        client_id=spec.client_id,
        auto_offset_reset=spec.auto_offset_reset,
        fetch_max_wait_ms=spec.fetch_max_wait_ms,
        **spec.options,
        **options,
    )


def acked_producer(servers: Servers, *, client_id: str | None, **options: Any) -> AIOKafkaProducer:
    """A producer whose sends are acknowledged by every in-sync replica (acks=all).

    ``options``: any other AIOKafkaProducer setting (linger, batch size, timeouts).
    """
    return AIOKafkaProducer(bootstrap_servers=servers, acks="all", client_id=client_id, **options)


def producer(servers: Servers, spec: Producer) -> AIOKafkaProducer:
    """The acks=all producer ``spec`` describes."""
    return acked_producer(servers, client_id=spec.client_id, **spec.options)


def admin_client(servers: Servers) -> AIOKafkaAdminClient:
    """walstream's admin client (topic creation and checks)."""
    return AIOKafkaAdminClient(bootstrap_servers=servers, client_id=ClientIds.ADMIN)


def log_reader(servers: Servers, *, client_id: str, window_bytes: int) -> AIOKafkaConsumer:
    """Reads records by offset (walstream.kafka.log_reader): a vanished offset is an error, not a
    jump, and a fetch brings a window after the offset, not the rest of the partition (decoding a
    whole partition per read cost 50 ms for 20k records)."""
    return reader_consumer(
        servers,
        client_id=client_id,
        auto_offset_reset="none",
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=window_bytes,
        fetch_max_bytes=window_bytes,
    )


def api_producer(
    servers: Servers, *, timeout_s: float, client_id: str = ClientIds.API
) -> AIOKafkaProducer:
    """The API's producer of new writes (walstream.kafka.producer): linger 0, as a
    request/reply producer waits for each ack (aiokafka still batches whatever is queued while a
    request is in flight; see ../shared/BROKER.md figures)."""
    return acked_producer(
        servers,
        client_id=client_id,
        linger_ms=0,
        max_batch_size=256 * 1024,
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
        retry_backoff_ms=100,
    )


def delay_consumer(
    servers: Servers,
    *,
    group_id: str,
    fetch_max_wait_ms: int,
    session_timeout_s: float,
    heartbeat_interval_s: float,
) -> AIOKafkaConsumer:
    """The delay stage's consumer of its tiers, in its consumer group (commits by hand)."""
    session_ms = int(session_timeout_s * 1000)
    return reader_consumer(
        servers,
        group_id=group_id,
        client_id=group_id,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        max_partition_fetch_bytes=256 * 1024,
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=int(heartbeat_interval_s * 1000),
        rebalance_timeout_ms=max(session_ms, 10_000),
    )


def stage_consumer(
    servers: Servers, *, group_id: str, session_timeout_s: float, heartbeat_interval_s: float
) -> AIOKafkaConsumer:
    """A replication stage's consumer (fan-out, region writer) in its own consumer group, from
    the earliest record when the group has no commit; it commits by hand after each batch.

    A fetch waits at most 10 ms for records (the embedded broker answers a fetch only at its
    max wait when the partition has nothing new: with 50 ms the lag of a replicated operation,
    two hops, was p50 40 ms / p99 109 ms at 500 ops/s, with 10 ms 27 / 70 ms)."""
    session_ms = int(session_timeout_s * 1000)
    return reader_consumer(
        servers,
        group_id=group_id,
        client_id=group_id,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=1024 * 1024,
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=int(heartbeat_interval_s * 1000),
        rebalance_timeout_ms=max(session_ms, 10_000),
    )


#: A replication stage's producer refuses no record by its size: a copy of a log record (or a
#: region DLQ entry of one) is as large as the record, which the log's broker accepted. With
#: aiokafka's 1 MiB default a larger record wedged its partition (refused, read again, for ever).
STAGE_MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024


def stage_producer(servers: Servers, *, group_id: str) -> AIOKafkaProducer:
    """A replication stage's producer (region copies, region DLQ entries): batches a little;
    the broker, not the client, bounds a record's size (:data:`STAGE_MAX_REQUEST_BYTES`)."""
    return acked_producer(
        servers,
        client_id=f"{group_id}-out",
        linger_ms=2,
        max_request_size=STAGE_MAX_REQUEST_BYTES,
    )


def delay_producer(servers: Servers, *, group_id: str, due: bool) -> AIOKafkaProducer:
    """One of the delay stage's two producers: of hops between tiers (batched a little), or of
    records due now (linger 0: they never queue behind a crowd of hops)."""
    if due:
        return acked_producer(servers, client_id=f"{group_id}-due", linger_ms=0)
    return acked_producer(servers, client_id=f"{group_id}-hops", linger_ms=2)


# -- lifecycles ----------------------------------------------------------------------------------


async def assign_from_start(
    consumer: Any, topics: Iterable[str], *, within_s: float
) -> list[TopicPartition]:
    """Assign every partition of ``topics`` to a groupless consumer, at their beginnings.

    Waits up to ``within_s`` for metadata; a topic still unknown then is left out (the caller
    decides whether that is an error).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    tps: list[TopicPartition] = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        while not parts and loop.time() < deadline:
            with contextlib.suppress(KafkaError):
                await consumer.topics()  # refresh metadata
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await asyncio.sleep(0.1)
        tps.extend(TopicPartition(topic, p) for p in sorted(parts or ()))
    if tps:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
    return tps
