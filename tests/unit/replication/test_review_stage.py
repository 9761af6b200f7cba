"""Issue 17 review: a replication stage passes a hole in a partition's offsets after 1 s (core
.fetch_gaps: taken as a real hole, compaction or a transaction marker), but the records of a
batch the embedded broker acked and stores late are no hole: if they are stored after that
second (a loaded machine: the tests note stalls of a second), the stage never hands them over
and the region never gets the operations. Walstream's log and region topics are never
compacted and never written in transactions: on them a hole is always a record still coming.
A scripted consumer serves the partition; the stage's clock is moved on by the test."""

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
    on (the broker's fetch lists the stored batches below its high watermark)."""

    def __init__(self, stored: set[int], committed: int) -> None:
        self.stored = stored
        self.position = committed
        self._committed = committed
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
        self._committed = offsets[TP]


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
