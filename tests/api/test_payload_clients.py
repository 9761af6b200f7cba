"""The payload rules in the CLI and the client (issue 15 items 4 and 5): ``walstream write`` and
``WalClient`` refuse a number the log would change instead of sending another one, and
``walstream dlq show`` prints an entry whose payload nests as deep as the log holds."""

from __future__ import annotations

import math
from types import SimpleNamespace

import orjson
import pytest
from click.testing import CliRunner

from walstream.cli import cli
from walstream.client import WalClient, write_request
from walstream.core.dlq import DlqEntry
from walstream.dlq import DlqPage, DlqReader
from walstream.records import Envelope, Lifecycle, decode_envelope, encode_envelope

BIG = 123456789012345678901234567890


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

    monkeypatch.setattr("walstream.cli._namespace_config", namespace_config)
    monkeypatch.setattr(DlqReader, "page", page)
    monkeypatch.setenv("WALSTREAM_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    result = CliRunner().invoke(cli, ["dlq", "show", "orders", "rid"])
    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.output)
    assert shown["id"] == "rid"
    assert shown["record"]["payload"] == _deep(depth)
