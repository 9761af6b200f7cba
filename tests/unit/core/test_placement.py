"""Placement: a txn id's partition is the default partitioner's (the API's producer), and the
worker holding that partition answers; the others forward to it, once."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from walstream.core.placement import (
    Answer,
    Forward,
    Unavailable,
    key_partition,
    murmur2,
    owner_of,
    route,
)


def keys():
    rand = random.Random(18)
    yield b""
    for length in range(1, 40):
        yield bytes(rand.randrange(256) for _ in range(length))
    for n in range(200):
        yield f"txn-{n}".encode()
    yield "tx-ü-☃".encode()


def test_murmur2_is_kafkas():
    # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest), as unsigned ints
    assert murmur2(b"21") & 0xFFFFFFFF == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") & 0xFFFFFFFF == -790332482 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-longer-string") == -1486304829 & 0xFFFFFFFF
    for key in keys():
        assert murmur2(key) == aiokafka_murmur2(key)


@pytest.mark.parametrize("partitions", [1, 3, 4, 12, 64])
def test_a_keys_partition_is_the_default_partitioners(partitions):
    parts = list(range(partitions))
    for key in keys():
        assert key_partition(key, partitions) == DefaultPartitioner()(key, parts, parts)


def test_no_partitions_is_refused():
    with pytest.raises(ValueError, match="positive"):
        key_partition(b"k", 0)


DIST = {
    "http://127.0.0.1:6001": {"app-mutations-changelog": [0, 2], "other": [1]},
    "http://127.0.0.1:6002": {"app-mutations-changelog": [1, 3]},
}


def test_the_owner_is_the_worker_whose_active_partitions_hold_it():
    assert owner_of(DIST, "app-mutations-changelog", 2) == "http://127.0.0.1:6001"
    assert owner_of(DIST, "app-mutations-changelog", 1) == "http://127.0.0.1:6002"
    assert owner_of(DIST, "app-mutations-changelog", 4) is None
    assert owner_of(DIST, "unknown", 0) is None
    assert owner_of({}, "app-mutations-changelog", 0) is None


def decide(**kw):
    args = {
        "partition": 3,
        "held_here": False,
        "ready": True,
        "owner": "http://127.0.0.1:6002",
        "own_url": "http://127.0.0.1:6001",
        "forwarded": False,
        **kw,
    }
    return route(**args)


def test_the_holder_answers_once_ready():
    assert decide(held_here=True) == Answer()
    assert decide(held_here=True, forwarded=True) == Answer()
    assert decide(held_here=True, ready=False) == Unavailable(
        reason="partition 3 is being recovered here"
    )


def test_another_worker_forwards_to_the_holder():
    assert decide() == Forward(url="http://127.0.0.1:6002")


def test_a_forwarded_question_is_not_forwarded_again():
    decision = decide(forwarded=True)
    assert isinstance(decision, Unavailable)
    assert "forwarded here" in decision.reason


def test_no_holder_or_the_assignment_naming_this_worker_is_unavailable():
    assert isinstance(decide(owner=None), Unavailable)
    for own in ("http://127.0.0.1:6002", "http://127.0.0.1:6002/", "127.0.0.1:6002"):
        decision = decide(own_url=own)
        assert isinstance(decision, Unavailable), own
        assert "not held yet" in decision.reason
    # same host, another port: another worker
    assert decide(own_url="http://127.0.0.1:6003") == Forward(url="http://127.0.0.1:6002")
    assert decide(owner="https://w2", own_url="https://w2:443") != Forward(url="https://w2")
