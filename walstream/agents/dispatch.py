"""Concurrent handling that keeps each key's records in order, with bounded memory.

Faust's ``concurrency=N`` runs N actors over one stream: records of one key can then overtake
each other, and a WAL's targets (databases, caches) need a key's writes in turn. So each agent
runs one actor that hands records to a ``KeyedDispatcher``: up to ``limit`` records delivering at
once, one at a time per key. Records without a key are not ordered.

A record may be held until a time (``not_before_ms``: a delayed record handed over just before it
is due). Within a key, records run in due order: a record due earlier than one held goes first,
also when it arrived later (the delay stage hands records over ahead of time, and two of a key
due within that lead may reach the log in either order); records not held count as due now, and
equal due times keep arrival order.

Memory and fairness, the policy:

* A delivery slot (``limit``) is taken only by a record being delivered. Waiting for a key's turn
  or for a time takes none, so a slow key or held records never slow the other keys.
* ``max_pending`` bounds the records taken and not finished (delivering, waiting their turn, or
  held): the agent's memory bound. ``submit`` waits while that many are (backpressure on the
  stream). It does not depend on ``limit``: records behind a slow key need room, not slots.
* ``max_key_pending`` bounds one key's share: when a key holds that many, ``on_pause`` is called
  with its partition (the worker stops fetching it) and ``on_resume`` once every key of that
  partition is down to half. Records of that partition already fetched are still taken (within
  ``max_pending``): at most one fetch, which the worker bounds to ``max_key_pending`` records
  (Faust's ``broker_max_poll_records``, walstream.app), so that rest cannot fill the buffer.
  So a hot key with a slow target holds back only its own partition's later records, and only
  once it is that far behind: other partitions keep flowing. (The log is read
  in order: going further would mean reading a key's records again by offset later.)
* ``revoke(partitions)`` (a rebalance) drops the records of those partitions that have not
  started, at once, and gives those being delivered ``grace_s`` seconds before cancelling them.
  It returns their tags: none of them is acked, so the commit stays before them and the
  partition's next owner reads them again (walstream.kafka.transport's offset ledger). Until
  ``assign`` names a revoked partition again, ``submit`` refuses its records (returns False),
  and also refuses a record whose submit began before a revoke of its partition (waiting for
  room): they were read before the rebalance and are read again. A key's queue stays while its
  record runs, so a key never has two records running.

The agent acks a record when its handler finished, not when it was submitted. A commit never
passes a record that was not acked: Faust's own rule (``Consumer._new_offset``) would, so
walstream's transport commits by its offset ledger (walstream.core.offsets). A record whose
handler raised is never acked: it holds its partition's commit until the worker restarts and
reads it again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Hashable
from dataclasses import dataclass, field

__all__ = ["DEFAULT_MAX_PENDING", "KeyedDispatcher"]

logger = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]

#: Records taken and not finished, by default (Settings.deliver_max_pending).
DEFAULT_MAX_PENDING = 4_096


@dataclass(eq=False, slots=True)
class _Entry:
    job: Job
    partition: Hashable
    tag: object


@dataclass(eq=False)
class _KeyQueue:
    """A key's records not started yet, earliest due first, and the task working through them."""

    partition: Hashable
    waiting: list[tuple[int, int, _Entry]] = field(default_factory=list)
    #: set when a record arrives that may be due before the one being waited for
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    #: the record being delivered (holding a slot)
    running: _Entry | None = None
    #: records of the key taken and not finished
    count: int = 0


@dataclass(eq=False)
class _Alone:
    """A record without a key, and its task."""

    entry: _Entry
    task: asyncio.Task[None] | None = None
    running: bool = False


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class KeyedDispatcher:
    """Runs up to ``limit`` jobs at once; one at a time per key, in due order."""

    def __init__(
        self,
        limit: int,
        *,
        max_pending: int | None = None,
        max_key_pending: int | None = None,
        now_ms: Callable[[], int] = _wall_ms,
        on_pause: Callable[[Hashable], None] | None = None,
        on_resume: Callable[[Hashable], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._running = asyncio.Semaphore(limit)
        self._max_pending = max_pending or DEFAULT_MAX_PENDING
        self._pending = asyncio.Semaphore(self._max_pending)
        self._max_key_pending = max(1, max_key_pending or self._max_pending // 4)
        self._now_ms = now_ms
        self._on_pause = on_pause
        self._on_resume = on_resume
        self._queues: dict[Hashable, _KeyQueue] = {}
        self._alone: set[_Alone] = set()
        #: partition -> its keys at their cap (the partition is paused while any is)
        self._full: dict[Hashable, set[Hashable]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()
        self._in_flight = 0
        #: partitions revoked and not assigned again: their records are refused
        self._revoked: set[Hashable] = set()
        #: revoke calls so far, and the count at each partition's latest revoke
        self._revokes = 0
        self._revoked_at: dict[Hashable, int] = {}

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not finished."""
        return self._in_flight

    def paused(self) -> set[Hashable]:
        """Partitions paused because one of their keys is at its cap."""
        return set(self._full)

    async def submit(
        self,
        key: Hashable | None,
        job: Job,
        *,
        partition: Hashable = None,
        tag: object = None,
        not_before_ms: int | None = None,
    ) -> bool:
        """Queue ``job``: it runs once ``not_before_ms`` (wall clock) has passed, the key's jobs
        due before it finished, and a slot is free. A key's records must all name the same
        ``partition``; ``tag`` is what ``revoke`` returns for a job it gave up on. Returns
        False, the job not queued, if ``partition`` is revoked or was revoked while this call
        waited for room (the caller gives the record up unacked)."""
        started = self._revokes
        await self._pending.acquire()
        if partition in self._revoked or self._revoked_at.get(partition, 0) > started:
            self._pending.release()
            return False
        self._in_flight += 1
        due = not_before_ms or 0
        entry = _Entry(job, partition, tag)
        if key is None:
            alone = _Alone(entry)
            self._alone.add(alone)
            alone.task = self._spawn(self._run_alone(alone, due))
            return True
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _KeyQueue(partition)
            queue.task = self._spawn(self._run_key(key, queue))
        heapq.heappush(queue.waiting, (due, next(self._seq), entry))
        queue.count += 1
        if queue.count == self._max_key_pending:
            full = self._full.setdefault(partition, set())
            if not full and self._on_pause is not None:
                self._on_pause(partition)
            full.add(key)
        queue.arrived.set()
        return True

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _wait_until(self, due: int, arrived: asyncio.Event | None = None) -> bool:
        """Sleep until ``due`` (True), or until ``arrived`` is set first (False)."""
        # The loop's clock is not the wall clock: sleep again if woken a little early.
        while (wait_ms := due - self._now_ms()) > 0:
            if arrived is None:
                await asyncio.sleep(wait_ms / 1000)
                continue
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), wait_ms / 1000)
                return False
            except TimeoutError:
                continue
        return True

    async def _run_alone(self, alone: _Alone, due: int) -> None:
        try:
            await self._wait_until(due)
            async with self._running:
                alone.running = True
                await self._call(alone.entry.job)
        finally:
            self._alone.discard(alone)
            self._done()

    async def _run_key(self, key: Hashable, queue: _KeyQueue) -> None:
        try:
            while queue.waiting:
                due = queue.waiting[0][0]
                if not await self._wait_until(due, queue.arrived):
                    continue  # something arrived: maybe due earlier; look again
                async with self._running:
                    if not queue.waiting:
                        break  # revoked while waiting for a slot
                    _, _, entry = heapq.heappop(queue.waiting)
                    queue.running = entry
                    try:
                        await self._call(entry.job)
                    finally:
                        queue.running = None
                        queue.count -= 1
                        self._key_drained(key, queue)
                        self._done()
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]
            for _ in queue.waiting:  # cancelled: these never ran (their records are re-read)
                self._done()
            queue.waiting.clear()

    def _key_drained(self, key: Hashable, queue: _KeyQueue) -> None:
        full = self._full.get(queue.partition)
        if full is None or key not in full or queue.count > self._max_key_pending // 2:
            return
        full.discard(key)
        if not full:
            del self._full[queue.partition]
            if self._on_resume is not None:
                self._on_resume(queue.partition)

    async def _call(self, job: Job) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:  # jobs route their own failures; this is a bug, keep going
            logger.exception(
                "dispatched job raised: its record is not acked and holds its partition's "
                "commit until the worker restarts and reads it again"
            )

    def _done(self) -> None:
        self._in_flight -= 1
        self._pending.release()

    async def revoke(self, partitions: Collection[Hashable], *, grace_s: float) -> list[object]:
        """Give up the jobs of ``partitions``: those not started at once, those running after
        ``grace_s`` seconds (cancelled). Returns the tags of the jobs given up (not run to the
        end). Records of ``partitions`` are refused from now until they are assigned again."""
        revoked = set(partitions)
        self._revoked |= revoked
        self._revokes += 1
        for partition in revoked:
            self._revoked_at[partition] = self._revokes
        abandoned: list[object] = []
        cancel: list[asyncio.Task[None]] = []
        running: dict[asyncio.Task[None], _Entry] = {}
        for queue in list(self._queues.values()):
            if queue.partition not in revoked:
                continue
            # The queue stays until its task ends (_run_key): were it dropped while its record
            # runs, a later record of the key would start at once, beside or before it.
            abandoned.extend(entry.tag for _, _, entry in queue.waiting)
            for _ in queue.waiting:
                self._done()
            queue.count -= len(queue.waiting)
            queue.waiting.clear()
            # Not cancelled: woken, its task finds nothing waiting and ends, or takes a record
            # submitted once the partition is back. A task cancelled before its first step (a
            # revoke can run between a submit and the start of the task it made) never ran its
            # cleanup: its dead queue stayed, and swallowed the key's later records unacked.
            queue.arrived.set()
            if queue.task is not None and queue.running is not None:
                running[queue.task] = queue.running
        for alone in list(self._alone):
            if alone.entry.partition not in revoked or alone.task is None:
                continue
            if alone.running:
                running[alone.task] = alone.entry
            else:
                abandoned.append(alone.entry.tag)
                cancel.append(alone.task)
        for partition in revoked:
            self._full.pop(partition, None)  # the consumer forgets its pauses of them too
        for task in cancel:
            task.cancel()
        if running:
            _, late = await asyncio.wait(list(running), timeout=grace_s)
            for task in late:
                abandoned.append(running[task].tag)
                task.cancel()
                cancel.append(task)
        if cancel:
            await asyncio.gather(*cancel, return_exceptions=True)
        for alone in [a for a in self._alone if a.task is not None and a.task.cancelled()]:
            # cancelled before its first step: its cleanup (_run_alone's finally) never ran
            self._alone.discard(alone)
            self._done()
        if abandoned:
            logger.info(
                "rebalance: %d records of %d revoked partitions given up (not acked: the next "
                "owner reads them again)",
                len(abandoned),
                len(revoked),
            )
        return abandoned

    def assign(self, partitions: Collection[Hashable]) -> None:
        """Take records of ``partitions`` again (assigned to this worker by a rebalance)."""
        self._revoked.difference_update(partitions)

    async def join(self) -> None:
        """Wait for every job submitted so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel the jobs in flight (shutdown: their records are not acked, so re-read)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._queues.clear()
        self._alone.clear()
        paused, self._full = list(self._full), {}
        if self._on_resume is not None:
            for partition in paused:  # an agent restarted after a crash must not find them paused
                self._on_resume(partition)
        while self._in_flight > 0:  # tasks cancelled before they started never counted down
            self._done()
