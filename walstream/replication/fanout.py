"""The fan-out stage of a replicated namespace (issue 17): its log, copied to each region's topic.

Every operation in ``wal.<ns>.log`` is copied to ``wal.<ns>.region.<r>`` for every region r
but the one it was made in (its target's ``origin_region``), on the region's own Kafka cluster
when it names one. The Kafka key is kept, so one key's operations stay in order within each
region's topic. In ``invalidate`` mode a set is copied as a delete of the same key and version
(core.outbox.region_copy). A batch's copies are all sent, then their acks awaited, then the
batch committed (walstream.replication.stage): a crash copies some operations twice, which
the regions' last-write-wins reads as duplicates.
"""

from __future__ import annotations

from typing import Any

from walstream.core.outbox import fanout_regions, origin_region, region_copy
from walstream.errors import PoisonRecordError
from walstream.kafka import clients
from walstream.kafka.admin import ensure_topics
from walstream.kafka.clients import ClientIds, start_client
from walstream.namespaces.replication import Replicate, Replication
from walstream.records import Envelope, decode_envelope
from walstream.replication.stage import Batch, BatchStage, acked
from walstream.settings import Settings
from walstream.topology import region_topic, region_topic_specs

__all__ = ["FanOut", "region_servers"]


def region_servers(settings: Settings, cluster: str | None) -> str | list[str]:
    """The bootstrap servers of a region's cluster (None: the deployment's own)."""
    return cluster if cluster is not None else settings.bootstrap_list


class FanOut(BatchStage):
    """Copies a replicated namespace's log to its regions' topics."""

    label = "replication fan-out"

    def __init__(
        self,
        settings: Settings,
        *,
        namespace: str,
        log_topic: str,
        replication: Replication,
        partitions: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            settings,
            topic=log_topic,
            group_id=ClientIds.fanout_group(namespace),
            servers=settings.bootstrap_list,
            **kwargs,
        )
        self.namespace = namespace
        self.replication = replication
        self.partitions = partitions or settings.default_partitions
        self.invalidate = replication.replicate is Replicate.INVALIDATE
        self.regions = list(replication.region_names)
        self._topics = {r: region_topic(namespace, r) for r in self.regions}
        #: one producer per Kafka cluster (None: the deployment's own), and each region's
        self._producers: dict[str | None, Any] = {}
        self._producer_of: dict[str, Any] = {}
        #: copies sent and acknowledged
        self.copies = 0

    async def start_clients(self) -> None:
        settings = self.settings
        for region in self.replication.regions:
            cluster = region.bootstrap_servers
            servers = region_servers(settings, cluster)
            await ensure_topics(
                servers,
                region_topic_specs(
                    self.namespace,
                    region.name,
                    self.partitions,
                    replication_factor=settings.replication_factor,
                    min_insync_replicas=settings.min_insync_replicas,
                ),
            )
            if cluster not in self._producers:
                producer = clients.stage_producer(servers, group_id=self.group_id)
                self._producers[cluster] = producer
                await start_client(producer)
            self._producer_of[region.name] = self._producers[cluster]

    async def stop_clients(self) -> None:
        producers, self._producers = self._producers, {}
        for producer in producers.values():
            await producer.stop()

    async def handle(self, batch: Batch) -> None:
        acks = []
        for records in batch.values():
            for record in records:
                # in value mode the bytes travel as they are: only the origin is read
                env = _envelope(record.value) if self.invalidate else None
                for region in fanout_regions(origin_region(record.value), self.regions):
                    out = region_copy(
                        record.value,
                        record.key,
                        env,
                        topic=self._topics[region],
                        invalidate=self.invalidate,
                    )
                    acks.append(
                        await self._producer_of[region].send(
                            out.topic, out.value, key=out.key, partition=out.partition
                        )
                    )
        await acked(acks)
        self.copies += len(acks)


def _envelope(value: bytes | None) -> Envelope | None:
    """The envelope, or None for bytes that are none (every region's writer dead-letters them,
    with the reason)."""
    try:
        return decode_envelope(value)
    except PoisonRecordError:
        return None
