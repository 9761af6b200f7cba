"""The payload rules in the CLI and the client (issue 15 items 4 and 5): ``walstream write`` and
``WalClient`` refuse a number the log would change instead of sending another one, and
``walstream dlq show`` prints an entry whose payload nests as deep as the log holds."""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import orjson
import pytest
from click.testing import CliRunner

from walstream.cli import cli
from walstream.client import WalClient, write_request
from walstream.core.dlq import DlqEntry
from walstream.core.validate import parse_payload_text
from walstream.dlq import DlqPage, DlqReader
from walstream.errors import BadRequestError
from walstream.records import Envelope, Lifecycle, decode_envelope, encode_envelope

BIG = 123456789012345678901234567890
#: Valid JSON (orjson reads it as 0.0) with an exponent beyond what ``decimal`` holds.
TINY = "1e-99999999999999999999999"


@pytest.mark.parametrize(
    "payload",
    [
        str(BIG),
        '{"a": [1e400]}',
        "1.0000000000000000001",
        "1e-99999999999999999999999",  # a traceback before (decimal's InvalidOperation)
        '{"a": [-1E+99999999999999999999]}',
    ],
)
def test_walstream_write_refuses_a_number_the_log_would_change(payload):
    result = CliRunner().invoke(cli, ["write", "orders", payload, "--api", "http://127.0.0.1:9"])
    assert result.exit_code == 2, result.output  # refused before anything is sent
    assert "payload" in result.output
    assert "string" in result.output


async def test_the_client_refuses_such_a_number_and_sends_the_rest(client, producer):
    base = f"http://{client.host}:{client.port}"
    async with WalClient(base) as wal:
        for payload in (BIG, {"a": [1, -(2**64)]}, math.nan, [math.inf]):
            result = await wal.write("orders", payload)
            assert (result.durable, result.field, result.status) == ("FALSE", "payload", None)
        assert producer.sent == []
        results = await wal.write_batch(
            "orders",
            [write_request(1), write_request({"n": BIG}), write_request(2**64 - 1)],
        )
    assert [r.durable for r in results] == ["TRUE", "FALSE", "TRUE"]
    assert results[1].field == "payload"
    assert str(BIG) in results[1].message
    assert [decode_envelope(r.value).payload for r in producer.sent] == [1, 2**64 - 1]


async def test_the_client_answers_what_it_cannot_encode_and_sends_the_rest(client, producer):
    """Never a TypeError from the encoder: FALSE, naming the payload when it is why."""
    base = f"http://{client.host}:{client.port}"
    async with WalClient(base) as wal:
        for payload in ({1, 2}, object(), ["\udc80"]):  # no JSON type; a lone surrogate
            result = await wal.write("orders", payload)
            assert (result.durable, result.field, result.status) == ("FALSE", "payload", None)
        # another field that cannot be encoded: FALSE, naming no payload
        result = await wal.write("orders", 1, idempotency_token="t\ud800")
        assert (result.durable, result.field) == ("FALSE", None)
        assert result.message.startswith("body: cannot be encoded")
        # a batch of records none of which can be sent sends nothing
        results = await wal.write_batch("orders", [write_request({1}), write_request(BIG)])
        assert [r.field for r in results] == ["payload", "payload"]
        # the deepest payload the log holds, in a batch beside a good record
        results = await wal.write_batch("orders", [write_request(_deep(253)), write_request(2)])
        assert [r.durable for r in results] == ["TRUE", "TRUE"], results
    assert [decode_envelope(r.value).payload for r in producer.sent] == [_deep(253), 2]


def test_walstream_write_takes_a_payload_as_deep_as_the_log_holds():
    assert parse_payload_text(b"[" * 253 + b"1" + b"]" * 253) is not None
    with pytest.raises(BadRequestError) as refused:
        parse_payload_text(b"[" * 254 + b"1" + b"]" * 254)
    assert refused.value.field == "payload"


def _deep(depth: int) -> object:
    value: object = "bottom"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [200, 252, 253])
def test_dlq_show_prints_a_deep_payload(monkeypatch, depth):
    """The log holds payloads up to 253 levels deep (one level under the record); dlq show
    puts them two levels down. A fake reader: what is tested is the printing."""
    env = Envelope(
        "rid",
        "orders",
        None,
        _deep(depth),
        "json",
        {"type": "kafka", "topic": "t"},
        Lifecycle(1, 1),
        "tok",
        1,
    )
    entry = DlqEntry(
        id="rid",
        namespace="orders",
        reason="boom",
        error_class="http_500",
        source="t[0]@1",
        attempts=1,
        dead_at_ms=1,
        value=encode_envelope(env),
    )

    async def namespace_config(settings, name):
        return SimpleNamespace(topics=SimpleNamespace(dlq="dlq-topic"))

    async def page(self, topic, selection, limit=100, after=None):
        return DlqPage(entries=[entry], open=1, matching=1, next=None)

    monkeypatch.setattr("walstream.cli.dlq.namespace_config", namespace_config)
    monkeypatch.setattr(DlqReader, "page", page)
    monkeypatch.setenv("WALSTREAM_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    result = CliRunner().invoke(cli, ["dlq", "show", "orders", "rid"])
    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.output)
    assert shown["id"] == "rid"
    assert shown["record"]["payload"] == _deep(depth)


def test_walstream_write_payload_check_does_not_crash_on_a_huge_exponent():
    """``walstream write demo 1e-99999999999999999999999`` goes through parse_payload_text."""
    with contextlib.suppress(BadRequestError):  # refused naming the payload: fine (exit 2)
        parse_payload_text(TINY.encode())


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
