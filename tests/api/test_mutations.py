"""Multi-partition mutation routes (issue 18) over an in-memory producer: the records written
are exactly what walstream.core.mutations builds; bad input is a 4xx naming the field with
nothing written; limits answer 413, a table the policy refuses 403, and the broker's outcome
durable TRUE / FALSE / UNKNOWN as WriteToLog."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import pytest

from walstream.api.app import create_api
from walstream.core.mutations.chunks import items_records, op_chunks
from walstream.core.mutations.request import Operation, parse_mutate_items
from walstream.core.mutations.wire import (
    Marker,
    decode_marker,
    decode_op_chunk,
    encode_marker,
    encode_op_chunk,
)
from walstream.core.outbox import Outgoing
from walstream.errors import BrokerUnavailableError, WalError, WriteRejectedError, WriteUnknownError
from walstream.kafka.producer import MemoryLogProducer
from walstream.settings import Settings
from walstream.testing import NOW_MS, api_deps, registry_of

KV = {
    "name": "kv",
    "target": {"type": "kv", "table": "items", "key": "k"},
    "allowed_targets": {"kv_tables": ["orders", "team_*"]},
    "mutations": {"completion_timeout_s": 60},
}
PLAIN = {"name": "plain", "target": {"type": "kv", "table": "items", "key": "k"}}
BASE = "/v1/namespaces/kv/mutations"
#: small limits, so that tests reach them cheaply
SETTINGS = Settings(
    auth=False,
    max_request_bytes=64 * 1024,
    mutation_operations_max=10,
    mutation_txn_bytes_max=300_000,
    mutation_chunk_bytes=1024,
)
LIMITS = SETTINGS.mutation_limits()


@dataclass
class TopicFailingProducer(MemoryLogProducer):
    """Refuses (or leaves unanswered) the records of some topics, takes the others."""

    failing: dict[str, WalError] = field(default_factory=dict)

    async def send(self, record: Outgoing) -> None:
        error = self.failing.get(record.topic)
        if error is not None:
            raise error
        await super().send(record)


@pytest.fixture
def producer():
    return TopicFailingProducer()


@pytest.fixture
async def client(api_client, producer):
    deps = api_deps(SETTINGS, registry_of(KV, PLAIN), producer, slots=4)
    return await api_client(create_api(deps))


def _put(table="items", id_="k1", value=None, **more):
    return {"op": "put", "table": table, "id": id_, "value": value or {"n": 1}, **more}


async def test_an_operation_is_written_as_its_chunks_keyed_by_the_txn(client, producer):
    value = base64.b64encode(bytes(range(256)) * 10).decode()  # 2,560 bytes: 3 chunks of 1 KiB
    body = _put(value=value, value_encoding="base64", original_write_time=NOW_MS - 5)
    response = await client.post(f"{BASE}/t-1/3", json=body)
    assert response.status == 200, await response.text()
    assert await response.json() == {
        "durable": "TRUE",
        "message": "written",
        "txn_id": "t-1",
        "seq": 3,
    }
    op = Operation(
        op="put",
        table="items",
        id="k1",
        value=bytes(range(256)) * 10,
        original_write_time_ms=NOW_MS - 5,
    )
    expected = op_chunks("kv", "t-1", 3, op, 1024)
    assert len(expected) == 3
    assert [(r.topic, r.key, r.due) for r in producer.sent] == [
        ("wal.kv.mutations", b"t-1", None)
    ] * 3
    assert [r.value for r in producer.sent] == [encode_op_chunk(c) for c in expected]
    assert [decode_op_chunk(r.value) for r in producer.sent] == expected


async def test_a_delete_and_a_json_value(client, producer):
    assert (await client.post(f"{BASE}/t-2/0", json=_put(value=[1, "x"]))).status == 200
    delete = {"op": "delete", "table": "orders", "id": "k2"}
    assert (await client.post(f"{BASE}/t-2/1", json=delete)).status == 200
    put, gone = (decode_op_chunk(r.value) for r in producer.sent)
    assert (put.op, put.data, put.seq) == ("put", b'[1,"x"]', 0)
    assert (gone.op, gone.table, gone.size, gone.seq) == ("delete", "orders", 0, 1)


async def test_the_completion_marker_goes_to_the_markers_topic_at_the_apis_time(client, producer):
    response = await client.post(f"{BASE}/t-1:complete", json={"count": 4})
    assert response.status == 200, await response.text()
    assert (await response.json())["count"] == 4
    [sent] = producer.sent
    assert (sent.topic, sent.key) == ("wal.kv.markers", b"t-1")
    marker = Marker(namespace="kv", txn_id="t-1", op_count=4, at_ms=NOW_MS)
    assert sent.value == encode_marker(marker)
    assert decode_marker(sent.value) == marker


async def test_mutate_items_writes_its_operations_then_its_marker(client, producer):
    body = {
        "txn_id": "order-9",
        "operations": [
            _put(id_="a", value={"x": 1}),
            {"op": "delete", "table": "team_red", "id": "b"},
            _put(table="orders", id_="c", value="v" * 3000),  # 3 chunks
        ],
    }
    response = await client.post(BASE, json=body)
    assert response.status == 200, await response.text()
    assert await response.json() == {
        "durable": "TRUE",
        "message": "written",
        "txn_id": "order-9",
        "count": 3,
    }
    items = parse_mutate_items(body, LIMITS, now_ms=NOW_MS)
    chunks, marker = items_records("kv", items, LIMITS.chunk_bytes, at_ms=NOW_MS)
    assert len(chunks) == 5
    assert [(r.topic, r.key, r.value) for r in producer.sent] == [
        *(("wal.kv.mutations", b"order-9", encode_op_chunk(c)) for c in chunks),
        ("wal.kv.markers", b"order-9", encode_marker(marker)),
    ]
    assert marker.digest is not None


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        (f"{BASE}/t-1/0", b"{", 400, "body"),
        (f"{BASE}/t-1/0", {"table": "items", "id": "k"}, 400, "op"),
        (f"{BASE}/t-1/0", _put(table="no-dash"), 400, "table"),
        (f"{BASE}/t-1/0", _put(id_=""), 400, "id"),
        (f"{BASE}/t-1/0", {"op": "put", "table": "items", "id": "k"}, 400, "value"),
        (f"{BASE}/t-1/0", _put(color="red"), 400, "color"),
        (f"{BASE}/t-1/0", _put(value="!", value_encoding="base64"), 400, "value"),
        (f"{BASE}/t-1/0", _put(original_write_time=NOW_MS + 3_700_000), 400, "original_write_time"),
        (f"{BASE}/t-1/x", _put(), 400, "seq"),
        (f"{BASE}/t-1/-1", _put(), 400, "seq"),
        (f"{BASE}/-t/0", _put(), 400, "txn_id"),
        (f"{BASE}/t-1/10", _put(), 413, "seq"),  # seqs 0..9
        (f"{BASE}/t-1/99", b"{", 400, "body"),  # a bad body is a 400 whatever the seq
        (f"{BASE}/t-1/0", _put(value="v" * 300_000), 413, "value"),
        (f"{BASE}/t-1:complete", {"count": 0}, 400, "count"),
        (f"{BASE}/t-1:complete", {"count": 2, "more": 1}, 400, "more"),
        (f"{BASE}/t-1:complete", [], 400, "body"),
        (f"{BASE}/t.1%3A:complete", {"count": 1}, 400, "txn_id"),
        (f"{BASE}/t-1:complete", {"count": 11}, 413, "count"),
        (BASE, {"operations": [_put()]}, 400, "txn_id"),
        (BASE, {"txn_id": "t", "operations": []}, 400, "operations"),
        (BASE, {"txn_id": "t", "operations": [_put(), _put(id_=7)]}, 400, "operations[1].id"),
        (BASE, {"txn_id": "t", "operations": [_put()] * 11}, 413, "operations"),
        (BASE, {"txn_id": "t", "operations": [_put(value="v" * 150_000)] * 2}, 413, "operations"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    client, producer, path, body, status, field
):
    kw = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = await client.post(path, **kw)
    assert response.status == status, await response.text()
    answer = await response.json()
    assert (answer["durable"], answer["field"]) == ("FALSE", field), answer
    assert producer.sent == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (f"{BASE}/t-1/0", _put(table="users"), "table"),
        (f"{BASE}/t-1/0", {"op": "delete", "table": "team", "id": "k"}, "table"),
        (
            BASE,
            {"txn_id": "t", "operations": [_put(), _put(table="orders"), _put(table="audit")]},
            "operations[2].table",
        ),
    ],
)
async def test_a_table_the_policy_refuses_is_403_before_anything_is_written(
    client, producer, path, body, field
):
    response = await client.post(path, json=body)
    assert response.status == 403, await response.text()
    answer = await response.json()
    assert (answer["durable"], answer["field"]) == ("FALSE", field)
    assert "allowed_targets.kv_tables" in answer["reason"]
    assert producer.sent == []


@pytest.mark.parametrize(
    "path",
    [f"{BASE}/t-1/0", f"{BASE}/t-1:complete", BASE, f"{BASE}/t-1"],
)
async def test_a_namespace_without_the_mutations_block_takes_none(client, producer, path):
    plain = path.replace("/kv/", "/plain/")
    body = {"txn_id": "t", "operations": [_put()]} if plain.endswith("mutations") else _put()
    method = client.get if plain.endswith("/t-1") else client.post
    response = await (method(plain) if method == client.get else method(plain, json=body))
    assert response.status == 404
    answer = await response.json()
    assert answer["error"] == "MutationsNotEnabledError"
    assert "'plain'" in answer["message"]
    assert "mutations" in answer["message"]
    unknown = await client.post("/v1/namespaces/nowhere/mutations/t-1/0", json=_put())
    assert (unknown.status, (await unknown.json())["error"]) == (404, "NamespaceNotFoundError")
    assert producer.sent == []


@pytest.mark.parametrize(
    ("error", "status", "durable"),
    [
        (WriteUnknownError("no ack in time"), 504, "UNKNOWN"),
        (WriteRejectedError("broker refused the record"), 503, "FALSE"),
        (BrokerUnavailableError("not handed over", retry_after=2), 503, "FALSE"),
    ],
)
async def test_the_brokers_outcome_is_the_answer_as_for_write_to_log(
    client, producer, error, status, durable
):
    producer.failing["wal.kv.mutations"] = error
    response = await client.post(f"{BASE}/t-1/0", json=_put())
    assert (response.status, (await response.json())["durable"]) == (status, durable)
    assert response.headers.get("Retry-After") == error.headers().get("Retry-After")
    # a MutateItems whose operations were not all acked writes no marker
    items = {"txn_id": "t", "operations": [_put(), _put(id_="b")]}
    response = await client.post(BASE, json=items)
    assert (response.status, (await response.json())["durable"]) == (status, durable)
    assert producer.sent == []
    # its operations acked, its marker not: the marker's outcome
    del producer.failing["wal.kv.mutations"]
    producer.failing["wal.kv.markers"] = error
    response = await client.post(BASE, json=items)
    assert (response.status, (await response.json())["durable"]) == (status, durable)
    assert [r.topic for r in producer.sent] == ["wal.kv.mutations"] * 2
    response = await client.post(f"{BASE}/t:complete", json={"count": 2})
    assert (response.status, (await response.json())["durable"]) == (status, durable)


async def test_a_partly_refused_operation_is_unknown_when_a_chunk_may_be_on_the_log(
    api_client,
):
    """One chunk refused, one unanswered: the request's answer is the least certain."""

    @dataclass
    class Mixed(MemoryLogProducer):
        async def send_many(self, records):
            return [None, WriteRejectedError("no"), WriteUnknownError("late")][: len(records)]

    deps = api_deps(SETTINGS, registry_of(KV), Mixed())
    client = await api_client(create_api(deps))
    response = await client.post(f"{BASE}/t-1/0", json=_put(value="v" * 2500))  # 3 chunks
    assert (response.status, (await response.json())["durable"]) == (504, "UNKNOWN")


async def test_a_request_of_more_records_than_write_slots_still_goes(client, producer):
    # 4 slots, an operation of 8 chunks: it takes every slot, not more than there are
    response = await client.post(f"{BASE}/t-1/0", json=_put(value="v" * 8000))
    assert response.status == 200, await response.text()
    assert len(producer.sent) == 8


async def test_mutation_bodies_may_be_larger_than_the_batch_limit(api_client):
    """A mutation's body limit follows the transaction limit (base64 values), not
    WALSTREAM_MAX_REQUEST_BYTES (64 KiB here)."""
    settings = Settings(auth=False, max_request_bytes=64 * 1024, mutation_txn_bytes_max=1 << 20)
    producer = MemoryLogProducer()
    client = await api_client(create_api(api_deps(settings, registry_of(KV), producer)))
    value = base64.b64encode(b"\x01" * 700_000).decode()
    body = _put(value=value, value_encoding="base64")
    response = await client.post(f"{BASE}/t-1/0", json=body)
    assert response.status == 200, await response.text()
    assert sum(len(decode_op_chunk(r.value).data) for r in producer.sent) == 700_000
    items = {"txn_id": "t", "operations": [body]}
    assert (await client.post(BASE, json=items)).status == 200
    # over the route's limit (1 MiB in base64 + the overhead): refused on its Content-Length
    huge = b"x" * ((1 << 20) * 4 // 3 + 10 * 512 * 1024)
    response = await client.post(f"{BASE}/t-1/1", data=io.BytesIO(huge))
    assert response.status == 413
    assert (await response.json())["field"] == "body"
