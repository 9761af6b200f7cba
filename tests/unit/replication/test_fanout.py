"""The fan-out's routing of a batch (walstream.replication.fanout.FanOut.handle) over a
recording producer: a logged operation goes to every region but its origin; an origin repair
(``wal-origin-repair: 1``, the replicating client's copy of an operation it could not apply
locally) goes to its origin only, as it is also in ``invalidate`` mode. The real broker and
memcached: tests/integration/test_replication_review.py (the local apply failed)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from walstream.namespaces.replication import parse_replication
from walstream.records import decode_envelope, encode_envelope
from walstream.replication.fanout import FanOut
from walstream.settings import Settings
from walstream.testing.replication import cache_envelope

SETTINGS = Settings(bootstrap_servers="127.0.0.1:9", auth=False)
LOG = TopicPartition("wal.cache.log", 0)
REPAIR = [("wal-origin-repair", b"1")]


class Producer:
    """Records each copy sent; every send is acknowledged."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(self, topic: str, value: Any, *, key: Any, partition: Any) -> Any:
        self.sent.append((topic, key, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def fanout(replicate: str = "value") -> tuple[FanOut, Producer]:
    replication = parse_replication(
        {
            "regions": {r: {"memcached": [f"127.0.0.1:{n}"]} for n, r in enumerate("abc", 1)},
            "replicate": replicate,
        }
    )
    assert replication is not None
    stage = FanOut(
        SETTINGS,
        namespace="cache",
        log_topic=LOG.topic,
        replication=replication,
        region=None,
    )
    producer = Producer()
    stage._producer_of = dict.fromkeys(stage.targets, producer)
    return stage, producer


def record(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> Any:
    return SimpleNamespace(key=b"k", value=value, headers=headers or [])


async def test_an_operation_goes_to_every_region_but_its_origin() -> None:
    stage, producer = fanout()
    value = encode_envelope(cache_envelope("set", "k", b"v", origin="a"))
    await stage.handle({LOG: [record(value)]})
    assert producer.sent == [
        ("wal.cache.region.b", b"k", value),
        ("wal.cache.region.c", b"k", value),
    ]
    assert stage.copies == 2


@pytest.mark.parametrize("replicate", ["value", "invalidate"])
async def test_an_origin_repair_goes_to_its_origin_only_as_it_is(replicate: str) -> None:
    stage, producer = fanout(replicate)
    value = encode_envelope(cache_envelope("set", "k", b"v", origin="b"))
    await stage.handle({LOG: [record(value, [("other", b"x"), *REPAIR])]})
    # a set stays a set in invalidate mode too: the origin's client applies it as a set
    assert producer.sent == [("wal.cache.region.b", b"k", value)]
    assert decode_envelope(producer.sent[0][2]).target["op"] == "set"
    assert stage.copies == 1


async def test_a_repair_of_a_record_without_an_origin_goes_nowhere() -> None:
    # its first copy reached every region's writer, which dead-letters it with its reason
    stage, producer = fanout()
    await stage.handle({LOG: [record(b"not an envelope", REPAIR)]})
    assert producer.sent == []


async def test_a_header_of_another_value_is_no_repair() -> None:
    stage, producer = fanout()
    value = encode_envelope(cache_envelope("delete", "k", origin="a"))
    await stage.handle({LOG: [record(value, [("wal-origin-repair", b"0")])]})
    assert [topic for topic, _, _ in producer.sent] == ["wal.cache.region.b", "wal.cache.region.c"]
