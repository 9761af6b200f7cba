"""The fan-out stages of a replicated namespace (issue 17): its log, copied to each region's topic.

Every operation in ``wal.<ns>.log`` is copied to ``wal.<ns>.region.<r>`` for every region r
but the one it was made in (its target's ``origin_region``), on the region's own Kafka cluster
when it names one. Each target region has a fan-out of its own (:class:`FanOut`, consumer
group ``ClientIds.fanout_group(ns, r)``) reading the whole log and copying to its region only:
a region whose cluster is away or slow holds back only its own fan-out (its operations wait in
the log, read again from its group's commit once the cluster is back), never another region's
copies. A group with no commit starts where the single fan-out group of before stood, if it
did (:meth:`FanOut.place_group`), else at the log's beginning. The Kafka key is kept, so one
key's operations stay in order within each region's topic. In ``invalidate`` mode a set is
copied as a delete of the same key and version (core.outbox.region_copy). A batch's copies are
all sent, then their acks awaited, then the batch committed (walstream.replication.stage): a
crash copies some operations twice, which the region's last-write-wins reads as duplicates.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from walstream.core.fanout_start import start_offsets
from walstream.core.outbox import fanout_regions, origin_region, region_copy
from walstream.errors import PoisonRecordError
from walstream.kafka import clients
from walstream.kafka.admin import ensure_topics
from walstream.kafka.clients import ClientIds, start_client, stop_consumer
from walstream.namespaces.replication import Replicate, Replication
from walstream.records import Envelope, decode_envelope
from walstream.replication.stage import Batch, BatchStage, acked
from walstream.settings import Settings
from walstream.topology import region_topic, region_topic_specs

__all__ = ["FanOut", "fanouts", "region_servers"]

logger = logging.getLogger(__name__)


def region_servers(settings: Settings, cluster: str | None) -> str | list[str]:
    """The bootstrap servers of a region's cluster (None: the deployment's own)."""
    return cluster if cluster is not None else settings.bootstrap_list


class FanOut(BatchStage):
    """Copies a replicated namespace's log to one region's topic (``region``: its name), in a
    consumer group of its own; the operations made in that region are read and passed."""

    label = "replication fan-out"

    def __init__(
        self,
        settings: Settings,
        *,
        namespace: str,
        log_topic: str,
        replication: Replication,
        region: str,
        partitions: int | None = None,
        **kwargs: Any,
    ) -> None:
        config = replication.region(region)
        if config is None:
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
        #: the region copied to, and its cluster (None: the deployment's own)
        self.region = region
        self.cluster = config.bootstrap_servers
        self.partitions = partitions or settings.default_partitions
        self.invalidate = replication.replicate is Replicate.INVALIDATE
        self._targets = [region]
        self._topic = region_topic(namespace, region)
        self._producer: Any = None
        #: copies sent and acknowledged
        self.copies = 0

    async def start_clients(self) -> None:
        settings = self.settings
        servers = region_servers(settings, self.cluster)
        await ensure_topics(
            servers,
            region_topic_specs(
                self.namespace,
                self.region,
                self.partitions,
                replication_factor=settings.replication_factor,
                min_insync_replicas=settings.min_insync_replicas,
            ),
        )
        producer = clients.stage_producer(servers, group_id=self.group_id)
        self._producer = producer
        await start_client(producer)
        await self.place_group()

    async def place_group(self) -> None:
        """Before the group's first join: on each partition of the log the group has no commit
        for, commit where the namespace's single fan-out group of before stood, if it did
        (core.fanout_start), so that an upgrade does not copy the whole log again."""
        servers = self.settings.bootstrap_list
        consumer = _group_reader(servers, self.group_id)
        await start_client(consumer)
        try:
            parts = consumer.partitions_for_topic(self.topic) or ()
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            own = {tp: await consumer.committed(tp) for tp in tps}
            if all(offset is not None for offset in own.values()):
                return
            missing = [tp for tp, offset in own.items() if offset is None]
            legacy = ClientIds.legacy_fanout_group(self.namespace)
            start = start_offsets(own, [await _commits(servers, legacy, missing)])
            if not start:
                return
            consumer.assign(list(start))
            try:
                await consumer.commit(start)
            except KafkaError as exc:  # another instance of the group runs: it placed it
                logger.warning("%s: could not place group %s: %r", self.label, self.group_id, exc)
                return
            logger.info(
                "%s: group %s starts where group %s stood: %s",
                self.label,
                self.group_id,
                legacy,
                {tp.partition: offset for tp, offset in sorted(start.items())},
            )
        finally:
            await stop_consumer(consumer)

    async def stop_clients(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def handle(self, batch: Batch) -> None:
        acks = []
        producer = self._producer
        for records in batch.values():
            for record in records:
                if not fanout_regions(origin_region(record.value), self._targets):
                    continue  # made in this region
                # in value mode the bytes travel as they are: only the origin is read
                env = _envelope(record.value) if self.invalidate else None
                out = region_copy(
                    record.value, record.key, env, topic=self._topic, invalidate=self.invalidate
                )
                acks.append(
                    await producer.send(out.topic, out.value, key=out.key, partition=out.partition)
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
    """A fan-out per region of ``replication`` (what a worker runs for the namespace; tests and
    benchmarks running the stages in one process start each)."""
    return [
        FanOut(
            settings,
            namespace=namespace,
            log_topic=log_topic,
            replication=replication,
            region=region,
            **kwargs,
        )
        for region in replication.region_names
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
