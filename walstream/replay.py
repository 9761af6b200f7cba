"""Replay for corruption recovery (seed 004): re-deliver the writes of a window, never early.

After restoring a target from a backup, replay the writes made since the backup, leaving out the
one that corrupted it (``skip_ids``). Records are delivered straight to their targets, each
partition in log order (a key lives on one partition, so per-key order holds), partitions side by
side. A failed record is tried a few times, then reported; replay does not dead-letter.

What a replay of [from, to) covers (walstream.core.replay decides each record):

* every write made in the window (``created_at_ms``, the API's clock) that was due when the
  replay started and has reached the log. Each log partition is read from the first record
  written in the window (less a minute for clocks: ``_CLOCK_SLACK_MS``) to the end the partition
  had when the replay started, whatever the timestamps on the way: a delayed write enters the log
  when it comes due, possibly long after the window, and timestamps need not be in order;
* not a write due after the replay started. It has not been delivered yet: it waits in the delay
  tiers (a delayed write of a namespace without key ordering is not in the log until it is due)
  or in the worker, which delivers it at its due time. The replay counts the ones it sees in the
  log as ``pending`` (in a key-ordered namespace, with the later records of their key, which wait
  behind them in the worker), and names any of them in ``skip_ids`` in ``pending_skipped``: the
  replay cannot hold those back.

A failed delivery (a TargetError) is reported and the replay goes on. Any other error (the
broker, a bug, a target that raised something else) stops it: ``ReplayResult.error`` says why
and ``resume_from`` is the cursor to go on from (``partition:offset`` of each partition not
finished, the offset of the first record not replayed; ``walstream replay --resume-from``).
Records before the cursor are not delivered again; the one that stopped it is tried again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from walstream.aio import Backoff
from walstream.clock import Clock, SystemClock
from walstream.core.replay import ReplayPlan, Verdict, cursor_refusal, format_cursor
from walstream.errors import PoisonRecordError, TargetError
from walstream.kafka import clients
from walstream.kafka.clients import start_client, stop_consumer
from walstream.kafka.offsets import probe_end_offsets
from walstream.namespaces.config import NamespaceConfig
from walstream.records import Envelope, decode_envelope
from walstream.targets.pool import TargetPool

__all__ = ["ReplayResult", "replay"]

logger = logging.getLogger(__name__)

#: A replayed delivery is tried this many times (a retriable target error), waiting 0.5 s, 1 s
_TRIES = 3
_RETRY_BACKOFF = Backoff(first_s=0.5, cap_s=0.5 * 2**_TRIES)
#: Reading starts this long before the window: a record's log timestamp comes from the clock of
#: the process that produced it, its write time from the API's.
_CLOCK_SLACK_MS = 60_000


@dataclass
class ReplayResult:
    """What a replay did."""

    delivered: int = 0
    skipped: int = 0
    undecodable: int = 0
    failed: list[str] = field(default_factory=list)
    #: Records of the window not yet due when the replay started: left to the worker.
    pending: int = 0
    #: ``skip_ids`` among them: the worker will still deliver these when due.
    pending_skipped: list[str] = field(default_factory=list)
    #: Why the replay stopped before the end (None: it reached the end).
    error: str | None = None
    #: Where to go on from when it stopped: partition -> first offset not replayed.
    resume_from: dict[int, int] | None = None

    @property
    def cursor(self) -> str | None:
        """``--resume-from`` for a stopped replay (None: it finished)."""
        return format_cursor(self.resume_from) if self.resume_from is not None else None


async def deliver_once(pool: TargetPool, env: Envelope, ns: NamespaceConfig) -> str | None:
    """Deliver one replayed record, retrying a transient failure a few times; the failure's
    text when it did not go (None: delivered)."""
    delays = _RETRY_BACKOFF.delays()
    for attempt in range(_TRIES):
        try:
            # allowed_targets hold here too; the lease keeps an evicted cluster's producer open
            async with pool.lease(env.target, ns) as (target, _):
                await target.deliver(env)
            return None
        except TargetError as exc:
            if not exc.retriable or attempt == _TRIES - 1:
                return f"{env.id}: {exc}"
        await asyncio.sleep(next(delays))
    return f"{env.id}: gave up"  # pragma: no cover - the loop returns on its last try


async def _spans(
    consumer: AIOKafkaConsumer, servers: str | list[str], topic: str, from_ms: int
) -> tuple[dict[TopicPartition, tuple[int, int]], dict[int, int]]:
    """Per partition of ``topic``: [the first offset at or after ``from_ms``, the end now), for
    the partitions with records there; and every partition's end now."""
    await consumer.topics()
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not tps:
        return {}, {}
    starts = await consumer.offsets_for_times({tp: max(0, from_ms) for tp in tps})
    # The true ends: the embedded broker under-reports ListOffsets (walstream.kafka.offsets).
    ends = await probe_end_offsets(servers, await consumer.end_offsets(tps))
    spans = {}
    for tp in tps:
        start = starts.get(tp)
        if start is not None and start.offset < ends[tp]:
            spans[tp] = (start.offset, ends[tp])
    return spans, {tp.partition: end for tp, end in ends.items()}


async def replay(
    servers: str | list[str],
    ns: NamespaceConfig,
    pool: TargetPool,
    *,
    from_ms: int,
    to_ms: int,
    skip_ids: Collection[str] = (),
    on_record: Callable[[], None] | None = None,
    clock: Clock | None = None,
    resume_from: Mapping[int, int] | None = None,
) -> ReplayResult:
    """Re-deliver the writes made in [from_ms, to_ms) that were due when the replay started,
    except ``skip_ids`` (see the module docstring for exactly what is covered).

    ``resume_from``: the cursor of a replay that stopped; only the partitions it names are
    read, each from its offset. A non-target error stops the replay with ``error`` and
    ``resume_from`` set (never raised)."""
    plan = ReplayPlan(
        from_ms=from_ms,
        to_ms=to_ms,
        started_ms=(clock or SystemClock()).now_ms(),
        skip_ids=skip_ids,
        key_ordered=ns.key_ordered,
    )
    consumer = clients.reader(servers, clients.REPLAY)
    result = ReplayResult()
    spans: dict[TopicPartition, tuple[int, int]] = {}
    next_at: dict[TopicPartition, int] = {}  # the first offset not replayed yet
    try:
        await start_client(consumer)  # a broker down: reported as any other stop, not raised
        spans, ends = await _spans(consumer, servers, ns.topics.log, from_ms - _CLOCK_SLACK_MS)
        if resume_from is not None:
            refused = cursor_refusal(resume_from, ends)
            if refused is not None:  # not a cursor of this log: nothing to resume from
                result.error = f"resume_from: {refused}"
                logger.error("replay of %s refused: %s", ns.name, result.error)
                return result
            spans = {
                tp: (max(start, resume_from[tp.partition]), end)
                for tp, (start, end) in spans.items()
                if tp.partition in resume_from and resume_from[tp.partition] < end
            }
        next_at = {tp: start for tp, (start, _) in spans.items()}
        consumer.assign(list(spans))
        for tp, (start, _) in spans.items():
            consumer.seek(tp, start)
        left = set(spans)
        while left:
            batches = await consumer.getmany(*left, timeout_ms=500)
            for tp, records in batches.items():
                end = spans[tp][1]
                for record in records:
                    if record.offset >= end:  # written after the replay started
                        break
                    await _one(pool, ns, plan, result, tp.partition, record.value, on_record)
                    next_at[tp] = record.offset + 1
            for tp in list(left):
                if await consumer.position(tp) >= spans[tp][1]:
                    next_at[tp] = spans[tp][1]
                    left.discard(tp)
                    consumer.pause(tp)
    except Exception as exc:  # noqa: BLE001 - reported with the cursor to resume from
        result.error = f"{type(exc).__name__}: {exc}"
        if spans:
            result.resume_from = {
                tp.partition: next_at.get(tp, start)
                for tp, (start, end) in spans.items()
                if next_at.get(tp, start) < end
            }
        else:  # stopped before reading anything: resume from the same place
            result.resume_from = dict(resume_from) if resume_from is not None else None
        logger.error(
            "replay of %s stopped: %s; resume from %s", ns.name, result.error, result.cursor
        )
    finally:
        await stop_consumer(consumer)
    return result


async def _one(
    pool: TargetPool,
    ns: NamespaceConfig,
    plan: ReplayPlan,
    result: ReplayResult,
    partition: int,
    value: bytes | None,
    on_record: Callable[[], None] | None,
) -> None:
    try:
        env = decode_envelope(value)
    except PoisonRecordError:
        result.undecodable += 1
        return
    verdict = plan.verdict(
        partition=partition,
        record_id=env.id,
        key=env.key,
        created_at_ms=env.created_at_ms,
        due_ms=env.due_ms,
    )
    if verdict is Verdict.OUTSIDE:
        return
    if verdict is Verdict.PENDING:
        result.pending += 1
        if env.id in plan.skip_ids:
            result.pending_skipped.append(env.id)
    elif verdict is Verdict.SKIP:
        result.skipped += 1
    else:
        failure = await deliver_once(pool, env, ns)
        if failure is None:
            result.delivered += 1
        else:
            result.failed.append(failure)
    if on_record is not None:
        on_record()
