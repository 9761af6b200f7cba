"""WriteToLog with a memcached target (issue 17 item 2): a replicated namespace's cache
operation is logged under its memcached key, as the record the region stages read
(walstream.core.cache_ops); a replicated namespace takes no other target type, and a namespace
without replication takes no memcached target (400 naming the field)."""

from __future__ import annotations

import base64

import jsonschema
import pytest

from walstream.api.openapi import openapi_document
from walstream.core.cache_ops import cache_op
from walstream.core.cache_version import CacheOp, OpKind
from walstream.core.lww import Version
from walstream.core.targets import MEMCACHED_OPTIONS, parse_memcached_target, parse_target
from walstream.errors import BadRequestError
from walstream.records import decode_envelope
from walstream.testing import registry_of

NOW = 1_800_000_000_000  # the FakeClock's time
DOCUMENT = openapi_document()
SET = {"type": "memcached", "op": "set", "key": "user:1", "ttl": 60, "origin_region": "us"}


@pytest.fixture
def registry():
    return registry_of(
        {"name": "orders", "target": {"type": "kafka", "topic": "orders.out"}},
        {
            "name": "evc",
            "replication": {
                "regions": {"us": {"memcached": ["h:1"]}, "eu": {"memcached": ["h:2"]}}
            },
        },
    )


def _valid(instance: object) -> bool:
    schema = {
        "$ref": "#/components/schemas/WriteToLogRequest",
        "components": DOCUMENT["components"],
    }
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


async def test_a_cache_operation_is_logged_under_its_key_for_a_replicated_namespace(
    client, producer
):
    body = {
        "payload": base64.b64encode(b"\x00v").decode(),
        "payload_encoding": "base64",
        "target": SET,
        "idempotency_token": "tok-1",
        "lifecycle": {"original_write_time": NOW - 3},
    }
    assert _valid(body)
    response = await client.post("/v1/namespaces/evc/log", json=body)
    assert response.status == 200, await response.text()
    assert (await response.json())["durable"] == "TRUE"
    sent = producer.sent[0]
    assert (sent.topic, sent.key) == ("wal.evc.log", b"user:1")
    env = decode_envelope(sent.value)
    assert dict(env.target) == SET
    assert cache_op(env) == CacheOp(
        kind=OpKind.SET, key=b"user:1", version=Version(NOW - 3, "tok-1"), value=b"\x00v", ttl_s=60
    )


async def test_a_replicated_namespace_takes_no_other_target_type(client, producer):
    body = {"payload": 1, "target": {"type": "kafka", "topic": "t"}}
    assert _valid(body)
    response = await client.post("/v1/namespaces/evc/log", json=body)
    assert response.status == 400
    assert (await response.json())["field"] == "target.type"
    assert producer.sent == []


async def test_a_namespace_without_replication_takes_no_memcached_target(client, producer):
    body = {"payload": "djE=", "payload_encoding": "base64", "target": SET}
    assert _valid(body)
    response = await client.post("/v1/namespaces/orders/log", json=body)
    assert response.status == 400
    answer = await response.json()
    assert answer["field"] == "target.type"
    assert "replication regions" in answer["message"]
    assert producer.sent == []


def test_the_memcached_target_documents_exactly_the_options_the_server_checks():
    schema = DOCUMENT["components"]["schemas"]["MemcachedTarget"]
    required = {name for name, (needed, _) in MEMCACHED_OPTIONS.items() if needed}
    assert set(schema["required"]) == {"type", *required}
    assert set(schema["properties"]) == {"type", *MEMCACHED_OPTIONS}
    assert schema["additionalProperties"] is False
    # a namespace's own target and a redrive's are delivered targets: never a cache operation
    assert (
        "memcached" not in DOCUMENT["components"]["schemas"]["Target"]["discriminator"]["mapping"]
    )
    with pytest.raises(BadRequestError) as info:
        parse_target(SET)
    assert info.value.field == "target.type"


@pytest.mark.parametrize(
    ("target", "taken"),
    [
        (SET, True),
        ({**SET, "op": "touch"}, True),
        ({k: v for k, v in SET.items() if k != "ttl"}, True),
        ({**{k: v for k, v in SET.items() if k != "ttl"}, "op": "touch"}, False),
        ({**SET, "op": "delete"}, False),
        ({**{k: v for k, v in SET.items() if k != "ttl"}, "op": "delete"}, True),
        ({**SET, "key": "a b"}, False),
        ({**SET, "key": "k" * 251}, False),
        ({**SET, "ttl": 30 * 86_400 + 1}, False),
        ({**SET, "origin_region": "U S"}, False),
        ({**SET, "value": 1}, False),
    ],
)
def test_a_memcached_target_is_valid_for_the_document_exactly_when_the_server_takes_it(
    target, taken
):
    assert _valid({"payload": None, "target": target}) is taken
    if taken:
        assert parse_memcached_target(target).wire == target
    else:
        with pytest.raises(BadRequestError):
            parse_memcached_target(target)


async def test_a_batch_of_cache_operations_is_logged_each_under_its_key(client, producer):
    delete = {"type": "memcached", "op": "delete", "key": "user:2", "origin_region": "eu"}
    records = [
        {"payload": "djE=", "payload_encoding": "base64", "target": SET},
        {"payload": None, "target": delete},
        {"payload": 1, "target": {"type": "kafka", "topic": "t"}},
    ]
    response = await client.post("/v1/namespaces/evc/log:batch", json={"records": records})
    assert response.status == 200, await response.text()
    results = (await response.json())["results"]
    assert [r["durable"] for r in results] == ["TRUE", "TRUE", "FALSE"]
    assert [(s.topic, s.key) for s in producer.sent] == [
        ("wal.evc.log", b"user:1"),
        ("wal.evc.log", b"user:2"),
    ]
    assert cache_op(decode_envelope(producer.sent[1].value)).kind is OpKind.DELETE
