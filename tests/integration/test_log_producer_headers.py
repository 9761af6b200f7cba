"""The log producer writes a record's own headers (an origin repair's ``wal-origin-repair``),
through ``send`` and ``send_many``, after a delayed record's wait headers, on the real broker."""

from __future__ import annotations

from walstream.core.outbox import Outgoing, origin_repair
from walstream.kafka.admin import ensure_topics
from walstream.kafka.producer import KafkaLogProducer
from walstream.topology import TopicSpec

from .helpers import read_topic


async def test_a_records_own_headers_are_written_by_send_and_send_many(broker, unique) -> None:
    topic, tier = f"hdr{unique}.log", f"hdr{unique}.tier"
    await ensure_topics(
        broker, [TopicSpec(name=topic, partitions=2), TopicSpec(name=tier, partitions=2)]
    )
    producer = KafkaLogProducer(broker, timeout_s=15.0)
    await producer.start()
    try:
        await producer.send(origin_repair(Outgoing(topic, b"k", b"one")))
        results = await producer.send_many(
            [
                origin_repair(Outgoing(topic, b"k", b"two")),
                Outgoing(topic, b"k", b"three"),  # no headers of its own: none written
                # a delayed one: its wait headers, then its own
                Outgoing(tier, b"k", b"four", due=(10**13, topic), headers=[("h", b"x")]),
            ]
        )
        assert results == [None, None, None]
    finally:
        await producer.stop()
    logged = {r.value: list(r.headers) for r in await read_topic(broker, topic, expect=3)}
    assert logged == {
        b"one": [("wal-origin-repair", b"1")],
        b"two": [("wal-origin-repair", b"1")],
        b"three": [],
    }
    [waiting] = await read_topic(broker, tier, expect=1)
    names = [name for name, _ in waiting.headers]
    assert names[:3] == ["wal-due", "wal-dest", "wal-dest-partition"]
    assert names[3:] == ["h"]
