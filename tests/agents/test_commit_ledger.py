"""walstream's consumer commits by its offset ledger, where Faust's own rule passes unacked records.

These drive the consumer's bookkeeping the way Faust's stream and ack paths do (no broker: what
is committed is decided before any request); the real-broker proof, with a worker killed or
stopped while a record is in flight, is tests/integration/test_commit_ledger.py.
"""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from walstream.kafka.transport import Consumer

TOPIC = "wal.ns.log"
TP0 = TP(TOPIC, 0)


_made: list = []


@pytest.fixture(autouse=True)
def _close_consumer_loops():
    yield
    while _made:  # each consumer's thread made an event loop (never started here)
        _made.pop()._thread.thread_loop.close()


def consumer_for(scheme: str):
    app = faust.App(f"ledger-{scheme}", broker=f"{scheme}://127.0.0.1:1", autodiscover=False)
    # what subscribing an acking agent to TOPIC does
    app.topics._acking_topics.add(TOPIC)  # type: ignore[attr-defined]
    consumer = app.consumer
    _made.append(consumer)
    return consumer


def assign(consumer, *tps: TP) -> None:
    """What the consumer's on_partitions_assigned does first (the rest needs a running app)."""
    ledger = getattr(consumer, "ledger", None)  # Faust's consumer has none
    if ledger is not None:
        ledger.assign(tps)


def hand_over(consumer, offsets) -> dict[int, ConsumerMessage]:
    """As Faust's stream does: ``consumer.unacked.add(message)`` (Consumer.track_message)."""
    messages = {}
    for offset in offsets:
        message = ConsumerMessage(TOPIC, 0, offset, 0.0, 0, None, None, b"v", None, tp=TP0)
        message.incref()
        consumer.unacked.add(message)
        messages[offset] = message
    return messages


def ack(consumer, messages, offsets) -> None:
    for offset in offsets:
        messages[offset].ack(consumer)  # Event.ack -> Message.ack -> Consumer.ack


async def test_faust_commits_past_an_unacked_record():
    # Pins the rule walstream does not rely on (faust-streaming 0.15.3, Consumer._new_offset).
    plain = consumer_for("kafka")
    messages = hand_over(plain, range(5))
    ack(plain, messages, [1, 2, 3, 4])  # record 0 still in flight
    assert plain._new_offset(TP0) == 5  # nothing committed yet: the head gap is ignored

    plain = consumer_for("kafka")
    plain._committed_offset[TP0] = 3
    messages = hand_over(plain, range(3, 9))
    ack(plain, messages, [4, 5, 6, 7, 8])  # record 3 still in flight
    assert plain._new_offset(TP0) == 9  # one unacked record at the frontier is skipped


async def test_walstream_commits_stop_at_the_lowest_record_in_flight():
    consumer = consumer_for("walkafka")
    assert isinstance(consumer, Consumer)
    assign(consumer, TP0)
    messages = hand_over(consumer, range(5))
    ack(consumer, messages, [1, 2, 3, 4])
    assert consumer._new_offset(TP0) == 0
    ack(consumer, messages, [0])
    assert consumer._new_offset(TP0) == 5

    consumer = consumer_for("walkafka")
    assign(consumer, TP0)
    consumer._committed_offset[TP0] = 3
    messages = hand_over(consumer, range(3, 9))
    ack(consumer, messages, [4, 5, 6, 7, 8])
    assert consumer._new_offset(TP0) == 3


async def test_a_record_never_acked_holds_the_commit_while_later_ones_finish():
    # a handler that raised: its record is never acked, and stays the next one to read
    consumer = consumer_for("walkafka")
    assign(consumer, TP0)
    messages = hand_over(consumer, range(10))
    ack(consumer, messages, [o for o in range(10) if o != 2])
    assert consumer._new_offset(TP0) == 2
    messages = hand_over(consumer, range(10, 20))
    ack(consumer, messages, range(10, 20))
    assert consumer._new_offset(TP0) == 2


async def test_acks_of_a_revoked_partition_commit_nothing():
    consumer = consumer_for("walkafka")
    assign(consumer, TP0)
    messages = hand_over(consumer, range(3))
    consumer.ledger.revoke({TP0})
    ack(consumer, messages, range(3))
    assert consumer._new_offset(TP0) is None
    assert TP0 not in consumer._acked  # forgotten, not kept for the next commit


async def test_topics_without_acks_keep_fausts_rule():
    consumer = consumer_for("walkafka")
    changelog = TP("app-table-changelog", 0)
    consumer._acked[changelog].extend([0, 1, 2])
    assert consumer._new_offset(changelog) == 3


async def test_the_wait_for_unacked_records_at_a_rebalance_is_bounded(monkeypatch):
    monkeypatch.setenv("WALSTREAM_DELIVER_REVOKE_WAIT_S", "0.2")
    consumer = consumer_for("walkafka")
    assign(consumer, TP0)
    messages = hand_over(consumer, range(3))  # in flight and never finishing
    committed = stub_commits(consumer, monkeypatch)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(consumer.wait_empty(), 10)
    assert loop.time() - start < 5
    assert consumer._new_offset(TP0) == 0  # not committed past: the next owner reads them
    assert all(offsets == {TP0: 0} for offsets in committed)
    assert len(messages) == 3


def stub_commits(consumer, monkeypatch) -> list[dict]:
    """Record what the consumer commits (Faust's _commit_offsets needs a running app)."""
    committed: list[dict] = []

    async def commit_offsets(offsets, start_new_transaction=True):
        committed.append(dict(offsets))
        consumer._committed_offset.update(offsets)
        return True

    monkeypatch.setattr(consumer, "_commit_offsets", commit_offsets)
    return committed


async def test_what_was_acked_is_committed_at_a_revoke(monkeypatch):
    # Faust's revoke drops the acked lists of revoked partitions before its revoke-time commit
    # (Consumer.on_partitions_revoked), and its commit looks only at partitions with such a list.
    consumer = consumer_for("walkafka")
    assign(consumer, TP0)
    committed = stub_commits(consumer, monkeypatch)
    messages = hand_over(consumer, range(6))
    ack(consumer, messages, range(5))  # acked since the last periodic commit; 5 in flight
    consumer._take_acks(TP0)  # walstream's on_partitions_revoked, first
    consumer._acked.pop(TP0, None)  # then Faust's, as in Consumer.on_partitions_revoked
    consumer._acked_index.pop(TP0, None)
    consumer._committed_offset.pop(TP0, None)
    await consumer.force_commit()  # Faust's revoke-time commit (wait_empty -> commit)
    assert committed == [{TP0: 5}]


async def test_records_handed_over_are_tracked_only_for_acking_topics():
    consumer = consumer_for("walkafka")
    other = TP("not-acking", 0)
    assign(consumer, TP0, other)
    message = ConsumerMessage("not-acking", 0, 7, 0.0, 0, None, None, b"v", None, tp=other)
    consumer.unacked.add(message)
    assert consumer.ledger.outstanding(other) == 0
    hand_over(consumer, [4])
    assert consumer.ledger.outstanding(TP0) == 1
