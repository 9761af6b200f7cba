"""A replication stage never steps over a record it was not handed (walstream.core.fetch_gaps in
BatchStage): the embedded broker can hand out a batch before an earlier one it acked is stored
(two producers appending to one partition at once), and a reader that moved past the hole would
never see the earlier batch. Here a scripted consumer serves a log whose first batch is stored
late, as that broker race does."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from walstream.replication.stage import Batch, BatchStage
from walstream.settings import Settings

TP = TopicPartition("wal.ns.region.b", 0)


@dataclass
class Rec:
    offset: int


class RacingLog:
    """A partition whose stored offsets grow; a fetch returns what is stored from the position
    on, as the broker's fetch lists stored batches below its high watermark."""

    def __init__(self, stored: set[int], committed: int | None = None) -> None:
        self.stored = stored
        self.position = committed if committed is not None else 0
        self._committed = committed
        self.commits: list[int] = []
        self.seeks: list[int] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Rec]]:
        records = [Rec(o) for o in sorted(self.stored) if o >= self.position][:max_records]
        if records:
            self.position = records[-1].offset + 1
            return {TP: records}
        return {}

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append(offset)
        self.position = offset

    async def committed(self, tp: Any) -> int | None:
        return self._committed

    async def beginning_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: 0 for tp in tps}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(offsets[TP])


class Recording(BatchStage):
    def __init__(self, log: RacingLog, **settings: Any) -> None:
        super().__init__(
            Settings(bootstrap_servers="x:1", **settings),
            topic=TP.topic,
            group_id="g",
            servers="x:1",
        )
        self.consumer = log
        self.ledger.assign([TP])
        self.seen: list[int] = []

    async def handle(self, batch: Batch) -> None:
        self.seen += [record.offset for record in batch.get(TP, [])]


async def test_a_batch_stored_late_at_the_start_is_not_stepped_over():
    # client a's first batch (0-24) is acked but stored after client b's (25-49) is fetchable
    log = RacingLog(stored=set(range(25, 50)))
    stage = Recording(log)
    await stage._step()
    assert stage.seen == []  # 25.. lies past the hole at 0: read again from 0
    assert log.seeks == [0]
    log.stored |= set(range(25))  # stored now
    await stage._step()
    assert stage.seen == list(range(50))
    await stage.flush()  # the commit runs beside the loop
    assert log.commits == [50]


async def test_a_batch_stored_late_mid_stream_is_not_stepped_over():
    log = RacingLog(stored=set(range(10)), committed=0)
    stage = Recording(log)
    await stage._step()
    await stage.flush()
    log.stored |= set(range(20, 30))  # 10-19 acked, not stored yet
    await stage._step()
    assert log.seeks == [10]
    log.stored |= set(range(10, 20))
    await stage._step()
    assert stage.seen == list(range(30))
    await stage.flush()
    assert log.commits == [10, 30]  # never past a record not handled


async def test_a_group_with_a_commit_expects_its_committed_offset():
    log = RacingLog(stored=set(range(100, 110)) | set(range(112, 120)), committed=100)
    stage = Recording(log)
    await stage._step()
    assert stage.seen == list(range(100, 110))
    assert log.seeks == [110]


# -- a batch stored late by more than a second (issue 17 review): walstream's log and region
# topics are never compacted nor transactional, so on them a hole is a record still coming; it
# is waited for WALSTREAM_REPLICATION_HOLE_WAIT_S. The stage's clock is moved on by the test.


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


async def test_records_stored_more_than_a_second_late_are_still_handed_over(monkeypatch):
    clock = Clock()
    # the stage's own clock only (the event loop keeps the real one)
    monkeypatch.setattr(
        "walstream.replication.stage.time", SimpleNamespace(monotonic=clock.monotonic)
    )
    log = RacingLog(stored=set(range(10)), committed=0)
    stage = Recording(log)
    await stage._step()
    log.stored |= set(range(20, 30))  # 10-19 acked, not stored yet
    await stage._step()
    assert log.seeks == [10]  # read again from the hole
    clock.now += 1.5  # the broker takes a while to store 10-19
    await stage._step()
    log.stored |= set(range(10, 20))  # stored now
    for _ in range(3):
        await stage._step()
    assert sorted(set(stage.seen)) == list(range(30)), stage.seen


async def test_a_hole_is_passed_after_the_hole_wait_setting(monkeypatch):
    # on Kafka a transactional producer's marker is a hole for good: it holds the partition
    # for WALSTREAM_REPLICATION_HOLE_WAIT_S, then the stage goes on
    clock = Clock()
    monkeypatch.setattr(
        "walstream.replication.stage.time", SimpleNamespace(monotonic=clock.monotonic)
    )
    log = RacingLog(stored=set(range(10)) | set(range(11, 20)), committed=0)
    stage = Recording(log, replication_hole_wait_s=5.0)
    await stage._step()
    await stage._step()
    assert stage.seen == list(range(10))  # 11.. waits behind the hole at 10
    clock.now += 4.0
    await stage._step()
    assert stage.seen == list(range(10))
    clock.now += 1.5
    await stage._step()
    await stage._step()
    assert stage.seen == list(range(10)) + list(range(11, 20))
