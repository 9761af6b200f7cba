"""A region DLQ's size (issue 17 item 6): ``walstream_replication_dlq_records{namespace,region}``,
the open entries of ``wal.<ns>.region.<r>.dlq`` (entries not redriven or discarded).

It runs beside a region's writer (a child of it: started and stopped with it), tailing the
region's DLQ on the region's cluster from its beginning without a consumer group, and folding
entries and markers into a ``DlqTally`` (an id and a time per open entry, never the records),
as the namespaces' DLQ monitor does. Every process running the region's writer reports the
whole DLQ: aggregate with ``max``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import mode
from aiokafka.errors import KafkaError

from walstream.aio import Backoff, supervised
from walstream.core.dlq import DlqTally, parse_dlq_record
from walstream.kafka import clients
from walstream.kafka.clients import assign_from_start, start_client, stop_consumer
from walstream.metrics import WalMetrics

__all__ = ["RegionDlqGauge"]

logger = logging.getLogger(__name__)


class RegionDlqGauge(mode.Service):
    """Keeps ``walstream_replication_dlq_records`` of one region's DLQ current."""

    def __init__(
        self,
        metrics: WalMetrics,
        *,
        namespace: str,
        region: str,
        topic: str,
        servers: str | list[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics
        self.namespace = namespace
        self.region = region
        self.topic = topic
        self.servers = servers
        self.tally = DlqTally()

    def _gauge(self) -> Any:
        return self.metrics.replication_dlq.labels(self.namespace, self.region)

    async def on_start(self) -> None:
        self._gauge().set(0)

    async def on_shutdown(self) -> None:
        # after its task has ended (mode stops a service's tasks after on_stop): none sets it
        # again
        with contextlib.suppress(KeyError):  # the region's writer is gone: so is its gauge
            self.metrics.replication_dlq.remove(self.namespace, self.region)

    @mode.Service.task
    async def _run(self) -> None:
        await supervised(
            f"region DLQ gauge {self.topic}",
            self._fold,
            backoff=Backoff(first_s=0.5, cap_s=30.0),
            log=logger,
            running=lambda: not self.should_stop,
            expected=(Exception,),  # a metric must never take the writer down: no traceback
            retry_word="starting over",
        )

    async def _fold(self) -> None:
        """Fold the DLQ from its beginning, then follow it (until stopped, or a failure)."""
        self.tally = DlqTally()
        consumer = clients.reader(self.servers, clients.DLQ_MONITOR)
        try:
            await start_client(consumer)
            if not await assign_from_start(consumer, [self.topic], within_s=5.0):
                raise KafkaError(f"no metadata for {self.topic}")
            while not self.should_stop:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for tp, records in batches.items():
                    for record in records:
                        self.tally.apply(
                            parse_dlq_record(
                                record.key,
                                None,
                                record.headers or (),
                                partition=tp.partition,
                                offset=record.offset,
                            )
                        )
                self._gauge().set(self.tally.open_count)
        finally:
            await stop_consumer(consumer)
