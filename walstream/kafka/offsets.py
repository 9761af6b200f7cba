"""True end offsets, for brokers whose ListOffsets(latest) under-reports.

Tansu 0.6.0 answers ListOffsets(latest) with the base offset of the last record batch + 1 when
records were produced in batches, while the high watermark in a Fetch response is right. A reader
that trusts ListOffsets stops short: Faust recovers tables with missing updates (memory store) or
refuses to start (rocksdb store: "persisted offset is higher than the highwater").

The correction fetches each partition from its reported end and keeps the larger of the reported
end and the fetch's high watermark. On Kafka the two agree, so the result is unchanged; the cost is
one short fetch per partition, paid only where end offsets are asked for (table recovery), never
in steady-state processing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiokafka import TopicPartition

from walstream.kafka import clients
from walstream.kafka.clients import stop_consumer

__all__ = ["probe_end_offsets"]

logger = logging.getLogger(__name__)


async def probe_end_offsets(
    bootstrap_servers: str | list[str],
    reported: Mapping[TopicPartition, int],
    *,
    within_s: float = 10.0,
) -> dict[TopicPartition, int]:
    """Correct ``reported`` end offsets with the high watermark of a fetch at each of them.

    Partitions whose high watermark could not be read within ``within_s`` keep the reported value.
    """
    if not reported:
        return {}
    probe = clients.reader(bootstrap_servers, clients.END_OFFSETS)
    corrected = dict(reported)
    await probe.start()
    try:
        tps = list(reported)
        probe.assign(tps)
        for tp in tps:
            probe.seek(tp, reported[tp])
        deadline = asyncio.get_running_loop().time() + within_s
        pending = set(tps)
        while pending and asyncio.get_running_loop().time() < deadline:
            await probe.getmany(*pending, timeout_ms=100)
            for tp in list(pending):
                highwater = probe.highwater(tp)
                if highwater is not None:
                    corrected[tp] = max(reported[tp], highwater)
                    pending.discard(tp)
        if pending:
            logger.warning("end offsets unverified for %d partitions: %s", len(pending), pending)
    finally:
        await stop_consumer(probe)
    fixed = {tp: (reported[tp], corrected[tp]) for tp in tps if corrected[tp] != reported[tp]}
    if fixed:
        logger.info("corrected under-reported end offsets: %s", fixed)
    return corrected
