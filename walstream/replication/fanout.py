"""The fan-out stages of a replicated namespace (issue 17): its log, copied to each region's topic.

Every operation in ``wal.<ns>.log`` is copied to ``wal.<ns>.region.<r>`` for every region r
but the one it was made in (its target's ``origin_region``), on the region's own Kafka cluster
when it names one. The regions on the deployment's own cluster (the log's) share one fan-out
(consumer group ``ClientIds.fanout_group(ns)``); a region naming a cluster of its own has a
fan-out of its own (group ``ClientIds.fanout_group(ns, r)``), reading the whole log and copying
to that region only: its cluster away or slow holds back only its own fan-out (its operations
wait in the log, read again from its group's commit once the cluster is back), never another
region's copies. (A fan-out per region on the log's cluster would isolate nothing more, the log
being there, and each is one more reader of the log: on the embedded broker, three fan-outs and
two writers instead of one and two took a replicated operation's lag p50 from 18-38 to 64-125 ms
at 200 ops/s.) Such a group is placed when its fan-out first starts (:meth:`FanOut.place_group`,
core.fanout_start). The Kafka key is kept, so one key's operations stay in order within each
region's topic. In ``invalidate`` mode a set is copied as a delete of the same key and version
(core.outbox.region_copy).

Origin repairs: a log record carrying ``wal-origin-repair: 1`` (core.outbox.origin_repair) is
an operation the replicating client logged but could not apply in its own region (its local
memcached away, a CAS race lost every round); it is copied to its origin region only (and as it
is, also in ``invalidate`` mode: the client applies a set as a set locally), where that region's
writer applies it with LWW like any copy, retrying behind its breaker while the memcached is
away (a duplicate when the local apply did land after all). What remains: a client that dies
between its publish and its local apply logs no repair, so its region keeps the older item until
the key's next write. The repair is the Python client's: WriteToLog takes no headers, so a
WriteToLog user, who writes its own region itself, retries that write itself when it fails.

A batch's copies are all sent, then their acks awaited, then the
batch committed (walstream.replication.stage): a crash copies some operations twice, which the
regions' last-write-wins reads as duplicates.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from walstream.core.fanout_start import start_offsets
from walstream.core.outbox import fanout_regions, is_origin_repair, origin_region, region_copy
from walstream.errors import PoisonRecordError
from walstream.kafka import clients
from walstream.kafka.admin import ensure_topics
from walstream.kafka.clients import ClientIds, start_client, stop_consumer, stop_producer
from walstream.namespaces.replication import Replicate, Replication
from walstream.records import Envelope, decode_envelope
from walstream.replication.stage import Batch, BatchStage, acked
from walstream.settings import Settings
from walstream.topology import region_topic, region_topic_specs

__all__ = ["FanOut", "fanout_regions_of", "fanouts", "region_servers"]

logger = logging.getLogger(__name__)


def region_servers(settings: Settings, cluster: str | None) -> str | list[str]:
    """The bootstrap servers of a region's cluster (None: the deployment's own)."""
    return cluster if cluster is not None else settings.bootstrap_list


def fanout_regions_of(replication: Replication) -> list[str | None]:
    """The fan-outs a namespace has: None, the one to the regions on the deployment's cluster
    (if any), then one per region naming a cluster of its own, by name."""
    shared: list[str | None] = (
        [None] if any(r.bootstrap_servers is None for r in replication.regions) else []
    )
    return shared + [r.name for r in replication.regions if r.bootstrap_servers is not None]


class FanOut(BatchStage):
    """Copies a replicated namespace's log to its regions' topics: ``region`` None, to every
    region on the deployment's own cluster (the shared fan-out); a region's name, to that
    region alone, in a group of its own (a region naming a cluster of its own). The operations
    made in a region are not copied to it."""

    label = "replication fan-out"

    def __init__(
        self,
        settings: Settings,
        *,
        namespace: str,
        log_topic: str,
        replication: Replication,
        region: str | None,
        partitions: int | None = None,
        **kwargs: Any,
    ) -> None:
        if region is not None and replication.region(region) is None:
            raise ValueError(f"namespace {namespace!r} does not replicate to region {region!r}")
        super().__init__(
            settings,
            topic=log_topic,
            group_id=ClientIds.fanout_group(namespace, region),
            servers=settings.bootstrap_list,
            **kwargs,
        )
        self.namespace = namespace
        self.replication = replication
        #: the region copied to (None: the regions on the deployment's cluster)
        self.region = region
        self.partitions = partitions or settings.default_partitions
        self.invalidate = replication.replicate is Replicate.INVALIDATE
        targets = [
            r
            for r in replication.regions
            if (r.name == region if region is not None else r.bootstrap_servers is None)
        ]
        #: the regions copied to, by name, and their clusters (None: the deployment's own)
        self.targets = [r.name for r in targets]
        self._clusters = {r.name: r.bootstrap_servers for r in targets}
        self._topics = {r: region_topic(namespace, r) for r in self.targets}
        #: one producer per Kafka cluster (None: the deployment's own), and each region's
        self._producers: dict[str | None, Any] = {}
        self._producer_of: dict[str, Any] = {}
        #: copies sent and acknowledged
        self.copies = 0

    async def start_clients(self) -> None:
        settings = self.settings
        if self.region is not None:
            # first: its region's cluster away, the group still starts from this moment
            await self.place_group()
        for region, cluster in self._clusters.items():
            servers = region_servers(settings, cluster)
            await ensure_topics(
                servers,
                region_topic_specs(
                    self.namespace,
                    region,
                    self.partitions,
                    replication_factor=settings.replication_factor,
                    min_insync_replicas=settings.min_insync_replicas,
                ),
            )
            if cluster not in self._producers:
                producer = clients.stage_producer(servers, group_id=self.group_id)
                self._producers[cluster] = producer
                await start_client(producer)
            self._producer_of[region] = self._producers[cluster]

    async def place_group(self) -> None:
        """Before the group first joins: on each partition of the log the group has no commit
        for, commit where the shared fan-out's group stands, else the partition's beginning
        (core.fanout_start). Reads and writes the deployment's cluster only."""
        servers = self.settings.bootstrap_list
        consumer = _group_reader(servers, self.group_id)
        await start_client(consumer)
        try:
            parts = consumer.partitions_for_topic(self.topic) or ()
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            own = {tp: await consumer.committed(tp) for tp in tps}
            missing = [tp for tp, offset in own.items() if offset is None]
            if not missing:
                return
            shared = ClientIds.fanout_group(self.namespace)
            placed = await _commits(servers, shared, missing)
            beginnings = await consumer.beginning_offsets(missing)
            start = start_offsets(own, placed, beginnings)
            if not start:
                return
            consumer.assign(list(start))
            try:
                await consumer.commit(start)
            except KafkaError as exc:  # another instance of the group runs: it placed it
                logger.warning("%s: could not place group %s: %r", self.label, self.group_id, exc)
                return
            logger.info(
                "%s: group %s placed (group %s's commits: %s): %s",
                self.label,
                self.group_id,
                shared,
                {tp.partition: offset for tp, offset in sorted(placed.items())},
                {tp.partition: offset for tp, offset in sorted(start.items())},
            )
        finally:
            await stop_consumer(consumer)

    async def stop_clients(self) -> None:
        producers, self._producers = self._producers, {}
        for producer in producers.values():
            await stop_producer(producer, timeout_s=clients.PRODUCER_STOP_S)

    async def handle(self, batch: Batch) -> None:
        acks = []
        for records in batch.values():
            for record in records:
                # in value mode the bytes travel as they are: only the origin is read
                repair = is_origin_repair(record.headers)
                regions = fanout_regions(origin_region(record.value), self.targets, repair=repair)
                if not regions:
                    continue  # made in the region copied to (a repair: made elsewhere)
                # a repair travels as the client applies it locally: a set stays a set
                invalidate = self.invalidate and not repair
                env = _envelope(record.value) if invalidate else None
                for region in regions:
                    out = region_copy(
                        record.value,
                        record.key,
                        env,
                        topic=self._topics[region],
                        invalidate=invalidate,
                    )
                    acks.append(
                        await self._producer_of[region].send(
                            out.topic, out.value, key=out.key, partition=out.partition
                        )
                    )
        await acked(acks)
        self.copies += len(acks)


def fanouts(
    settings: Settings,
    *,
    namespace: str,
    log_topic: str,
    replication: Replication,
    **kwargs: Any,
) -> list[FanOut]:
    """The fan-outs of ``replication`` (:func:`fanout_regions_of`; what a worker runs for the
    namespace; tests and benchmarks running the stages in one process start each)."""
    return [
        FanOut(
            settings,
            namespace=namespace,
            log_topic=log_topic,
            replication=replication,
            region=region,
            **kwargs,
        )
        for region in fanout_regions_of(replication)
    ]


def _group_reader(servers: str | list[str], group: str) -> Any:
    """A consumer of ``group``'s commits that never joins it."""
    return clients.reader_consumer(
        servers,
        client_id=f"{group}-start",
        group_id=group,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )


async def _commits(
    servers: str | list[str], group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """What ``group`` committed on ``tps`` (partitions it has not committed are left out)."""
    consumer = _group_reader(servers, group)
    await start_client(consumer)
    try:
        committed = {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await stop_consumer(consumer)
    return {tp: offset for tp, offset in committed.items() if offset is not None}


def _envelope(value: bytes | None) -> Envelope | None:
    """The envelope, or None for bytes that are none (every region's writer dead-letters them,
    with the reason)."""
    try:
        return decode_envelope(value)
    except PoisonRecordError:
        return None
