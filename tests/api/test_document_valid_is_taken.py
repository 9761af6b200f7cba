"""Review of issue 15: what the OpenAPI document calls valid, the server takes (schemathesis'
positive_data_acceptance found each case; tests/integration/test_schemathesis.py runs that check
now): an integer written ``262145.0`` is an integer (JSON Schema's), RFC 3339 takes a lower-case
``t``/``z`` and a leap second (read as ``:59``); what the server refuses, the document says:
the deprecated redrive ``id`` has the schema of ``ids``, a replay window's times lie between the
epoch and the end of year 9999 (digit strings and date-times too).
"""

from __future__ import annotations

import re

import jsonschema
import pytest

from walstream.api.openapi import openapi_document
from walstream.core.dlq import parse_selection
from walstream.core.numbers import as_integer
from walstream.core.replay_request import MAX_TIME_MS, parse_replay_request
from walstream.core.targets import parse_target
from walstream.core.times import parse_time_ms
from walstream.errors import BadRequestError
from walstream.records import decode_envelope

URL = "/v1/namespaces/orders/log"
NOW = 1_800_000_000_000
DOCUMENT = openapi_document()
_FORMATS = jsonschema.FormatChecker(formats=())
#: RFC 3339 5.6 date-time (T and Z in either case, a leap second's :60 included).
_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


@_FORMATS.checks("date-time")
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or _RFC3339.match(value) is not None


def _valid(name: str, instance: object) -> bool:
    schema = {"$ref": f"#/components/schemas/{name}", "components": DOCUMENT["components"]}
    return jsonschema.Draft202012Validator(schema, format_checker=_FORMATS).is_valid(instance)


# --- integers written with a fraction of zero ---------------------------------------------------


@pytest.mark.parametrize(("value", "taken"), [(5, 5), (5.0, 5), (1.7e12, 1_700_000_000_000)])
def test_an_integral_number_is_an_integer(value, taken):
    assert as_integer(value) == taken
    assert type(as_integer(value)) is int


@pytest.mark.parametrize("value", [5.5, True, "5", None, float("inf"), float("nan")])
def test_anything_else_is_not(value):
    assert as_integer(value) is None


def test_a_timeout_written_as_a_float_is_taken_as_the_integer():
    target = {"type": "http", "url": "http://127.0.0.1:9/", "timeout_ms": 262145.0}
    assert _valid("Target", target)
    spec = parse_target(target)
    assert spec.wire["timeout_ms"] == 262145
    assert type(spec.wire["timeout_ms"]) is int
    with pytest.raises(BadRequestError):  # a fraction is no integer, for both
        parse_target({**target, "timeout_ms": 262145.5})
    assert not _valid("Target", {**target, "timeout_ms": 262145.5})


async def test_a_write_with_integral_floats_is_taken_and_logged_as_integers(client, producer):
    lifecycle = {"delay_ms": 1000.0, "jitter_ms": 0.0, "original_write_time": 1.0}
    body = {"payload": 1, "lifecycle": lifecycle}
    assert _valid("WriteToLogRequest", body)
    response = await client.post(URL, json=body)
    assert response.status == 200, await response.text()
    logged = decode_envelope(producer.sent[0].value).lifecycle
    assert logged.original_write_time_ms == 1
    assert type(logged.original_write_time_ms) is int
    assert logged.delay_ms == 1000
    response = await client.post(URL, json={"payload": 1, "lifecycle": {"jitter_ms": 1.5}})
    assert response.status == 400
    assert (await response.json())["field"] == "lifecycle.jitter_ms"


def test_a_replay_window_and_a_selection_take_integral_floats():
    request = parse_replay_request({"from": 5.0, "to": 1.7e12}, NOW)
    assert (request.from_ms, request.to_ms) == (5, 1_700_000_000_000)
    # 2**64 reaches the server as the float 1.8446744073709552e+19 (orjson): an integer
    assert _valid("RedriveRequest", {"since": 2**64})
    assert parse_selection({"since": 1.8446744073709552e19}, NOW).since_ms == 2**64
    with pytest.raises(BadRequestError) as refused:
        parse_selection({"since": 5.5}, NOW)
    assert refused.value.field == "since"


# --- date-times ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-01-01t00:00:00z", 1_767_225_600_000),
        ("2026-01-01T00:00:00z", 1_767_225_600_000),
        ("2026-01-01t00:00:00+01:00", 1_767_222_000_000),
        # a leap second is read as the second before it (POSIX time has none)
        ("2016-12-31T23:59:60Z", 1_483_228_799_000),
        ("2016-12-31T23:59:60.250z", 1_483_228_799_250),
    ],
)
def test_rfc3339_date_times_are_taken(text, ms):
    assert parse_time_ms(text, NOW) == ms
    assert _valid("ReplayRequest", {"from": text, "to": NOW})
    assert parse_replay_request({"from": text, "to": NOW}, NOW).from_ms == ms
    assert parse_selection({"since": text}, NOW).since_ms == ms


@pytest.mark.parametrize("text", ["2016-12-31T23:59:600Z", "2016-12-31T23:60:00Z"])
def test_other_sixties_are_still_refused(text):
    with pytest.raises(ValueError, match="expected ms since the epoch"):
        parse_time_ms(text, NOW)


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00Z",  # before the epoch
        "1969-12-31T23:59:59Z",
        str(MAX_TIME_MS + 1),  # a digit string past year 9999
        "99999999999999999999",
        MAX_TIME_MS + 1,
    ],
)
def test_a_window_time_the_server_refuses_is_invalid_in_the_document(value):
    body = {"from": value, "to": MAX_TIME_MS}
    assert not _valid("ReplayRequest", body)
    with pytest.raises(BadRequestError) as refused:
        parse_replay_request(body, NOW)
    assert refused.value.field == "from"


@pytest.mark.parametrize(
    "value", ["1970-01-01T00:00:01Z", "9999-12-31T00:00:00Z", str(MAX_TIME_MS), "000123", "-5d"]
)
def test_a_window_time_the_document_allows_is_taken(value):
    assert _valid("ReplayRequest", {"from": 0, "to": value})
    parse_replay_request({"from": 0, "to": value}, NOW)


def test_the_window_order_is_documented_and_named():
    """The one rule no schema can say (JSON Schema compares no two fields): to after from."""
    assert (
        "after from"
        in DOCUMENT["components"]["schemas"]["ReplayRequest"]["properties"]["to"]["description"]
    )
    with pytest.raises(BadRequestError) as refused:
        parse_replay_request({"from": 5, "to": 5}, NOW)
    assert str(refused.value) == "to: must be after from"


# --- the deprecated redrive id ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [{"id": None}, {"id": 5}, {"id": {}}, {"id": [""]}, {"ids": ["a"], "id": 5}]
)
def test_a_bad_id_is_invalid_for_both(body):
    assert not _valid("RedriveRequest", body)
    with pytest.raises(BadRequestError) as refused:
        parse_selection(body, NOW)
    assert refused.value.field == "id"


@pytest.mark.parametrize(
    ("body", "ids"),
    [({"id": "a,b"}, {"a", "b"}), ({"id": ["a"]}, {"a"}), ({"ids": ["b"], "id": ["a"]}, {"b"})],
)
def test_a_good_id_is_valid_for_both(body, ids):
    assert _valid("RedriveRequest", body)
    assert parse_selection(body, NOW).ids == ids
