"""Large values in chunks: split in order, reassembled only whole and unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.core.mutations import (
    MutateItems,
    MutationLimits,
    Operation,
    TxnState,
    decode_op_chunk,
    encode_op_chunk,
    items_records,
    op_chunks,
    reassemble,
    split_value,
)
from walstream.errors import PoisonRecordError

operations = st.builds(
    Operation,
    op=st.just("put"),
    table=st.just("t"),
    id=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8),
    value=st.binary(max_size=300),
    original_write_time_ms=st.none() | st.integers(1, 2**40),
) | st.builds(Operation, op=st.just("delete"), table=st.just("t"), id=st.just("k"), value=st.none())


@given(operations, st.integers(1, 64))
def test_an_operation_survives_its_chunks_and_the_log(op, chunk_bytes):
    chunks = op_chunks("pds", "t1", 4, op, chunk_bytes)
    assert all(c.chunks == len(chunks) for c in chunks)
    assert all(len(c.data) <= chunk_bytes for c in chunks)
    assert reassemble([decode_op_chunk(encode_op_chunk(c)) for c in chunks]) == op


def test_a_5_mb_value_goes_in_default_chunks_and_comes_back_intact():
    value = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    op = Operation(op="put", table="t", id="big", value=value)
    chunks = op_chunks("pds", "t1", 0, op, MutationLimits().chunk_bytes)
    assert len(chunks) == 20
    assert reassemble(chunks).value == value


def test_an_empty_value_is_one_empty_chunk():
    assert split_value(b"", 8) == [b""]
    assert split_value(b"abcdefghi", 4) == [b"abcd", b"efgh", b"i"]
    with pytest.raises(ValueError, match="chunk_bytes"):
        split_value(b"x", 0)


def _chunks():
    return op_chunks("pds", "t1", 2, Operation(op="put", table="t", id="k", value=b"abcdefgh"), 3)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda c: [], "no chunks"),
        (lambda c: [c[1], c[0], c[2]], "found at place 0"),
        (lambda c: [c[0], c[0], c[2]], "found at place 1"),
        (lambda c: c[:2], "2 chunks of 3"),
        (lambda c: [c[0], c[1]._replace(seq=3), c[2]], "found at place 1"),
        (lambda c: [c[0], c[1]._replace(id="other"), c[2]], "another operation"),
        (lambda c: [c[0], c[1]._replace(data=b"XYZ"), c[2]], "not the one announced"),
        (lambda c: [c[0], c[1]._replace(data=b"de"), c[2]], "not the one announced"),
    ],
)
def test_a_lost_repeated_reordered_foreign_or_changed_chunk_is_found(mangle, reason):
    with pytest.raises(PoisonRecordError, match=reason):
        reassemble(mangle(_chunks()))


@given(st.lists(operations, min_size=1, max_size=6), st.integers(1, 64))
def test_a_mutate_items_marker_names_the_set_its_state_will_hold(ops, chunk_bytes):
    items = MutateItems(txn_id="tx", operations=tuple(ops))
    records, marker = items_records("pds", items, chunk_bytes, at_ms=5)
    assert [c.seq for c in records] == sorted(c.seq for c in records)
    limits = MutationLimits(txn_bytes_max=10_000, chunk_bytes=64)
    state = TxnState.open("pds", "tx", 1)
    for c in reversed(records):
        state, _ = state.receive(c, limits)
    state, _ = state.mark(marker)
    assert state.complete()
    assert marker.digest == state.set_digest()
    assert (marker.op_count, marker.at_ms, marker.wake) == (len(ops), 5, 0)
    other = MutateItems(txn_id="tx", operations=(*ops, ops[0]))
    assert items_records("pds", other, chunk_bytes, at_ms=5)[1].digest != marker.digest
