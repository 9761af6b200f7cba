"""WalClient's mutation methods: the bodies they send, and that a write's outcome is a
WriteResult, never an exception (FALSE when nothing could be sent)."""

from __future__ import annotations

import base64

from walstream.api.app import create_api
from walstream.broker import free_port
from walstream.client import WalClient, mutation_operation
from walstream.core.mutations.wire import Marker, decode_marker, decode_op_chunk
from walstream.kafka.producer import MemoryLogProducer
from walstream.settings import Settings
from walstream.testing import api_deps, registry_of

KV = {"name": "kv", "target": {"type": "kv", "table": "items", "key": "k"}, "mutations": {}}


def test_an_operation_body_sends_bytes_as_base64():
    assert mutation_operation("put", "items", "a", b"\x00\xff") == {
        "op": "put",
        "table": "items",
        "id": "a",
        "value": base64.b64encode(b"\x00\xff").decode(),
        "value_encoding": "base64",
    }
    assert mutation_operation("put", "items", "a", {"n": 1}, original_write_time=5) == {
        "op": "put",
        "table": "items",
        "id": "a",
        "value": {"n": 1},
        "original_write_time": 5,
    }
    assert mutation_operation("delete", "items", "a", "ignored") == {
        "op": "delete",
        "table": "items",
        "id": "a",
    }


async def test_the_client_writes_operations_markers_and_whole_transactions(api_client):
    producer = MemoryLogProducer()
    api = await api_client(create_api(api_deps(Settings(auth=False), registry_of(KV), producer)))
    async with WalClient(str(api.make_url("")).rstrip("/")) as wal:
        one = await wal.mutate("kv", "t-1", 1, "put", "items", "a", b"\x01\x02")
        assert (one.durable, one.status) == ("TRUE", 200)
        marker = await wal.complete("kv", "t-1", 2)
        assert marker.ok
        items = await wal.mutate_items("kv", "t-2", [mutation_operation("delete", "items", "b")])
        assert items.ok
        refused = await wal.mutate("kv", "t-1", 0, "put", "nope-table", "a", 1)
        assert (refused.durable, refused.status, refused.field) == ("FALSE", 400, "table")
        status, body = await wal.mutation_status("kv", "t-1")
        assert status == 503  # this API asks no worker
        assert body["durable"] == "FALSE"
    first = decode_op_chunk(producer.sent[0].value)
    assert (first.txn_id, first.seq, first.data) == ("t-1", 1, b"\x01\x02")
    sent_marker = decode_marker(producer.sent[1].value)
    assert isinstance(sent_marker, Marker)
    assert sent_marker.op_count == 2
    assert [decode_op_chunk(r.value).op for r in producer.sent[2:3]] == ["delete"]
    assert decode_marker(producer.sent[3].value).txn_id == "t-2"


async def test_nothing_sent_is_false_and_an_unencodable_value_is_not_sent():
    async with WalClient(f"http://127.0.0.1:{free_port()}") as wal:
        answer = await wal.complete("kv", "t", 1)
        assert answer.durable == "FALSE"
        assert answer.message.startswith("not sent")
        unencodable = await wal.mutate("kv", "t", 0, "put", "items", "a", {1j})
        assert unencodable.durable == "FALSE"
        assert "cannot be encoded" in unencodable.message
