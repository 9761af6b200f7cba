"""Mutation records on the log: encoded and decoded back whole; anything else is poison."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.core.mutations import (
    CHUNK_BYTES_CAP,
    IDEMPOTENCY_WINDOW_MIN_MS,
    OPERATIONS_CAP,
    Forget,
    Marker,
    MutationLimits,
    OpChunk,
    decode_marker,
    decode_op_chunk,
    encode_marker,
    encode_op_chunk,
    value_digest,
)
from walstream.errors import ConfigError, PoisonRecordError

txn_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
tables = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


@st.composite
def op_chunks(draw):
    op = draw(st.sampled_from(["put", "delete"]))
    data = draw(st.binary(max_size=64)) if op == "put" else b""
    chunks = draw(st.integers(1, 4)) if op == "put" else 1
    return OpChunk(
        namespace=draw(st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")),
        txn_id=draw(txn_ids),
        seq=draw(st.integers(0, OPERATIONS_CAP - 1)),
        op=op,
        table=draw(tables),
        id=draw(
            st.text(
                st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40
            )
        ),
        original_write_time_ms=draw(st.none() | st.integers(1, 2**53)),
        size=len(data) + draw(st.integers(0, 100)) if op == "put" else 0,
        digest=value_digest(data),
        chunks=chunks,
        chunk=draw(st.integers(0, chunks - 1)),
        data=data,
    )


@given(op_chunks())
def test_an_operation_chunk_decodes_to_what_was_encoded(chunk):
    assert decode_op_chunk(encode_op_chunk(chunk)) == chunk


@given(
    st.builds(
        Marker,
        namespace=st.just("pds"),
        txn_id=txn_ids,
        op_count=st.integers(1, OPERATIONS_CAP),
        at_ms=st.integers(1, 2**53),
        digest=st.none() | st.just("0" * 32),
        wake=st.integers(0, 1000),
        redrive=st.integers(0, 5),
    )
    | st.builds(
        Forget, namespace=st.just("pds"), txn_id=txn_ids, committed_at_ms=st.integers(1, 2**53)
    )
)
def test_a_marker_or_forget_record_decodes_to_what_was_encoded(record):
    assert decode_marker(encode_marker(record)) == record


def test_a_deadline_wake_may_carry_no_count_a_client_marker_must():
    wake = Marker(namespace="pds", txn_id="t", op_count=0, at_ms=5, wake=1)
    assert decode_marker(encode_marker(wake)) == wake
    with pytest.raises(PoisonRecordError, match="'count'"):
        decode_marker(encode_marker(wake._replace(wake=0)))


def test_a_redrive_of_a_transaction_that_never_got_its_marker_carries_no_count_as_a_clients():
    # its own form (wake 0, redrive >= 1), not a wake's: a wake of no state is ignored
    redrive = Marker(namespace="pds", txn_id="t", op_count=0, at_ms=5, redrive=1)
    assert decode_marker(encode_marker(redrive)) == redrive
    woken = redrive._replace(wake=2)
    assert decode_marker(encode_marker(woken)) == woken


GOOD = orjson.loads(
    encode_op_chunk(
        OpChunk(
            namespace="pds",
            txn_id="t-1",
            seq=3,
            op="put",
            table="profiles",
            id="k",
            original_write_time_ms=None,
            size=3,
            digest=value_digest(b"abc"),
            chunks=1,
            chunk=0,
            data=b"abc",
        )
    )
)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 2}, "version"),
        ({"kind": "marker"}, "not op"),
        ({"ns": "Bad.Name"}, "'ns'"),
        ({"txn": "a:b"}, "'txn'"),
        ({"txn": "x" * 129}, "'txn'"),
        ({"txn": 5}, "'txn'"),
        ({"op": "upsert"}, "op"),
        ({"table": 'x"; DROP TABLE y; --'}, "'table'"),
        ({"id": ""}, "'id'"),
        ({"id": "k" * 1025}, "'id'"),
        ({"seq": -1}, "'seq'"),
        ({"seq": OPERATIONS_CAP}, "'seq'"),
        ({"seq": True}, "'seq'"),
        ({"seq": "3"}, "'seq'"),
        ({"chunks": 0}, "'chunks'"),
        ({"chunk": 1}, "'chunk'"),
        ({"owt": 0}, "'owt'"),
        ({"digest": "XYZ"}, "'digest'"),
        ({"data": "***"}, "base64"),
        ({"data": "é"}, "base64"),
        ({"data": None}, "'data'"),
        ({"size": 2}, "longer"),
        ({"op": "delete"}, "a delete carries no value"),
    ],
)
def test_an_operation_record_out_of_bounds_is_poison(change, reason):
    with pytest.raises(PoisonRecordError, match=reason):
        decode_op_chunk(orjson.dumps({**GOOD, **change}))


def test_a_chunk_longer_than_any_chunk_is_poison():
    data = b"x" * (CHUNK_BYTES_CAP + 1)
    obj = {**GOOD, "size": len(data), "data": base64.b64encode(data).decode()}
    with pytest.raises(PoisonRecordError, match="longer"):
        decode_op_chunk(orjson.dumps(obj))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"{", "undecodable"),
        (b"[1]", "not a JSON object"),
        (b'{"v": 1, "ns": "pds", "txn": "t", "kind": "nope"}', "not marker or forget"),
        (b'{"v": 1, "ns": "pds", "txn": "t", "kind": "forget"}', "'committed_at_ms'"),
        (b'{"v": 1, "ns": "pds", "txn": "t", "kind": "marker", "count": 1}', "'at_ms'"),
        (
            b'{"v": 1, "ns": "pds", "txn": "t", "kind": "marker", "count": 1, "at_ms": 1, '
            b'"digest": "no"}',
            "'digest'",
        ),
        (
            b'{"v": 1, "ns": "pds", "txn": "t", "kind": "marker", "count": 10001, "at_ms": 1}',
            "'count'",
        ),
    ],
)
def test_a_marker_record_out_of_bounds_is_poison(raw, reason):
    with pytest.raises(PoisonRecordError, match=reason):
        decode_marker(raw)


def test_the_default_limits_beat_the_anchors():
    limits = MutationLimits()
    assert limits.operations_max >= 1_000  # DynamoDB: 100 actions
    assert limits.txn_bytes_max >= 16 * 1024 * 1024  # DynamoDB: 4 MB; Cassandra: 50 KB
    assert limits.idempotency_window_ms >= 24 * 3_600_000  # DynamoDB: 10 minutes


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"operations_max": 0}, "mutations.operations_max"),
        ({"operations_max": OPERATIONS_CAP + 1}, "mutations.operations_max"),
        ({"txn_bytes_max": 0}, "mutations.txn_bytes_max"),
        ({"chunk_bytes": CHUNK_BYTES_CAP + 1}, "mutations.chunk_bytes"),
        ({"chunk_bytes": 1}, "mutations.chunk_bytes"),  # 16 MiB in 16M chunks
        ({"completion_timeout_ms": 0}, "mutations.completion_timeout_ms"),
        (
            {"idempotency_window_ms": IDEMPOTENCY_WINDOW_MIN_MS - 1},
            "mutations.idempotency_window_ms",
        ),
    ],
)
def test_limits_outside_what_walstream_holds_are_a_config_error(kwargs, key):
    with pytest.raises(ConfigError) as caught:
        MutationLimits(**kwargs)
    assert caught.value.key == key
