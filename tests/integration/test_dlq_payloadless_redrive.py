"""Redrive of a DLQ entry written without its record, on the real broker: the record is read
back from the source offset the entry names (the log keeps it) and republished to the log, by
the CLI's reader (``source_reader``) and the API's (``Redrives.read_source``). Before, such an
entry was skipped ("empty value") and stayed open for good."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from walstream.core.dlq import DlqEntry, parse_dlq_record
from walstream.dlq import RedriveProgress, Redrives, redrive, source_reader
from walstream.namespaces.config import parse_namespace
from walstream.records import Envelope, Lifecycle, decode_envelope, encode_envelope

from .helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_a_payloadless_entry_is_redriven_from_its_source_offset(broker, unique):
    ns = parse_namespace(
        {"name": f"payloadless-{unique}", "target": {"type": "kafka", "topic": "out"}}
    )
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    redrives = Redrives(broker)
    try:
        entries = []
        for n in (1, 2):
            env = Envelope(
                f"id-{n}",
                ns.name,
                "k1",
                {"n": n},
                "json",
                {"type": "kafka", "topic": "out"},
                Lifecycle(1, 1, 0),
                f"tok-{n}",
                1,
                attempt=3,
            )
            sent = await producer.send_and_wait(
                ns.topics.log, encode_envelope(env), key=b"k1", partition=1
            )
            entries.append(
                DlqEntry(
                    id=env.id,
                    namespace=ns.name,
                    reason="permanent error [the DLQ refused the record]",
                    error_class="http_400",
                    source=f"{ns.topics.log}[1]@{sent.offset}",
                    attempts=3,
                    dead_at_ms=1,
                    value=None,
                    key="k1",
                    partition=1,
                    offset=n,
                )
            )
        async with source_reader(broker) as read_source:  # the CLI's
            first = await redrive(
                producer, ns, entries[:1], RedriveProgress(ns.name, 1), read_source=read_source
            )
        second = await redrives.start(ns, entries[1:], rate=None, target=None)  # the API's
        task = redrives._tasks[ns.name]
        await task
        assert (first.redriven, first.skipped) == (1, [])
        assert (second.redriven, second.skipped) == (1, [])

        log = await read_topic(broker, ns.topics.log, expect=4)
        copies = [decode_envelope(r.value) for r in log[2:]]
        assert [(e.id, e.attempt, e.redrive, e.payload) for e in copies] == [
            ("id-1", 0, 1, {"n": 1}),
            ("id-2", 0, 1, {"n": 2}),
        ]
        assert {r.key for r in log} == {b"k1"}
        dlq = await read_topic(broker, ns.topics.dlq, expect=2)
        markers: list[Any] = [
            parse_dlq_record(r.key, r.value, r.headers, partition=r.partition, offset=r.offset)
            for r in dlq
        ]
        assert sorted(m.closes for m in markers) == [(1, 1), (1, 2)]
    finally:
        await redrives.close()
        await producer.stop()
