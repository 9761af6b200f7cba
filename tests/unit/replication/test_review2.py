"""Issue 17 review (round 2, R4): strict xfails proving defects in what changed.

Each test fails (AssertionError) on the code it names and is expected to pass once the fix
its reason gives is made."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from walstream.replication.stage import Batch, BatchStage
from walstream.settings import Settings

TP = TopicPartition("wal.ns.region.b", 0)
TP1 = TopicPartition("wal.ns.region.b", 1)


@dataclass
class Rec:
    offset: int


class AssignedGroup:
    """A consumer that refuses, as aiokafka's AIOKafkaConsumer.commit does, offsets of a
    partition not assigned to it (IllegalStateError 'Partition ... is not assigned'), and whose
    commits wait for the test's word."""

    def __init__(self, assigned: set[Any]) -> None:
        self.assigned = set(assigned)
        self.fetches: list[dict[Any, list[Rec]]] = []
        self.commits: list[dict[Any, int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.refuse = 0

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
            if tp not in self.assigned:
                raise IllegalStateError(f"Partition {tp} is not assigned")
        await self.release.wait()
        if self.refuse:
            self.refuse -= 1
            raise CommitFailedError("the group rebalanced")
        self.commits.append(dict(offsets))


class Recording(BatchStage):
    def __init__(self, group: AssignedGroup, **settings: Any) -> None:
        super().__init__(
            Settings(bootstrap_servers="x:1", **settings),
            topic=TP.topic,
            group_id="g",
            servers="x:1",
        )
        self.consumer = group
        self.ledger.assign(group.assigned)

    async def handle(self, batch: Batch) -> None:
        return None


def records(first: int, last: int) -> list[Rec]:
    return [Rec(o) for o in range(first, last + 1)]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason=(
        "stage.py: a rebalance whose flush times out (a commit slower than "
        "broker_session_timeout_s) drops the revoked partitions from _to_commit, but the commit "
        "still in flight, when it then fails, puts its offsets back "
        "(self._to_commit = {**offsets, **self._to_commit}), the revoked partition's among them; "
        "every later commit of this member carries it and aiokafka refuses the whole commit "
        "(IllegalStateError: not assigned), which puts it back again: the stage never commits "
        "again (on Kafka without that check, the wrong member would commit the partition). "
        "Fix: in _commit_pending keep only partitions still assigned, both when taking "
        "offsets (offsets = {tp: o for tp, o in self._to_commit.items() if "
        "self.ledger.assigned(tp)}) and when putting a failed commit's back"
    ),
)
async def test_a_revoked_partition_put_back_by_a_late_failed_commit_blocks_every_commit():
    group = AssignedGroup({TP, TP1})
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
