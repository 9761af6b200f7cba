"""GET /v1/namespaces/{ns}/dlq/{id}: one entry with its record, whatever its payload's depth (the
entry puts the payload two levels down, and orjson writes 254 levels at most)."""

from __future__ import annotations

import json

import pytest

from walstream.api.app import create_api
from walstream.core.dlq import entry_headers, parse_dlq_record
from walstream.core.validate import MAX_PAYLOAD_DEPTH
from walstream.records import encode_envelope
from walstream.settings import Settings
from walstream.testing import api_deps
from walstream.testing.records import envelope, namespace_definition, registry_of


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _value(depth: int) -> bytes:
    """The encoded record of a payload of lists ``depth`` deep (spliced in as text: no encoder
    writes the deepest)."""
    raw = encode_envelope(envelope(ns="orders")._replace(payload="PAYLOAD"))
    return raw.replace(b'"PAYLOAD"', b"[" * depth + b"]" * depth)


class OneEntry:
    def __init__(self, value: bytes) -> None:
        self.value = value

    async def entry(self, topic, record_id, *, servers=None):
        headers = entry_headers(
            namespace="orders",
            reason="r",
            error_class="http_500",
            source="wal.orders.log[0]@1",
            attempts=1,
            dead_at_ms=1,
            behind=[],
        )
        return parse_dlq_record(b"id-1", self.value, headers, partition=0, offset=3)


async def _show(api_client, depth: int):
    deps = api_deps(
        Settings(auth=False),
        registry_of(namespace_definition("orders")),
        dlq=OneEntry(_value(depth)),
    )
    client = await api_client(create_api(deps))
    response = await client.get("/v1/namespaces/orders/dlq/id-1")
    assert response.status == 200, await response.text()
    return await response.json(loads=lambda text: json.loads(text))


@pytest.mark.parametrize("depth", [1, MAX_PAYLOAD_DEPTH, 600])
async def test_a_payload_is_shown_whole_however_deep(api_client, depth):
    shown = await _show(api_client, depth)
    assert shown["record"]["payload"] == _nested(depth)
    assert "payload_omitted" not in shown


async def test_a_payload_too_deep_for_any_encoder_is_left_out_and_said(api_client):
    shown = await _show(api_client, 1010)
    assert shown["record"]["payload"] is None
    assert "too deep" in shown["payload_omitted"]
    assert shown["id"] == "id-1"
