"""Mutation requests at the API's edge: every refusal names its field; limits give a 413."""

from __future__ import annotations

import base64

import orjson
import pytest

from walstream.core.mutations import (
    MutationLimits,
    Operation,
    parse_count,
    parse_mutate_items,
    parse_operation,
    parse_seq,
    parse_txn_id,
)
from walstream.core.validate import exact_body
from walstream.errors import BadRequestError, PayloadTooLargeError

NOW = 1_700_000_000_000
LIMITS = MutationLimits()


def refused(call, *args, **kwargs) -> BadRequestError:
    with pytest.raises(BadRequestError) as caught:
        call(*args, **kwargs)
    return caught.value


def put(**extra):
    return {"op": "put", "table": "profiles", "id": "u1", "value": {"a": 1}, **extra}


@pytest.mark.parametrize("txn_id", ["a", "A" * 128, "order-1.retry_2", "0"])
def test_a_txn_id_of_the_strict_set_is_taken(txn_id):
    assert parse_txn_id(txn_id) == txn_id


@pytest.mark.parametrize(
    "txn_id", ["", "x" * 129, "a:b", "a/b", "a b", "-a", ".a", "_a", "é", "a|b", 5, None]
)
def test_any_other_txn_id_is_refused_naming_the_field(txn_id):
    assert refused(parse_txn_id, txn_id).field == "txn_id"


@pytest.mark.parametrize(("value", "seq"), [(0, 0), ("0", 0), ("999", 999), (7.0, 7), ("007", 7)])
def test_seq_is_0_based_from_a_path_or_a_body(value, seq):
    assert parse_seq(value, LIMITS) == seq


@pytest.mark.parametrize("value", [-1, "-1", "1.5", 1.5, True, None, "", "x", "9" * 10, "\u0661"])
def test_a_seq_that_is_no_index_is_refused(value):
    error = refused(parse_seq, value, LIMITS)
    assert (error.field, error.status) == ("seq", 400)


def test_a_seq_past_the_operations_limit_is_413():
    error = refused(parse_seq, 1_000, LIMITS)
    assert isinstance(error, PayloadTooLargeError)
    assert error.field == "seq"


def test_a_marker_body_carries_its_count():
    assert parse_count({"count": 1_000}, LIMITS) == 1_000
    assert parse_count({"count": 3.0}, LIMITS) == 3


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ([], "body", 400),
        ({"count": 1, "seq": 2}, "seq", 400),
        ({}, "count", 400),
        ({"count": 0}, "count", 400),
        ({"count": "3"}, "count", 400),
        ({"count": 1_001}, "count", 413),
    ],
)
def test_a_bad_marker_body_is_refused_naming_the_field(body, field, status):
    error = refused(parse_count, body, LIMITS)
    assert (error.field, error.status) == (field, status)


def test_a_json_value_is_stored_as_its_json_bytes_a_base64_one_as_its_bytes():
    assert parse_operation(put(), LIMITS, now_ms=NOW).value == b'{"a":1}'
    raw = base64.b64encode(b"\x00\xff").decode()
    op = parse_operation(put(value=raw, value_encoding="base64"), LIMITS, now_ms=NOW)
    assert op == Operation(op="put", table="profiles", id="u1", value=b"\x00\xff")


def test_a_delete_has_no_value_and_keeps_its_write_time():
    body = {"op": "delete", "table": "t", "id": "k", "original_write_time": float(NOW)}
    op = parse_operation(body, LIMITS, now_ms=NOW)
    assert op == Operation(op="delete", table="t", id="k", value=None, original_write_time_ms=NOW)
    assert op.weight == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("x", "body"),
        ({"table": "t", "id": "k"}, "op"),
        (put(ttl=5), "ttl"),
        ({"op": "delete", "table": "t", "id": "k", "value": 1}, "value"),
        (put(table="a-b"), "table"),
        (put(table="x" * 64), "table"),
        (put(table=None), "table"),
        (put(id=""), "id"),
        (put(id="k" * 1025), "id"),
        (put(id=5), "id"),
        ({"op": "put", "table": "t", "id": "k"}, "value"),
        (put(value_encoding="hex"), "value_encoding"),
        (put(value=5, value_encoding="base64"), "value"),
        (put(value="!!", value_encoding="base64"), "value"),
        (put(value="é", value_encoding="base64"), "value"),
        (put(original_write_time=0), "original_write_time"),
        (put(original_write_time=NOW + 3_600_001), "original_write_time"),
        (put(original_write_time="now"), "original_write_time"),
        (put(original_write_time=1.5), "original_write_time"),
    ],
)
def test_a_bad_operation_is_refused_naming_the_field(body, field):
    assert refused(parse_operation, body, LIMITS, now_ms=NOW).field == field


def test_fields_are_named_inside_a_mutate_items():
    body = {"txn_id": "t", "operations": [put(), put(table="a b")]}
    assert refused(parse_mutate_items, body, LIMITS, now_ms=NOW).field == "operations[1].table"
    body = {"txn_id": "t", "operations": [put(), 5]}
    assert refused(parse_mutate_items, body, LIMITS, now_ms=NOW).field == "operations[1]"


def test_a_value_too_deep_for_json_is_refused():
    deep: list = []
    for _ in range(300):
        deep = [deep]
    assert refused(parse_operation, put(value=deep), LIMITS, now_ms=NOW).field == "value"


def test_a_number_the_log_would_change_is_refused_naming_the_value():
    raw = (
        b'{"txn_id": "t", "operations": '
        b'[{"op": "put", "table": "t", "id": "k", "value": 1.00000000000000000001}]}'
    )
    error = refused(
        parse_mutate_items, orjson.loads(raw), LIMITS, now_ms=NOW, exact=exact_body(raw)
    )
    assert error.field == "operations[0].value"
    assert "1.00000000000000000001" in error.reason


def test_a_mutate_items_is_its_operations_in_seq_order():
    body = {"txn_id": "t-9", "operations": [put(id=str(i)) for i in range(1_000)]}
    items = parse_mutate_items(body, LIMITS, now_ms=NOW)
    assert items.txn_id == "t-9"
    assert [op.id for op in items.operations] == [str(i) for i in range(1_000)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"txn_id": "t", "operations": [], "extra": 1}, "extra"),
        ({"operations": [put()]}, "txn_id"),
        ({"txn_id": "t", "operations": []}, "operations"),
        ({"txn_id": "t", "operations": {}}, "operations"),
    ],
)
def test_a_malformed_mutate_items_is_refused_naming_the_field(body, field):
    assert refused(parse_mutate_items, body, LIMITS, now_ms=NOW).field == field


def test_one_operation_past_the_limit_is_413():
    body = {"txn_id": "t", "operations": [put(id=str(i)) for i in range(1_001)]}
    error = refused(parse_mutate_items, body, LIMITS, now_ms=NOW)
    assert (error.field, error.status) == ("operations", 413)


def test_a_transaction_past_its_bytes_is_413_naming_where():
    limits = MutationLimits(txn_bytes_max=100)
    value = base64.b64encode(b"x" * 40).decode()
    op = put(value=value, value_encoding="base64", id="k", table="t")  # 42 bytes each
    body = {"txn_id": "t", "operations": [op, op, op]}
    error = refused(parse_mutate_items, body, limits, now_ms=NOW)
    assert (error.field, error.status) == ("operations", 413)
    assert "operations[2]" in error.reason
    big = put(value=base64.b64encode(b"x" * 99).decode(), value_encoding="base64", table="t")
    error = refused(parse_operation, big, limits, now_ms=NOW)
    assert (error.field, error.status) == ("value", 413)
