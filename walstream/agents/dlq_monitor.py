"""DLQ monitor: open entries and the age of the oldest, per namespace, as Prometheus gauges.

Every worker tails every namespace's DLQ topic from its beginning (no consumer group: each one
needs the whole topic) and folds entries and markers into a ``DlqTally`` per namespace: an id and
a time per open entry, never the records. Each worker therefore reports the whole DLQ; aggregate
across workers with ``max``, not ``sum``. When the set of namespaces changes, the fold starts over
(a rare event; a DLQ is read at the broker's speed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import mode
from aiokafka.errors import KafkaError

from walstream.aio import Backoff, supervised
from walstream.clock import Clock, SystemClock
from walstream.core.dlq import DlqTally, parse_dlq_record
from walstream.kafka import clients
from walstream.kafka.clients import assign_from_start, stop_consumer
from walstream.metrics import WalMetrics
from walstream.settings import Settings

__all__ = ["DlqMonitor"]

logger = logging.getLogger(__name__)

_REPORT_EVERY_MS = 1_000

#: the waits before a fold that failed starts over, in a row
_BACKOFF = Backoff(first_s=0.5, cap_s=30.0)


class DlqMonitor(mode.Service):
    """Keeps ``walstream_dlq_records`` and ``walstream_dlq_oldest_age_seconds`` current."""

    def __init__(
        self,
        settings: Settings,
        metrics: WalMetrics,
        *,
        clock: Clock | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics
        self.clock = clock or SystemClock()
        #: namespace -> its DLQ topic, as wanted; the fold restarts when it changes
        self._wanted: dict[str, str] = {}
        self._changed = asyncio.Event()
        self.tallies: dict[str, DlqTally] = {}

    def watch(self, dlq_topics: Iterable[tuple[str, str]]) -> None:
        """Set the (namespace, DLQ topic) pairs to report."""
        wanted = dict(dlq_topics)
        if wanted != self._wanted:
            self._wanted = wanted
            self._changed.set()

    @mode.Service.task
    async def _run(self) -> None:
        await supervised(
            "DLQ monitor",
            self._step,
            backoff=_BACKOFF,
            log=logger,
            running=lambda: not self.should_stop,
            expected=(Exception,),  # metrics must never take the worker down: no traceback
            on_error=lambda exc: self._changed.set(),  # fold again from the start
            retry_word="starting over",
        )

    async def _step(self) -> None:
        await self._changed.wait()
        self._changed.clear()
        await self._fold(dict(self._wanted))

    async def _fold(self, wanted: dict[str, str]) -> None:
        """Fold the wanted DLQ topics until the wanted set changes (or the service stops)."""
        for gone in set(self.tallies) - set(wanted):
            for gauge in (self.metrics.dlq_open, self.metrics.dlq_oldest_age):
                with contextlib.suppress(KeyError):  # never reported
                    gauge.remove(gone)
        self.tallies = {ns: DlqTally() for ns in wanted}
        if not wanted:
            return
        namespace_of = {topic: ns for ns, topic in wanted.items()}
        consumer = clients.reader(self.settings.bootstrap_list, clients.DLQ_MONITOR)
        await consumer.start()
        try:
            assigned = await assign_from_start(consumer, sorted(namespace_of), within_s=5.0)
            missing = set(namespace_of) - {tp.topic for tp in assigned}
            if missing:
                raise KafkaError(f"no metadata for {sorted(missing)}")
            last_report = 0
            while not self.should_stop and not self._changed.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for tp, records in batches.items():
                    tally = self.tallies[namespace_of[tp.topic]]
                    for record in records:
                        tally.apply(
                            parse_dlq_record(
                                record.key,
                                None,
                                record.headers or (),
                                partition=tp.partition,
                                offset=record.offset,
                            )
                        )
                now = self.clock.now_ms()
                if now - last_report >= _REPORT_EVERY_MS:
                    self._report(now)
                    last_report = now
        finally:
            await stop_consumer(consumer)

    def _report(self, now_ms: int) -> None:
        for ns, tally in self.tallies.items():
            self.metrics.dlq_open.labels(ns).set(tally.open_count)
            oldest = tally.oldest_dead_at_ms()
            age = max(0, now_ms - oldest) / 1000 if oldest is not None else 0.0
            self.metrics.dlq_oldest_age.labels(ns).set(age)
