"""Applying operations through the kv target's own last-write-wins rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.core.lww import Outcome, Version, should_apply
from walstream.core.mutations import (
    Marker,
    Operation,
    TxnState,
    kv_envelope,
    kv_target,
    op_token,
    op_version,
)
from walstream.core.targets import parse_target
from walstream.targets.kv import upsert_params

NOW = 1_700_000_000_000


def marked(at_ms=NOW - 5):
    state, _ = TxnState.open("pds", "tx-1", 1).mark(
        Marker(namespace="pds", txn_id="tx-1", op_count=20, at_ms=at_ms)
    )
    return state


def test_a_token_is_derived_from_namespace_txn_and_seq():
    assert op_token("pds", "tx-1", 7) == "mut:pds:tx-1:00000007"
    assert op_token("pds", "tx-1", 7) != op_token("other", "tx-1", 7)
    assert len(op_token("n" * 63, "t" * 128, 9_999)) <= 256  # the API's token bound


@given(st.integers(0, 9_999), st.integers(0, 9_999))
def test_tokens_of_one_transaction_sort_in_seq_order(a, b):
    assert (op_token("pds", "t", a) < op_token("pds", "t", b)) == (a < b)


def test_an_operation_carries_its_own_write_time_or_the_transactions():
    state = marked()
    own = Operation(op="put", table="t", id="k", value=b"v", original_write_time_ms=42)
    assert op_version(state, 3, own) == Version(42, "mut:pds:tx-1:00000003")
    plain = Operation(op="delete", table="t", id="k", value=None)
    assert op_version(state, 3, plain) == Version(NOW - 5, "mut:pds:tx-1:00000003")
    with pytest.raises(ValueError, match="no marker"):
        op_version(TxnState.open("pds", "tx-1", 1), 0, plain)


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=30), st.data())
def test_applying_in_seq_order_with_replays_ends_as_the_sequence_says(keys, data):
    """Whatever prefix a resume applies again (progress lost in a crash), the rows end as
    applying each operation once in seq order: the kv target's own rule (core.lww) decides."""
    state = marked()
    operations = [
        Operation(op="put", table="t", id=k, value=str(i).encode()) for i, k in enumerate(keys)
    ]
    rows: dict[str, tuple[Version, bytes]] = {}
    seq = 0
    while seq < len(operations):
        version = op_version(state, seq, operations[seq])
        stored = rows.get(operations[seq].id)
        if should_apply(stored[0] if stored else None, version) is Outcome.APPLY:
            rows[operations[seq].id] = (version, operations[seq].value or b"")
        lost = data.draw(st.integers(0, 2))  # a crash loses up to 2 steps of progress
        seq = max(0, seq + 1 - lost) if data.draw(st.booleans()) else seq + 1
    expected = {op.id: op.value for op in operations}
    assert {k: v for k, (_, v) in rows.items()} == expected


def test_a_later_transaction_wins_over_an_earlier_one_on_a_key():
    early, late = marked(NOW - 10), marked(NOW - 5)
    op = Operation(op="put", table="t", id="k", value=b"v")
    assert op_version(late, 0, op) > op_version(early, 9, op)


def test_the_kv_target_takes_the_record_as_it_takes_a_logged_write():
    state = marked()
    put = Operation(op="put", table="profiles", id="u1", value=b"\x00raw")
    env = kv_envelope(state, 2, put, now_ms=NOW)
    assert parse_target(kv_target(put)).wire == kv_target(put)  # the API's own target rule
    assert upsert_params(env, NOW) == ("u1", b"\x00raw", 0, NOW - 5, "mut:pds:tx-1:00000002")
    delete = Operation(op="delete", table="profiles", id="u1", value=None)
    env = kv_envelope(state, 3, delete, now_ms=NOW)
    assert upsert_params(env, NOW) == ("u1", None, 1, NOW - 5, "mut:pds:tx-1:00000003")
    assert env.target == {"type": "kv", "table": "profiles", "key": "u1", "op": "delete"}


def test_the_longest_id_the_api_takes_the_kv_target_takes():
    op = Operation(op="put", table="t", id="k" * 1024, value=b"v")
    assert upsert_params(kv_envelope(marked(), 0, op, now_ms=NOW), NOW)[0] == "k" * 1024
