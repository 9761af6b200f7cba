"""Review of issue 15 items 4 and 5 in the client and the CLI: ``WalClient`` promises never to
raise for a write's outcome, and refuses unkept numbers without sending them, but a payload its
encoder cannot write (a lone surrogate, nesting past orjson's 254 levels) raises a TypeError
from ``write`` and ``write_batch`` (the whole batch, its good records too); ``write_batch``
cannot send a record nested 252 or 253 levels, which the API takes in a batch (the batch body
puts the payload 3 levels down); and ``walstream write`` prints a traceback for a payload nested
254 levels instead of refusing it (exit 2 naming the payload, as the API answers 400)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from walstream.cli import cli
from walstream.client import WalClient, write_request
from walstream.records import decode_envelope


def _deep(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "payload",
    ["\ud800", {"s": "a\udfffb"}, _deep(254)],
    ids=["lone-surrogate", "surrogate-in-object", "nested-254"],
)
async def test_the_client_answers_a_payload_it_cannot_encode_without_raising(
    client, producer, payload
):
    base = f"http://{client.host}:{client.port}"
    async with WalClient(base) as wal:
        result = await wal.write("orders", payload)
        assert result.durable == "FALSE", result
        results = await wal.write_batch("orders", [write_request(payload), write_request(1)])
    assert [r.durable for r in results] == ["FALSE", "TRUE"], results
    assert [decode_envelope(r.value).payload for r in producer.sent] == [1]


@pytest.mark.parametrize("depth", [252, 253])
async def test_write_batch_sends_a_record_nested_as_deep_as_the_api_takes(client, producer, depth):
    base = f"http://{client.host}:{client.port}"
    async with WalClient(base) as wal:
        single = await wal.write("orders", _deep(depth))
        assert single.durable == "TRUE", single  # the API takes it alone
        results = await wal.write_batch("orders", [write_request(_deep(depth))])
    assert [r.durable for r in results] == ["TRUE"], results


def test_walstream_write_refuses_a_payload_nested_too_deep():
    payload = "[" * 254 + "1" + "]" * 254
    result = CliRunner().invoke(cli, ["write", "orders", payload, "--api", "http://127.0.0.1:9"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, result.output
    assert "PAYLOAD" in result.output or "payload" in result.output
