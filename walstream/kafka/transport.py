"""walstream's Faust transport (URL scheme ``walkafka://``): Faust's aiokafka driver, with table
recovery reading corrected end offsets (see walstream.kafka.offsets for the broker bug).

Registered through the ``faust.transports`` entry point. Only ``highwaters()`` changes, and Faust
calls it when it recovers tables, so steady-state consuming and producing are untouched. On Kafka
the correction finds nothing to correct.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from walstream.kafka.offsets import probe_end_offsets

__all__ = ["Consumer", "ConsumerThread", "Transport"]


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The aiokafka consumer thread with corrected highwaters."""

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        reported: Mapping[TP, int] = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return reported  # last stable offsets come from fetches already
        transport: Any = self.transport  # the aiokafka Transport, which has default_port
        servers = faust_aiokafka.server_list(transport.url, transport.default_port)
        corrected = await probe_end_offsets(servers, {tp: int(v) for tp, v in reported.items()})
        return {TP(tp.topic, tp.partition): offset for tp, offset in corrected.items()}


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, running :class:`ConsumerThread`."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`Consumer`."""

    Consumer: ClassVar[Any] = Consumer
