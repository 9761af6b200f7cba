"""Review of issue 15: a number the JSON decoder refuses (``1e400``) outside a payload.

The advice for a payload (send it as a string, or with payload_encoding=base64) is wrong for
``rate``, ``since``, ``from`` or ``lifecycle.delay_ms``: the refusal names the field and says
what the field takes.
"""

from __future__ import annotations

import pytest

from walstream.core.validate import invalid_json
from walstream.errors import BadRequestError

URL = "/v1/namespaces/orders/log"


async def _refusal(response) -> dict:
    assert response.status == 400
    return await response.json()


@pytest.mark.parametrize(
    ("path", "body", "field", "accepts"),
    [
        (URL, b'{"payload": 1, "lifecycle": {"delay_ms": 1e400}}', "lifecycle.delay_ms", "integer"),
        (URL, b'{"payload": 1, "original_write_time": -1e400}', "original_write_time", "integer"),
        ("/v1/namespaces/orders/dlq:redrive", b'{"rate": 1e400}', "rate", "records per second"),
        ("/v1/namespaces/orders/dlq:redrive", b'{"since": 1E+400}', "since", "ms since the epoch"),
    ],
)
async def test_a_number_beyond_a_double_outside_the_payload_names_its_field(
    client, producer, path, body, field, accepts
):
    answer = await _refusal(
        await client.post(path, data=body, headers={"content-type": "application/json"})
    )
    assert answer["field"] == field
    assert field in answer["message"]
    assert "base64" not in answer["message"]
    assert "payload" not in answer["message"]
    assert accepts in answer["message"]
    assert producer.sent == []


@pytest.mark.parametrize(
    ("raw", "field", "accepts"),
    [
        (b'{"from": 1e400, "to": 5}', "from", "ms since the epoch"),
        (b'{"from": 1, "to": 1e999}', "to", "ms since the epoch"),
        (
            b'{"records": [{"payload": 1, "lifecycle": {"jitter_ms": 1e400}}]}',
            "records[0].lifecycle.jitter_ms",
            "integer",
        ),
        (
            b'{"payload": 1, "target": {"type": "http", "url": "http://a/", "timeout_ms": 1e400}}',
            "target.timeout_ms",
            "integer",
        ),
    ],
)
def test_the_refusal_says_what_the_field_takes(raw, field, accepts):
    error = invalid_json(raw, "number out of range")
    assert isinstance(error, BadRequestError)
    assert error.field == field
    assert "base64" not in error.reason
    assert accepts in error.reason


def test_a_payload_number_keeps_the_payload_advice():
    error = invalid_json(b'{"records": [{"payload": {"a": 1e400}}]}', "number out of range")
    assert error.field == "records[0].payload"
    assert "payload_encoding=base64" in error.reason
