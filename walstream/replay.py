"""Replay for corruption recovery (seed 004): re-deliver a window of a namespace's log.

After restoring a target from a backup, replay the writes made since the backup, leaving out the
one that corrupted it (``skip_ids``). Records are delivered straight to their targets, each
partition in log order (a key lives on one partition, so per-key order holds), partitions side by
side. A failed record is tried a few times, then reported; replay does not dead-letter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from walstream.errors import PoisonRecordError, TargetError
from walstream.kafka.clients import stop_consumer
from walstream.namespaces.config import NamespaceConfig
from walstream.records import Envelope, decode_envelope
from walstream.targets.pool import TargetPool

__all__ = ["ReplayResult", "replay"]

logger = logging.getLogger(__name__)

_TRIES = 3


@dataclass
class ReplayResult:
    """What a replay did."""

    delivered: int = 0
    skipped: int = 0
    undecodable: int = 0
    failed: list[str] = field(default_factory=list)


async def _deliver(pool: TargetPool, env: Envelope) -> str | None:
    delay = 0.5
    for attempt in range(_TRIES):
        try:
            target, _ = await pool.target(env.target)
            await target.deliver(env)
            return None
        except TargetError as exc:
            if not exc.retriable or attempt == _TRIES - 1:
                return f"{env.id}: {exc}"
        await asyncio.sleep(delay)
        delay *= 2
    return f"{env.id}: gave up"  # pragma: no cover - the loop returns on its last try


async def replay(
    servers: str | list[str],
    ns: NamespaceConfig,
    pool: TargetPool,
    *,
    from_ms: int,
    to_ms: int,
    skip_ids: Collection[str] = (),
    on_record: Callable[[], None] | None = None,
) -> ReplayResult:
    """Re-deliver the log records created in [from_ms, to_ms) except ``skip_ids``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        client_id="walstream-replay",
    )
    await consumer.start()
    result = ReplayResult()
    try:
        await consumer.topics()
        tps = [
            TopicPartition(ns.topics.log, p)
            for p in consumer.partitions_for_topic(ns.topics.log) or ()
        ]
        starts = await consumer.offsets_for_times({tp: from_ms for tp in tps})
        tps = [tp for tp in tps if starts.get(tp) is not None]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp].offset)
        done: set[TopicPartition] = set()
        while len(done) < len(tps):
            batches = await consumer.getmany(*(set(tps) - done), timeout_ms=500)
            if not batches:
                for tp in set(tps) - done:  # nothing more: caught up with the partition
                    if consumer.highwater(tp) is not None and await consumer.position(
                        tp
                    ) >= consumer.highwater(tp):
                        done.add(tp)
                continue
            for tp, records in batches.items():
                for record in records:
                    if record.timestamp >= to_ms:
                        done.add(tp)
                        break
                    try:
                        env = decode_envelope(record.value)
                    except PoisonRecordError:
                        result.undecodable += 1
                        continue
                    if not from_ms <= env.created_at_ms < to_ms:
                        continue
                    if env.id in skip_ids:
                        result.skipped += 1
                        continue
                    failure = await _deliver(pool, env)
                    if failure is None:
                        result.delivered += 1
                    else:
                        result.failed.append(failure)
                    if on_record is not None:
                        on_record()
                if tp in done:
                    consumer.pause(tp)
    finally:
        await stop_consumer(consumer)
    return result
