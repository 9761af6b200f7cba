"""No 5xx for bad input (issue 15 items 5 and 6): each gets a 4xx naming the field, nothing is
written, and in a batch only the bad record is refused."""

from __future__ import annotations

import gzip

import orjson
import pytest

from walstream.api.app import create_api
from walstream.core.targets import parse_target
from walstream.core.validate import MAX_PAYLOAD_DEPTH
from walstream.errors import ConfigError
from walstream.kafka.producer import MemoryLogProducer
from walstream.namespaces.config import parse_namespace
from walstream.records import decode_envelope
from walstream.settings import Settings
from walstream.testing import api_deps, registry_of

URL = "/v1/namespaces/orders/log"


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


async def _refused(response, field: str) -> dict:
    answer = await response.json()
    assert response.status == 400, answer
    assert answer["field"] == field, answer
    assert answer["durable"] == "FALSE"
    return answer


@pytest.mark.parametrize("payload", ["aGVsbG8=é", "ü", "aGVs\u00a0bG8="])
async def test_base64_with_non_ascii_characters_is_a_400(client, producer, payload):
    body = {"payload": payload, "payload_encoding": "base64"}
    answer = await _refused(await client.post(URL, json=body), "payload")
    assert "base64" in answer["reason"]
    assert producer.sent == []


async def test_base64_with_non_ascii_characters_fails_only_its_batch_record(client, producer):
    records = [
        {"payload": "aGVsbG8=", "payload_encoding": "base64"},
        {"payload": "aGVsbG8=é", "payload_encoding": "base64"},
        {"payload": 1},
    ]
    response = await client.post(URL + ":batch", json={"records": records})
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [200, 400, 200]
    assert results[1]["field"] == "payload"
    assert len(producer.sent) == 2


@pytest.mark.parametrize("depth", [MAX_PAYLOAD_DEPTH + 1, 255, 600, 1_023])
async def test_a_payload_nested_too_deep_is_a_400_naming_payload(client, producer, depth):
    answer = await _refused(
        await client.post(URL, data=b'{"payload":' + _nested(depth) + b"}"), "payload"
    )
    assert f"{MAX_PAYLOAD_DEPTH} levels" in answer["reason"]
    assert producer.sent == []


async def test_a_payload_at_the_depth_limit_is_written_as_sent(client, producer):
    assert MAX_PAYLOAD_DEPTH == 253  # the deepest a log record holds (orjson writes 254)
    nested = _nested(MAX_PAYLOAD_DEPTH)
    response = await client.post(URL, data=b'{"payload":' + nested + b"}")
    assert response.status == 200, await response.text()
    (record,) = producer.sent
    assert orjson.dumps(decode_envelope(record.value).payload) == nested


async def test_a_payload_nested_too_deep_fails_only_its_batch_record(client, producer):
    body = b'{"records":[{"payload":1},{"payload":' + _nested(300) + b'},{"payload":2}]}'
    response = await client.post(URL + ":batch", data=body)
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [200, 400, 200]
    assert results[1]["field"] == "payload"


async def test_a_body_that_is_not_what_its_content_encoding_says_is_a_400(client, producer):
    headers = {"Content-Encoding": "gzip", "Connection": "close"}
    answer = await _refused(await client.post(URL, data=b'{"payload":1}', headers=headers), "body")
    assert "gzip" in answer["reason"]
    assert producer.sent == []
    # a gzip body is read as such
    response = await client.post(URL, data=gzip.compress(b'{"payload":7}'), headers=headers)
    assert response.status == 200
    assert decode_envelope(producer.sent[0].value).payload == 7


# item 6: what a target receives as an HTTP header cannot hold CR, LF or NUL


@pytest.mark.parametrize("bad", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b"])
async def test_a_token_with_cr_lf_or_nul_is_a_400(client, producer, bad):
    body = {"payload": 1, "idempotency_token": bad}
    answer = await _refused(await client.post(URL, json=body), "idempotency_token")
    assert "CR, LF or NUL" in answer["reason"]
    response = await client.post(URL + ":batch", json={"records": [{"payload": 2}, body]})
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [200, 400]
    assert results[1]["field"] == "idempotency_token"
    assert len(producer.sent) == 1


def _http_target(headers: dict[str, str]) -> dict:
    return {"type": "http", "url": "http://127.0.0.1:9/x", "headers": headers}


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"X-Tenant": "a\r\nX-Injected: 1"}, "target.headers.X-Tenant"),
        ({"X-Tenant": "a\nb"}, "target.headers.X-Tenant"),
        ({"X-Tenant": "a\x00b"}, "target.headers.X-Tenant"),
        ({"X-Bad\r\nName": "a"}, "target.headers.'X-Bad\\r\\nName'"),
        ({"X Tenant": "a"}, "target.headers.'X Tenant'"),
    ],
)
async def test_a_target_header_with_cr_lf_or_nul_is_a_400(client, producer, headers, field):
    body = {"payload": 1, "target": _http_target(headers)}
    await _refused(await client.post(URL, json=body), field)
    response = await client.post(URL + ":batch", json={"records": [body, {"payload": 2}]})
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [400, 200]
    assert results[0]["field"] == field
    assert len(producer.sent) == 1


@pytest.mark.parametrize("bad", ["tok\x01x", "tok\x0bx", "tok\x1fx", "tok\x7fx"])
async def test_a_token_with_a_control_character_is_a_400(client, producer, bad):
    """An http target (aiohttp, nginx, Node) refuses such a header value with a 400: the write
    must not be answered TRUE and then dead-lettered."""
    response = await client.post(URL, json={"payload": 1, "idempotency_token": bad})
    assert response.status == 400, await response.text()
    assert (await response.json())["field"] == "idempotency_token"
    assert producer.sent == []


@pytest.mark.parametrize("bad", ["v\x01w", "v\x0bw", "v\x7fw"])
async def test_a_target_header_with_a_control_character_is_a_400(api_client, bad):
    hook = "http://127.0.0.1:9/hook"
    registry = registry_of({"name": "hooks", "target": {"type": "http", "url": hook}})
    producer = MemoryLogProducer()
    deps = api_deps(Settings(auth=False, max_in_flight=4), registry, producer)
    client = await api_client(create_api(deps))
    target = {"type": "http", "url": hook, "headers": {"X-Tenant": bad}}
    response = await client.post("/v1/namespaces/hooks/log", json={"payload": 1, "target": target})
    assert response.status == 400, await response.text()
    assert (await response.json())["field"] == "target.headers.X-Tenant"
    assert producer.sent == []


def test_sendable_headers_are_accepted():
    # not Idempotency-Key: walstream sets it (tests/api/test_reserved_headers.py)
    spec = parse_target(_http_target({"X-Tenant": "a b\tc", "X-Request-Key": "é"}))
    assert spec.wire["headers"] == {"X-Tenant": "a b\tc", "X-Request-Key": "é"}


def test_namespace_config_refuses_such_a_target_header():
    """``walstream ns apply`` parses namespace files with parse_namespace."""
    with pytest.raises(ConfigError) as refused:
        parse_namespace({"name": "n", "target": _http_target({"X-Tenant": "a\r\nb"})})
    assert refused.value.key == "target.headers.X-Tenant"
