"""The replicating cache client (issue 17 item 2) on a real broker and real memcached servers:
set, touch, delete and get through ReplicatingCache leave the LWW item in the local region's
memcached and the operation's record on the namespace's log (WriteToLog's record for the same
request, decodable by decode_envelope, the contract's target, keyed by the memcached key);
with the broker stopped a call answers FALSE or UNKNOWN, never TRUE, and changes nothing
locally."""

from __future__ import annotations

import asyncio
import base64

import pytest

from walstream.api.app import build_api
from walstream.core.cache_ops import cache_op
from walstream.core.cache_version import Kind, OpKind, StoredItem, decode
from walstream.namespaces.config import parse_namespace
from walstream.records import Lifecycle, decode_envelope
from walstream.replication import ApplyOutcome, ReplicatingCache
from walstream.settings import Settings
from walstream.testing.replication import plain_exchange

from .conftest import apply_namespace
from .helpers import read_topic

pytestmark = pytest.mark.integration


def definition(name: str, a: str, b: str) -> dict:
    return {
        "name": name,
        "max_payload_bytes": 65536,
        "replication": {"regions": {"a": {"memcached": [a]}, "b": {"memcached": [b]}}},
    }


def stored(address: str, key: str) -> StoredItem:
    """The item ``key`` holds, read with a plain client (``get``) and decoded."""
    reply = plain_exchange(address, b"get %s\r\n" % key.encode(), b"END\r\n")
    assert reply != b"END\r\n", f"miss: {key!r}"
    head, _, rest = reply.partition(b"\r\n")
    item = decode(rest[: int(head.split()[3])])
    assert isinstance(item, StoredItem), item
    return item


def ttl_left(address: str, key: str) -> int:
    """The item's remaining TTL (meta ``mg <key> t``: -1 for none)."""
    reply = plain_exchange(address, b"mg %s t\r\n" % key.encode(), b"\r\n")
    assert reply.startswith(b"HD t"), reply
    return int(reply[4:].strip())


@pytest.mark.timeout(120)
async def test_set_touch_delete_and_get_through_the_client(
    broker, memcached_servers, unique, api_client
):
    name = f"rc-{unique}"
    local, other = (server.address for server in memcached_servers[:2])
    settings = Settings(bootstrap_servers=broker, auth=False)
    await apply_namespace(settings, definition(name, local, other))
    ns = parse_namespace(definition(name, local, other))
    key, value = f"user:{unique}", b"\x00\xff exact \r\n bytes"
    async with ReplicatingCache(ns, "a", bootstrap_servers=broker) as cache:
        assert await cache.get(key) is None
        put = await cache.set(key, value, 600)
        assert (put.durable, put.error) == ("TRUE", None)
        assert put.local is not None
        assert put.local.outcome is ApplyOutcome.APPLIED
        assert await cache.get(key) == value
        expires = put.version.original_write_time_ms + 600_000  # from its original write time
        assert stored(local, key) == StoredItem(
            version=put.version, kind=Kind.VALUE, value=value, expires_at_ms=expires
        )
        # memcached keeps it the tombstone TTL past its expiry (a versioned marker once expired)
        tomb_ttl = ns.replication.tombstone_ttl_s  # type: ignore[union-attr]
        assert 600 < ttl_left(local, key) <= 600 + tomb_ttl + 2

        touched = await cache.touch(key, 0)
        assert touched.durable == "TRUE"
        assert ttl_left(local, key) == -1  # no expiry now
        assert stored(local, key).version == put.version  # a touch keeps the value's version

        deleted = await cache.delete(key)
        assert deleted.durable == "TRUE"
        assert await cache.get(key) is None  # a tombstone is a miss
        tombstone = stored(local, key)
        assert (tombstone.kind, tombstone.version) == (Kind.TOMBSTONE, deleted.version)
        assert plain_exchange(other, b"get %s\r\n" % key.encode(), b"END\r\n") == b"END\r\n"

        # the same set through WriteToLog over HTTP: the same record but its id and time
        client = await api_client(build_api(settings))
        response = await client.post(
            f"/v1/namespaces/{name}/log",
            json={
                "payload": base64.b64encode(value).decode(),
                "payload_encoding": "base64",
                "target": {
                    "type": "memcached",
                    "op": "set",
                    "key": key,
                    "ttl": 600,
                    "origin_region": "a",
                },
                "idempotency_token": put.version.idempotency_token,
                "lifecycle": {"original_write_time": put.version.original_write_time_ms},
            },
        )
        assert response.status == 200, await response.text()
        refused = await client.post(
            f"/v1/namespaces/{name}/log",
            json={"payload": 1, "target": {"type": "kafka", "topic": "t"}},
        )
        assert refused.status == 400
        assert (await refused.json())["field"] == "target.type"

    records = await read_topic(broker, f"wal.{name}.log", expect=4, within_s=30)
    assert len(records) == 4
    assert {r.key for r in records} == {key.encode()}
    assert len({r.partition for r in records}) == 1  # one key: one partition, in order
    envs = [decode_envelope(r.value) for r in sorted(records, key=lambda r: r.offset)]
    ops = [cache_op(env) for env in envs]
    assert [op.kind for op in ops] == [OpKind.SET, OpKind.TOUCH, OpKind.DELETE, OpKind.SET]
    assert [op.version for op in ops] == [
        put.version,
        touched.version,
        deleted.version,
        put.version,
    ]
    assert [env.id for env in envs[:3]] == [put.record_id, touched.record_id, deleted.record_id]
    assert dict(envs[0].target) == {
        "type": "memcached",
        "op": "set",
        "key": key,
        "ttl": 600,
        "origin_region": "a",
    }
    assert dict(envs[2].target) == {
        "type": "memcached",
        "op": "delete",
        "key": key,
        "origin_region": "a",
    }
    assert (envs[0].payload_bytes(), envs[2].payload) == (value, None)
    # the client's record is WriteToLog's: equal but for the record's id and times of writing
    for env in (envs[0], envs[3]):
        assert env.lifecycle.deliver_at_ms == env.created_at_ms  # due at once
    life = Lifecycle(0, put.version.original_write_time_ms)
    assert envs[0]._replace(id="x", created_at_ms=0, lifecycle=life) == envs[3]._replace(
        id="x", created_at_ms=0, lifecycle=life
    )
    assert ops[0] == ops[3]


@pytest.mark.timeout(120)
async def test_with_the_broker_stopped_a_call_is_never_true_and_changes_nothing(
    own_broker, memcached_servers, unique
):
    name = f"rcdown-{unique}"
    local, other = (server.address for server in memcached_servers[:2])
    servers = own_broker.bootstrap_servers
    await apply_namespace(Settings(bootstrap_servers=servers), definition(name, local, other))
    ns = parse_namespace(definition(name, local, other))
    key = f"down:{unique}"
    cache = ReplicatingCache(ns, "a", bootstrap_servers=servers, publish_timeout_s=2.0)
    await cache.start()
    try:
        before = await cache.set(key, b"before")
        assert before.durable == "TRUE"
        # the outage: killed after 1 s (Tansu waits 5 s on SIGTERM while a client is connected)
        await asyncio.to_thread(own_broker.stop, 1.0)
        answers = []
        for i in range(3):
            result = await cache.set(key, f"during-{i}".encode())
            answers.append(result.durable)
            assert result.error is not None
            assert result.local is None  # nothing applied: the log does not hold it for sure
        deleted = await cache.delete(key)
        answers.append(deleted.durable)
        assert set(answers) <= {"FALSE", "UNKNOWN"}, answers
        assert await cache.get(key) == b"before"
        assert stored(local, key).version == before.version
    finally:
        await cache.close()
