"""WriteToLog against the real broker: TRUE means on the log exactly; bad input writes nothing;
namespaces reach a running API over the control topic."""

from __future__ import annotations

import asyncio

import pytest

from walstream.api.app import build_api
from walstream.broker import free_port
from walstream.client import WalClient, write_request
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.records import decode_envelope
from walstream.settings import Settings

from .helpers import read_topic, topic_end_offsets

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(broker, unique):
    return Settings(
        bootstrap_servers=broker,
        control_topic=f"walstream.namespaces.{unique}",
        write_timeout_s=3.0,
        max_in_flight=8,
        registry_ready_timeout_s=10.0,
        auth=False,
    )


@pytest.fixture
async def publisher(settings):
    publisher = NamespacePublisher(settings)
    await publisher.start()
    yield publisher
    await publisher.stop()


async def wait_for(predicate, within_s=10.0, what="condition"):
    async with asyncio.timeout(within_s):
        while not await predicate():
            await asyncio.sleep(0.05)
    return True


async def test_true_write_is_on_the_log_exactly_as_sent(api_client, settings, publisher, unique):
    ns = f"orders-{unique}"
    await publisher.apply(
        parse_namespace(
            {
                "name": ns,
                "target": {"type": "kafka", "topic": "out"},
                "allowed_targets": {"http": ["http://127.0.0.1:9"]},
            }
        )
    )
    client = await api_client(build_api(settings))
    body = {
        "payload": {"sku": "A-1", "qty": 2},
        "lifecycle": {"delay_ms": 0, "original_write_time": 1_700_000_000_123},
        "target": {"type": "http", "url": "http://127.0.0.1:9/hook"},
        "idempotency_token": "tok-42",
        "key": "user-7",
    }
    response = await client.post(f"/v1/namespaces/{ns}/log", json=body)
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["durable"] == "TRUE"

    records = await read_topic(settings.bootstrap_servers, f"wal.{ns}.log", expect=1)
    assert len(records) == 1
    record = records[0]
    assert record.key == b"user-7"
    env = decode_envelope(record.value)
    assert env.id == answer["id"]
    assert env.namespace == ns
    assert env.payload == body["payload"]
    assert env.target == body["target"]
    assert env.idempotency_token == "tok-42"
    assert env.key == "user-7"
    assert env.lifecycle.original_write_time_ms == 1_700_000_000_123
    assert env.attempt == 0


async def test_bad_input_gets_its_4xx_and_writes_nothing(api_client, settings, publisher, unique):
    ns = f"strict-{unique}"
    await publisher.apply(
        parse_namespace(
            {
                "name": ns,
                "max_payload_bytes": 100,
                "max_delay_ms": 1000,
                "target": {"type": "kafka", "topic": "out"},
            }
        )
    )
    client = await api_client(build_api(settings))
    url = f"/v1/namespaces/{ns}/log"
    cases = [
        (b"{oops", 400, "body"),
        (b'{"payload": 1, "lifecycle": {"delay_ms": "1s"}}', 400, "lifecycle.delay_ms"),
        (b'{"payload": 1, "lifecycle": {"delay_ms": 5000}}', 400, "lifecycle.delay_ms"),
        (b'{"payload": "' + b"x" * 200 + b'"}', 413, "payload"),
        (b'{"payload": 1, "target": {"type": "kafka"}}', 400, "target.topic"),
    ]
    for raw, status, field in cases:
        response = await client.post(url, data=raw, headers={"content-type": "application/json"})
        assert response.status == status, raw
        answer = await response.json()
        assert answer["durable"] == "FALSE"
        assert answer["field"] == field
    missing = await client.post(f"/v1/namespaces/nope-{unique}/log", json={"payload": 1})
    assert missing.status == 404
    assert (await missing.json())["durable"] == "FALSE"
    ends = await topic_end_offsets(settings.bootstrap_servers, f"wal.{ns}.log")
    assert sum(ends.values()) == 0


async def test_namespace_changes_reach_a_running_api(api_client, settings, publisher, unique):
    client = await api_client(build_api(settings))  # started before the namespace exists
    ns = f"late-{unique}"
    url = f"/v1/namespaces/{ns}/log"
    assert (await client.post(url, json={"payload": 1})).status == 404

    config = {"name": ns, "max_attempts": 3, "target": {"type": "kafka", "topic": "out"}}
    await publisher.apply(parse_namespace(config))

    async def writable():
        return (await client.post(url, json={"payload": 1})).status == 200

    await wait_for(writable, what="namespace to be usable")

    await publisher.apply(parse_namespace({**config, "max_attempts": 9}))

    async def max_attempts_is_9():
        shown = await (await client.get(f"/v1/namespaces/{ns}")).json()
        return shown["max_attempts"] == 9

    await wait_for(max_attempts_is_9, what="max_attempts change")

    await publisher.delete(ns)

    async def refused():
        return (await client.post(url, json={"payload": 1})).status == 404

    await wait_for(refused, what="deleted namespace to refuse writes")


async def test_a_process_started_later_sees_every_namespace(
    api_client, settings, publisher, unique
):
    names = [f"early{i}-{unique}" for i in range(3)]
    for name in names:
        await publisher.apply(parse_namespace({"name": name}))
    await publisher.delete(names[1])
    client = await api_client(build_api(settings))
    ready = await (await client.get("/readyz")).json()
    assert ready["registry_loaded"] is True
    listing = await (await client.get("/v1/namespaces")).json()
    assert sorted(n["name"] for n in listing["namespaces"]) == [names[0], names[2]]


async def test_burst_beyond_the_in_flight_limit_is_shed_never_hangs(
    api_client, settings, publisher, unique
):
    ns = f"burst-{unique}"
    await publisher.apply(parse_namespace({"name": ns, "target": {"type": "kafka", "topic": "o"}}))
    client = await api_client(build_api(settings))
    url = f"/v1/namespaces/{ns}/log"
    async with asyncio.timeout(20):  # never a hang
        responses = await asyncio.gather(
            *(client.post(url, json={"payload": i}) for i in range(300))
        )
    statuses = [r.status for r in responses]
    assert set(statuses) <= {200, 503}
    accepted = statuses.count(200)
    assert accepted >= settings.max_in_flight
    for response in responses:
        if response.status == 503:
            assert response.headers["Retry-After"]
            assert (await response.json())["durable"] == "FALSE"
    ends = await topic_end_offsets(settings.bootstrap_servers, f"wal.{ns}.log")
    assert sum(ends.values()) == accepted  # every TRUE is on the log, no 503 is


async def test_batch_and_client_write_to_the_log(api_client, settings, publisher, unique):
    """WalClient over a real server: batch results per record; keyed records share a partition."""
    ns = f"batch-{unique}"
    await publisher.apply(parse_namespace({"name": ns, "target": {"type": "kafka", "topic": "o"}}))
    client = await api_client(build_api(settings.replace(max_in_flight=100)))
    base = str(client.make_url("/")).rstrip("/")
    records = [write_request({"n": i}, key=f"k{i % 3}") for i in range(30)]
    records.append(write_request({"n": "bad"}, delay_ms=-1))
    async with WalClient(base) as wal:
        results = await wal.write_batch(ns, records)
        single = await wal.write(ns, {"n": "single"}, key="k0", idempotency_token="tok-s")
        missing = await wal.write(f"absent-{unique}", {"n": 1})
    assert [r.durable for r in results] == ["TRUE"] * 30 + ["FALSE"]
    assert results[-1].field == "lifecycle.delay_ms"
    assert single.ok
    assert (missing.durable, missing.status) == ("FALSE", 404)

    log = await read_topic(settings.bootstrap_servers, f"wal.{ns}.log", expect=31)
    assert len(log) == 31
    by_id = {decode_envelope(r.value).id: r for r in log}
    assert set(by_id) == {r.id for r in results[:30]} | {single.id}
    partitions_of_k0 = {r.partition for r in log if r.key == b"k0"}
    assert len(partitions_of_k0) == 1  # batch and single writes of one key share a partition
    payloads = sorted(str(decode_envelope(r.value).payload["n"]) for r in log if r.key == b"k1")
    assert payloads == sorted(str(i) for i in range(30) if i % 3 == 1)


async def test_client_says_false_when_nothing_was_sent():
    async with WalClient(f"http://127.0.0.1:{free_port()}") as wal:
        result = await wal.write("any", {"n": 1})
    assert result.durable == "FALSE"
