"""walstream's transport: a record handed over twice must not hold its partition's commit."""

from __future__ import annotations

import faust
from faust.types import TP, Message

from walstream.kafka.transport import Consumer


def _message(tp: TP, offset: int) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, None, None, b"k", b"v", None, tp=tp)  # type: ignore[arg-type]


def _hand_over_and_ack(consumer: Consumer, tp: TP, offset: int) -> None:
    """What a stream does with a record (``add_unacked``) and the agent once it is handled
    (Faust's ``Consumer.ack``, which drops an ack below the offset committed already)."""
    message = _message(tp, offset)
    consumer._unacked_messages.add(message)
    consumer.ack(message)


async def test_a_record_handed_over_again_below_the_commit_does_not_hold_the_commit():
    # Seen in the chaos test: a partition fetched again from an earlier position hands its last
    # record read over once more (Faust's fetch loop passes offset >= its read offset); that
    # record's ack is dropped by Faust (below the commit), and tracked again it held the commit.
    app = faust.App("transport-commit-test", broker="walkafka://127.0.0.1:9", autodiscover=False)
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    try:
        _twice_handed_over_record(consumer)
    finally:
        consumer._thread.thread_loop.close()  # made with the consumer, never started


def _twice_handed_over_record(consumer: Consumer) -> None:
    tp = TP("wal.ns.retry", 0)
    consumer.app.topics._acking_topics.add(tp.topic)  # type: ignore[attr-defined]
    consumer.ledger.assign({tp})
    _hand_over_and_ack(consumer, tp, 428)
    assert consumer._new_offset(tp) == 429
    consumer._committed_offset[tp] = 429  # what Faust notes when it commits that
    _hand_over_and_ack(consumer, tp, 428)  # the same record again, from a later fetch
    _hand_over_and_ack(consumer, tp, 429)
    assert consumer._new_offset(tp) == 430
    # a record not yet acked still holds the commit
    consumer._unacked_messages.add(_message(tp, 430))
    _hand_over_and_ack(consumer, tp, 431)
    assert consumer._new_offset(tp) == 430


async def test_resuming_the_flow_keeps_the_records_queued_for_the_agents():
    # Faust resumes the flow after seeking the stream partitions at the end of a recovery; the
    # records fetched meanwhile were queued for the agents, past aiokafka's position and Faust's
    # read offset: emptied there, they were never handed over and the commit passed them.
    app = faust.App("transport-resume-test", broker="walkafka://127.0.0.1:9", autodiscover=False)
    consumer = app.consumer
    try:
        assert isinstance(consumer, Consumer)
        queue = app.FlowControlQueue(maxsize=10, clear_on_resume=True)  # a channel's queue
        app.flow_control.resume()  # flow active (Faust resumes it for the changelog reads)
        queue.put_nowait("a record fetched during the seek")
        app.flow_control.resume()  # the end of the recovery
        assert app.flow_control.is_active()
        assert queue.qsize() == 1
        app.flow_control.suspend()
        app.flow_control.clear()  # a rebalance still drops what was queued
        assert queue.qsize() == 0
        app.flow_control.resume()
        assert app.flow_control.is_active()
    finally:
        consumer._thread.thread_loop.close()  # type: ignore[attr-defined]  # made, never started


async def test_the_seek_at_the_end_of_a_recovery_does_not_move_the_read_offset_back():
    # The records fetched while that seek runs are queued for the agents already: Faust's read
    # offset moved back to the committed one made every one of them handed over a second time
    # once fetched again (a worker start doubled its first records; retries multiplied).
    app = faust.App("transport-seek-test", broker="walkafka://127.0.0.1:9", autodiscover=False)
    consumer = app.consumer
    try:
        assert isinstance(consumer, Consumer)
        passed_on, fresh = TP("wal.ns.log", 0), TP("wal.ns.log", 1)
        consumer._read_offset[passed_on] = 150  # passed on to the agents during the seek

        async def seek_to_committed() -> dict[TP, int]:
            return {passed_on: 100, fresh: 40}

        consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
        await consumer.perform_seek()
        assert consumer._read_offset[passed_on] == 150
        assert consumer._read_offset[fresh] == 40
        assert consumer._committed_offset[passed_on] == 100
        assert consumer._committed_offset[fresh] == 40
    finally:
        consumer._thread.thread_loop.close()  # type: ignore[attr-defined]  # made, never started
