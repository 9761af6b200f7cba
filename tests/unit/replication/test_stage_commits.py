"""A replication stage commits beside its loop (walstream.replication.stage.BatchStage): the next
batch is handled while the last one's commit is in flight, one commit at a time, the committed
position only moves forward and never past a handled record, a failed commit is carried by the
next one, and a rebalance commits what was handled before the partitions go."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from walstream.replication.stage import Batch, BatchStage
from walstream.settings import Settings

TP = TopicPartition("wal.ns.region.b", 0)
TP1 = TopicPartition("wal.ns.region.b", 1)


@dataclass
class Rec:
    offset: int


class ScriptedGroup:
    """A consumer whose fetches are scripted and whose commits wait for the test's word. Given
    ``assigned``, it refuses, as aiokafka's AIOKafkaConsumer.commit does, offsets of a partition
    not assigned to it (IllegalStateError 'Partition ... is not assigned')."""

    def __init__(self, assigned: set[Any] | None = None) -> None:
        self.assigned = assigned
        self.fetches: list[dict[Any, list[Rec]]] = []
        self.commits: list[dict[Any, int]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.release.set()
        self.refuse = 0  # commits to refuse before one goes through

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Rec]]:
        return self.fetches.pop(0) if self.fetches else {}

    def seek(self, tp: Any, offset: int) -> None:
        raise AssertionError("no hole in these logs")

    async def committed(self, tp: Any) -> int | None:
        return 0

    async def beginning_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: 0 for tp in tps}

    async def commit(self, offsets: dict[Any, int]) -> None:
        for tp in offsets:  # aiokafka/consumer/consumer.py, AIOKafkaConsumer.commit
            if self.assigned is not None and tp not in self.assigned:
                raise IllegalStateError(f"Partition {tp} is not assigned")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            if self.refuse:
                self.refuse -= 1
                raise CommitFailedError("the group rebalanced")
            self.commits.append(dict(offsets))
        finally:
            self.in_flight -= 1


class Recording(BatchStage):
    def __init__(self, group: ScriptedGroup, **settings: Any) -> None:
        super().__init__(
            Settings(bootstrap_servers="x:1", **settings),
            topic=TP.topic,
            group_id="g",
            servers="x:1",
        )
        self.consumer = group
        self.ledger.assign(group.assigned if group.assigned is not None else [TP, TP1])
        self.seen: list[tuple[int, int]] = []

    async def handle(self, batch: Batch) -> None:
        for tp, records in batch.items():
            self.seen += [(tp.partition, record.offset) for record in records]


def records(first: int, last: int) -> list[Rec]:
    return [Rec(o) for o in range(first, last + 1)]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_next_batch_is_handled_while_a_commit_is_in_flight():
    group = ScriptedGroup()
    group.release.clear()  # the coordinator is slow
    group.fetches = [{TP: records(0, 9)}, {TP: records(10, 19)}, {TP: records(20, 29)}]
    stage = Recording(group)
    await stage._step()
    await settle()
    assert group.in_flight == 1
    assert group.commits == []
    await stage._step()  # not held by the commit in flight
    await stage._step()
    assert [offset for _, offset in stage.seen] == list(range(30))
    assert group.most_in_flight == 1  # one commit at a time: the others wait and merge
    group.release.set()
    await stage.flush()
    # the first commit as it was asked, then the offsets handled meanwhile in one commit
    assert group.commits == [{TP: 10}, {TP: 30}]


async def test_a_commit_never_passes_a_record_not_handled():
    group = ScriptedGroup()
    group.fetches = [{TP: records(0, 4), TP1: records(0, 2)}]
    stage = Recording(group)
    stage.ledger.track(TP1, 3)  # a record of TP1 without an outcome yet
    await stage._step()
    await stage.flush()
    # TP1 moves up to its offset 3 (the next to read), not past it, until 3 has an outcome
    assert group.commits == [{TP: 5, TP1: 3}]


async def test_a_failed_commit_is_carried_by_the_next_one():
    group = ScriptedGroup()
    group.refuse = 2  # the commit beside the loop and the flush's one try
    group.fetches = [{TP: records(0, 9)}]
    stage = Recording(group)
    await stage._step()
    await stage.flush()
    assert group.commits == []  # refused: nothing committed, nothing lost
    await stage._step()  # an empty fetch tries the pending offsets again
    await stage.flush()
    assert group.commits == [{TP: 10}]


async def test_a_newer_offset_wins_over_a_refused_older_one():
    group = ScriptedGroup()
    group.refuse = 1
    group.release.clear()
    group.fetches = [{TP: records(0, 9)}, {TP: records(10, 19)}]
    stage = Recording(group)
    await stage._step()
    await settle()
    await stage._step()  # offset 20 waits behind the commit of 10, which is refused
    group.release.set()
    await settle()
    await stage.flush()
    assert group.commits == [{TP: 20}]


async def test_a_rebalance_commits_what_was_handled_before_the_partitions_go():
    group = ScriptedGroup()
    group.release.clear()
    group.fetches = [{TP: records(0, 9), TP1: records(0, 4)}]
    stage = Recording(group)
    await stage._step()
    await settle()
    revoking = asyncio.ensure_future(stage.partitions_revoked({TP, TP1}))
    await settle()
    assert not revoking.done()  # it waits for the commit in flight
    group.release.set()
    await revoking
    assert group.commits == [{TP: 10, TP1: 5}]
    assert not stage.ledger.assigned(TP)


async def test_offsets_of_revoked_partitions_not_committed_are_dropped():
    group = ScriptedGroup()
    group.refuse = 2  # the coordinator refuses both tries: the member is no longer in the group
    group.fetches = [{TP: records(0, 9)}]
    stage = Recording(group)
    await stage._step()
    await settle()
    await stage.partitions_revoked({TP})
    group.refuse = 0
    await stage.flush()
    assert group.commits == []  # the partition's new owner commits it, not this member


async def test_commits_are_spaced_by_the_commit_interval():
    # a batch comes every few ms: one commit each would be a broker request each
    group = ScriptedGroup()
    group.fetches = [{TP: records(i * 10, i * 10 + 9)} for i in range(5)]
    stage = Recording(group, commit_interval_s=60.0)
    for _ in range(5):
        await stage._step()
        await settle()
    assert group.commits == [{TP: 10}]  # the first at once, the others wait for the interval
    await stage.flush()  # a stop or a rebalance does not wait for it
    assert group.commits == [{TP: 10}, {TP: 50}]  # merged into one, never past a handled record


async def test_offsets_waiting_for_the_interval_are_committed_when_it_ends():
    group = ScriptedGroup()
    group.fetches = [{TP: records(0, 9)}, {TP: records(10, 19)}]
    stage = Recording(group, commit_interval_s=0.05)
    await stage._step()
    await settle()  # the first commit goes at once
    await stage._step()
    for _ in range(500):  # no flush: the interval's end commits them (5 s at most)
        if len(group.commits) == 2:
            break
        await asyncio.sleep(0.01)
    assert group.commits == [{TP: 10}, {TP: 20}]


async def test_a_revoked_partition_put_back_by_a_late_failed_commit_blocks_every_commit():
    group = ScriptedGroup({TP, TP1})
    group.release.clear()  # the coordinator is slow
    group.fetches = [{TP: records(0, 9)}]
    stage = Recording(group, broker_session_timeout_s=0.2, broker_heartbeat_interval_s=0.05)
    await stage._step()
    await settle()  # the commit of {TP: 10} is in flight
    await stage.partitions_revoked({TP, TP1})  # its flush gives up after the session timeout
    # the new assignment: TP went to another member, TP1 stays here
    group.assigned = {TP1}
    stage.ledger.assign([TP1])
    stage.gaps.forget([TP1])
    group.refuse = 1  # the commit in flight from before the rebalance is refused
    group.release.set()
    await settle()
    group.fetches = [{TP1: records(0, 4)}]
    await stage._step()
    await settle()
    await stage.flush()
    await stage._step()  # an empty fetch tries the pending offsets again
    await settle()
    await stage.flush()
    assert TP not in stage._to_commit, "a revoked partition's offset is pending again"
    assert group.commits == [{TP1: 5}], "TP1's handled records are never committed"
