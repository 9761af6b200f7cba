"""WriteToLog over HTTP: statuses, bodies, and what was (not) produced."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from walstream.errors import WriteRejectedError, WriteUnknownError
from walstream.records import decode_envelope

URL = "/v1/namespaces/orders/log"


async def test_true_only_after_the_write(client, producer):
    response = await client.post(URL, json={"payload": {"sku": 1}, "key": "u1"})
    assert response.status == 200
    body = await response.json()
    assert body["durable"] == "TRUE"
    assert len(producer.sent) == 1
    sent = producer.sent[0]
    assert sent.topic == "wal.orders.log"
    assert sent.key == b"u1"
    env = decode_envelope(sent.value)
    assert env.id == body["id"]
    assert env.payload == {"sku": 1}


NOW = 1_800_000_000_000  # the FakeClock's time


@pytest.mark.parametrize(
    ("lifecycle", "tier_topic", "due"),
    [
        ({"delay_ms": 500}, "walstream.delay.timer", NOW + 500),
        ({"delay_ms": 30_000, "jitter_ms": 10_000}, "walstream.delay.10s", NOW + 35_000),
        ({"deliver_at": NOW + 45_000}, "walstream.delay.10s", NOW + 45_000),
    ],
)
async def test_a_delayed_write_goes_straight_to_its_delay_tier_addressed_to_the_log(
    client, producer, lifecycle, tier_topic, due
):
    response = await client.post(URL, json={"payload": 1, "key": "k", "lifecycle": lifecycle})
    assert response.status == 200, await response.text()
    [sent] = producer.sent
    assert (sent.topic, sent.key, sent.due) == (tier_topic, b"k", (due, "wal.orders.log"))
    assert decode_envelope(sent.value).lifecycle.deliver_at_ms == due  # rand 0.5 of the jitter


async def test_a_deliver_at_already_past_is_due_now(client, producer):
    response = await client.post(URL, json={"payload": 1, "lifecycle": {"deliver_at": 5}})
    assert response.status == 200
    [sent] = producer.sent
    assert (sent.topic, sent.due) == ("wal.orders.log", None)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b'"a string"', 400, "body"),
        (b'{"payload": 1, "lifecycle": {"delay_ms": "soon"}}', 400, "lifecycle.delay_ms"),
        (b'{"payload": 1, "lifecycle": {"delay_ms": 60001}}', 400, "lifecycle.delay_ms"),
        (
            b'{"payload": 1, "lifecycle": {"delay_ms": 1, "deliver_at": 2}}',
            400,
            "lifecycle.deliver_at",
        ),
        (
            b'{"payload": 1, "lifecycle": {"deliver_at": 1800000060001}}',
            400,
            "lifecycle.deliver_at",
        ),
        (
            b'{"payload": 1, "lifecycle": {"delay_ms": 50000, "jitter_ms": 20000}}',
            400,
            "lifecycle.jitter_ms",
        ),
        (b'{"payload": 1, "target": {"type": "nope"}}', 400, "target.type"),
        (
            b'{"payload": 1, "target": {"type": "http", "url": "http://127.0.0.1:9/x",'
            b' "headers": {"Transfer-Encoding": "chunked"}}}',
            400,
            "target.headers.Transfer-Encoding",
        ),
        (
            b'{"payload": 1, "target": {"type": "http", "url": "http://169.254.169.254/x"}}',
            403,
            "target.url",
        ),
        (b'{"payload": "' + b"x" * 2000 + b'"}', 413, "payload"),
    ],
)
async def test_bad_input_is_refused_and_nothing_written(client, producer, body, status, field):
    response = await client.post(URL, data=body, headers={"content-type": "application/json"})
    assert response.status == status
    answer = await response.json()
    assert answer["durable"] == "FALSE"
    assert answer["field"] == field
    assert field in answer["message"]
    assert producer.sent == []


async def test_unknown_namespace_is_404(client, producer):
    response = await client.post("/v1/namespaces/nope/log", json={"payload": 1})
    assert response.status == 404
    assert (await response.json())["durable"] == "FALSE"
    assert producer.sent == []


async def test_request_over_the_size_limit_is_413(client, producer):
    response = await client.post(URL, data=b"x" * (65 * 1024))
    assert response.status == 413
    assert (await response.json())["durable"] == "FALSE"
    assert producer.sent == []


async def test_broker_timeout_is_unknown_504(client, producer):
    producer.fail_with = WriteUnknownError("no ack")
    response = await client.post(URL, json={"payload": 1})
    assert response.status == 504
    assert (await response.json())["durable"] == "UNKNOWN"


async def test_broker_refusal_is_false_503(client, producer):
    producer.fail_with = WriteRejectedError("broker unavailable")
    response = await client.post(URL, json={"payload": 1})
    assert response.status == 503
    assert (await response.json())["durable"] == "FALSE"


async def test_shedding_beyond_the_in_flight_limit(client, producer, deps):
    producer.block = asyncio.Event()
    limit = deps.limiter.limit
    pending = [asyncio.create_task(client.post(URL, json={"payload": i})) for i in range(limit + 6)]
    async with asyncio.timeout(5):
        while deps.limiter.in_flight < limit:
            await asyncio.sleep(0.01)
        # every request beyond the limit is answered at once, while the first `limit` still wait
        await asyncio.sleep(0.2)
    done = [t for t in pending if t.done()]
    assert len(done) == 6
    for task in done:
        response = task.result()
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["durable"] == "FALSE"
    producer.block.set()
    statuses = sorted([(await t).status for t in pending])
    assert statuses == [200] * limit + [503] * 6
    assert len(producer.sent) == limit
    assert deps.limiter.in_flight == 0


async def test_registry_not_loaded_sheds_instead_of_404(client, deps, producer):
    deps.registry_loaded = lambda: False
    response = await client.post(URL, json={"payload": 1})
    assert response.status == 503
    assert producer.sent == []


async def test_batch_gives_one_result_per_record(client, producer):
    records = [
        {"payload": 1},
        {"payload": 2, "lifecycle": {"delay_ms": -5}},
        {"payload": 3, "idempotency_token": "t3"},
    ]
    response = await client.post(URL + ":batch", json={"records": records})
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["durable"] for r in results] == ["TRUE", "FALSE", "TRUE"]
    assert results[1]["status"] == 400
    assert results[1]["field"] == "lifecycle.delay_ms"
    assert [decode_envelope(s.value).payload for s in producer.sent] == [1, 3]
    assert decode_envelope(producer.sent[1].value).idempotency_token == "t3"


async def test_batch_limits(client, producer):
    response = await client.post(URL + ":batch", json={"records": [{"payload": 1}] * 6})
    assert response.status == 413
    response = await client.post(URL + ":batch", json={"records": [{"payload": 1}] * 5})
    assert response.status == 503  # 5 records > 4 in-flight slots: shed whole, nothing written
    assert producer.sent == []


async def test_batch_broker_errors_per_record(client, producer):
    producer.fail_with = WriteUnknownError("no ack")
    response = await client.post(URL + ":batch", json={"records": [{"payload": 1}]})
    results = (await response.json())["results"]
    assert results[0]["durable"] == "UNKNOWN"
    assert results[0]["status"] == 504


async def test_health_and_ready(client, deps, producer):
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["namespaces"] == 1
    producer.reachable = False
    not_ready = await client.get("/readyz")
    assert not_ready.status == 503
    assert (await not_ready.json())["broker"] is False


async def test_namespace_views_and_json_404(client):
    listing = await (await client.get("/v1/namespaces")).json()
    assert [n["name"] for n in listing["namespaces"]] == ["orders"]
    shown = await client.get("/v1/namespaces/orders")
    assert (await shown.json())["topics"]["log"] == "wal.orders.log"
    missing = await client.get("/no/such/route")
    assert missing.status == 404
    assert orjson.loads(await missing.read())["durable"] == "FALSE"


async def test_unknown_path_and_wrong_method_answer_json(client, producer):
    missing = await client.post("/v1/nowhere", json={"payload": 1})
    assert missing.status == 404
    assert (await missing.json())["durable"] == "FALSE"
    wrong = await client.get(URL)
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "POST"
    assert (await wrong.json())["error"] == "MethodNotAllowedError"
    assert producer.sent == []


async def test_a_redrive_to_a_target_outside_allowed_targets_is_refused(client):
    response = await client.post(
        "/v1/namespaces/orders/dlq:redrive",
        json={"target": {"type": "kafka", "topic": "t", "bootstrap_servers": "evil:9092"}},
    )
    assert response.status == 403
    answer = await response.json()
    assert answer["field"] == "target.bootstrap_servers"
    assert "allowed_targets" in answer["message"]
