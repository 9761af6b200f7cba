"""Payloads kept exactly (issue 15 item 4): a number the log would change is refused, with a 400
naming ``payload``, in single and batch writes; numbers the log keeps are written as sent."""

from __future__ import annotations

import orjson
import pytest

from walstream.records import decode_envelope

URL = "/v1/namespaces/orders/log"
BIG = "123456789012345678901234567890"
#: Valid JSON (orjson reads it as 0.0) with an exponent beyond what ``decimal`` holds.
TINY = "1e-99999999999999999999999"


def _raw(payload_text: str, **fields: str) -> bytes:
    extra = "".join(f',"{k}":{v}' for k, v in fields.items())
    return f'{{"payload":{payload_text}{extra}}}'.encode()


@pytest.mark.parametrize(
    ("payload", "shown"),
    [
        (BIG, BIG),
        (f"-{BIG}", f"-{BIG}"),
        ("18446744073709551616", "18446744073709551616"),  # 2**64
        ("-9223372036854775809", "-9223372036854775809"),  # -2**63 - 1
        ("1.0000000000000000001", "1.0000000000000000001"),
        ("1e-400", "1e-400"),
        ("1e400", "1e400"),  # orjson refuses the body: still named payload
        ("-1E+999", "-1E+999"),
        # exponents beyond what decimal holds (a 500 before: InvalidOperation)
        ("1e-99999999999999999999999", "1e-99999999999999999999999"),
        ("-1E-999999999999999999999", "-1E-999999999999999999999"),
        ("[1E+99999999999999999999]", "1E+99999999999999999999"),  # orjson refuses it
        ("1" * 400 + "e-99999999999999999999999", "1" * 61 + "..."),  # shown cut
        (f'{{"a":[1,{{"b":{BIG}}}]}}', BIG),  # nested
        ("[" * 150 + BIG + "]" * 150, BIG),  # nested deep
        ('{"a":NaN}', "NaN"),
        ("[Infinity]", "Infinity"),
    ],
)
async def test_a_number_the_log_would_change_is_refused_naming_payload(
    client, producer, payload, shown
):
    response = await client.post(URL, data=_raw(payload))
    answer = await response.json()
    assert response.status == 400, answer
    assert answer["field"] == "payload"
    assert answer["durable"] == "FALSE"
    assert shown in answer["reason"]
    assert "string" in answer["reason"]  # says what to do instead
    assert producer.sent == []


@pytest.mark.parametrize(
    "payload",
    [
        "18446744073709551615",  # 2**64 - 1
        "-9223372036854775808",  # -2**63
        "1234567890123456789",
        "-0.0",
        "0.30000000000000004",
        "1.7976931348623157e308",
        "5e-324",
        "1.5e300",
        "0e-99999999999999999999999",  # zero: kept, though decimal cannot hold its exponent
        "-0.0E+99999999999999999999",
        '"123456789012345678901234567890"',  # a string: kept as it is
        '{"n":1.25,"big":"1e400","id":"123e4567-e89b-12d3-a456-426614174000"}',
    ],
)
async def test_numbers_the_log_keeps_are_written_as_sent(client, producer, payload):
    response = await client.post(URL, data=_raw(payload))
    assert response.status == 200, await response.text()
    (record,) = producer.sent
    logged = decode_envelope(record.value).payload
    assert orjson.loads(orjson.dumps(logged)) == orjson.loads(payload)
    assert logged == orjson.loads(payload)
    assert repr(logged) == repr(orjson.loads(payload))  # -0.0 stays -0.0


async def test_base64_keeps_any_bytes(client, producer):
    """The way to send any number exactly: its text, base64."""
    import base64

    text = BIG.encode()
    body = {"payload": base64.b64encode(text).decode(), "payload_encoding": "base64"}
    response = await client.post(URL, json=body)
    assert response.status == 200
    assert decode_envelope(producer.sent[0].value).payload_bytes() == text


async def test_each_batch_record_gets_its_own_400(client, producer):
    body = (
        b'{"records":[{"payload":1},{"payload":{"n":' + BIG.encode() + b'}},{"payload":2},'
        b'{"payload":1.0000000000000000001}]}'
    )
    response = await client.post(URL + ":batch", data=body)
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [200, 400, 200, 400]
    assert results[1]["field"] == results[3]["field"] == "payload"
    assert BIG in results[1]["reason"]
    assert [decode_envelope(r.value).payload for r in producer.sent] == [1, 2]


async def test_a_huge_exponent_in_a_batch_is_its_records_400(client, producer):
    body = b'{"records":[{"payload":1},{"payload":[1e-99999999999999999999999]},{"payload":2}]}'
    response = await client.post(URL + ":batch", data=body)
    assert response.status == 200, await response.text()
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [200, 400, 200]
    assert results[1]["field"] == "payload"
    assert "1e-99999999999999999999999" in results[1]["reason"]
    assert [decode_envelope(r.value).payload for r in producer.sent] == [1, 2]


async def test_a_batch_orjson_cannot_decode_names_the_record(client, producer):
    body = b'{"records":[{"payload":1},{"payload":[1e400]}]}'
    response = await client.post(URL + ":batch", data=body)
    answer = await response.json()
    assert response.status == 400
    assert answer["field"] == "records[1].payload"
    assert producer.sent == []


async def test_invalid_json_still_names_the_body(client):
    response = await client.post(URL, data=b'{"payload": 1,}')
    answer = await response.json()
    assert response.status == 400
    assert answer["field"] == "body"
    assert answer["reason"].startswith("invalid JSON")


@pytest.mark.parametrize(
    "number", [TINY, "0e-99999999999999999999999", "-1E-999999999999999999999"]
)
async def test_a_number_with_a_huge_negative_exponent_is_not_a_500(client, producer, number):
    response = await client.post(URL, data=f'{{"payload":{number}}}')
    assert response.status != 500, await response.text()
    assert response.status in (200, 400), await response.text()
    response = await client.post(URL + ":batch", data=f'{{"records":[{{"payload":{number}}}]}}')
    assert response.status != 500, await response.text()
