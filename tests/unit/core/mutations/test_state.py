"""A transaction's state: idempotent re-sends, conflicts refused, progress forward and in order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.core.mutations import (
    OPERATIONS_CAP,
    Conflict,
    Duplicate,
    Marker,
    MutationLimits,
    Operation,
    Refused,
    Slot,
    Stored,
    TxnState,
    chunk_key,
    chunk_keys,
    decode_state,
    encode_state,
    op_chunks,
    state_key,
    tombstone_key,
)
from walstream.errors import PoisonRecordError

LIMITS = MutationLimits(txn_bytes_max=4096, chunk_bytes=4)


def ops(n, size=6):
    return [Operation(op="put", table="t", id=f"k{i}", value=bytes([i]) * size) for i in range(n)]


def records(operations, chunk_bytes=4):
    return [
        c for seq, op in enumerate(operations) for c in op_chunks("pds", "tx", seq, op, chunk_bytes)
    ]


def marker(count, **kw):
    return Marker(namespace="pds", txn_id="tx", op_count=count, at_ms=100, **kw)


def take(state, chunks, limits=LIMITS):
    outcomes = []
    for c in chunks:
        state, outcome = state.receive(c, limits)
        outcomes.append(outcome)
    return state, outcomes


@given(st.integers(1, 8), st.randoms(use_true_random=False), st.integers(0, 10))
def test_any_arrival_order_with_re_sends_makes_the_same_complete_state(n, rnd, resends):
    chunks = records(ops(n))
    shuffled = chunks + [rnd.choice(chunks) for _ in range(resends)]
    rnd.shuffle(shuffled)
    state, outcomes = take(TxnState.open("pds", "tx", 1), shuffled)
    in_order, _ = take(TxnState.open("pds", "tx", 1), chunks)
    assert state == in_order
    assert sum(isinstance(o, Stored) for o in outcomes) == len(chunks)
    assert all(isinstance(o, Stored | Duplicate) for o in outcomes)
    state, _ = state.mark(marker(n))
    assert state.complete()
    assert state.missing() == ()
    assert decode_state(encode_state(state)) == state


def test_missing_names_absent_and_partly_arrived_operations():
    chunks = records(ops(4))  # two chunks each
    state, _ = take(
        TxnState.open("pds", "tx", 1),
        [c for c in chunks if (c.seq, c.chunk) not in {(1, 0), (3, 0), (3, 1)}],
    )
    assert state.missing() == (1,)  # before the marker: gaps below the highest seq seen
    state, _ = state.mark(marker(5))
    assert state.missing() == (1, 3, 4)
    assert not state.complete()
    assert state.next_to_apply() is None


def test_a_different_operation_for_a_seq_is_a_conflict_never_an_overwrite():
    state, _ = take(TxnState.open("pds", "tx", 1), records(ops(2)))
    other = op_chunks("pds", "tx", 1, Operation(op="delete", table="t", id="k1", value=None), 4)[0]
    new, outcome = state.receive(other, LIMITS)
    assert isinstance(outcome, Conflict)
    assert outcome.seq == 1
    assert new is state


def test_past_the_limits_a_chunk_is_refused_and_nothing_changes():
    state = TxnState.open("pds", "tx", 1)
    limits = MutationLimits(operations_max=2, txn_bytes_max=20, chunk_bytes=1)
    state, outcomes = take(state, records(ops(2, size=6)), limits)  # 6 + 2 + 1 = 9 bytes each
    assert all(isinstance(o, Stored) for o in outcomes)
    assert state.bytes == 18
    big = op_chunks("pds", "tx", 1, Operation(op="put", table="t", id="x", value=b"12"), 4)[0]
    new, outcome = state.receive(big._replace(seq=0, id="y"), limits)
    assert isinstance(outcome, Conflict)
    new, outcome = state.receive(big._replace(seq=2), limits)
    assert isinstance(outcome, Refused)
    assert "past the limit of 2" in outcome.reason
    fresh, _ = take(TxnState.open("pds", "tx", 1), records(ops(1, size=6)), limits)
    new, outcome = fresh.receive(big._replace(seq=1, size=12, data=b"1"), limits)
    assert isinstance(outcome, Refused)
    assert "over the limit of 20" in outcome.reason
    assert new is fresh


def test_a_seq_past_the_markers_count_is_refused_and_a_marker_below_a_seq_is_a_conflict():
    state, _ = take(TxnState.open("pds", "tx", 1), records(ops(3)))
    _, outcome = state.mark(marker(2))
    assert isinstance(outcome, Conflict)
    assert outcome.seq == 2
    state, _ = take(TxnState.open("pds", "tx", 1), records(ops(1)))
    state, outcome = state.mark(marker(1))
    assert isinstance(outcome, Stored)
    _, outcome = state.receive(records(ops(2))[-1], LIMITS)
    assert isinstance(outcome, Refused)
    assert "count 1" in outcome.reason


def test_later_markers_must_agree_with_the_first():
    state, _ = TxnState.open("pds", "tx", 1).mark(marker(3, digest="a" * 32))
    assert state.count == 3
    assert isinstance(state.mark(marker(3))[1], Duplicate)
    assert isinstance(state.mark(marker(3, digest="a" * 32))[1], Duplicate)
    assert isinstance(state.mark(marker(0, wake=1))[1], Duplicate)
    assert isinstance(state.mark(marker(4))[1], Conflict)
    assert isinstance(state.mark(marker(3, digest="b" * 32))[1], Conflict)
    assert state.marked_at_ms == 100


def test_progress_moves_forward_one_seq_at_a_time_and_only_when_complete():
    state, _ = take(TxnState.open("pds", "tx", 1), records(ops(3)))
    with pytest.raises(ValueError, match="None is next"):
        state.applied(0)  # no marker yet
    state, _ = state.mark(marker(3))
    state = state.__class__(**{**_fields(state), "attempts": 4})
    with pytest.raises(ValueError, match="0 is next"):
        state.applied(1)
    for seq in range(3):
        assert state.next_to_apply() == seq
        state = state.applied(seq)
        assert state.attempts == 0
    assert state.done()
    assert state.next_to_apply() is None
    with pytest.raises(ValueError, match="None is next"):
        state.applied(2)


def _fields(state):
    return {name: getattr(state, name) for name in state.__dataclass_fields__}


def test_the_set_digest_names_the_operations_in_order():
    a, _ = take(TxnState.open("pds", "tx", 1), records(ops(3)))
    a, _ = a.mark(marker(3))
    swapped = records([ops(3)[1], ops(3)[0], ops(3)[2]])
    b, _ = take(TxnState.open("pds", "tx", 2), swapped)
    b, _ = b.mark(marker(3))
    assert a.set_digest() != b.set_digest()
    assert a.set_digest() == decode_state(encode_state(a)).set_digest()
    with pytest.raises(ValueError, match="not complete"):
        TxnState.open("pds", "tx", 1).set_digest()


def test_the_stored_chunk_rows_are_listed_for_deletion():
    chunks = records(ops(2))
    state, _ = take(TxnState.open("pds", "tx", 1), chunks[:3])
    assert list(chunk_keys(state)) == ["c:pds:tx:0:0", "c:pds:tx:0:1", "c:pds:tx:1:0"]


def test_a_state_with_every_field_set_survives_encoding():
    state, _ = take(TxnState.open("pds", "tx", 1), records(ops(2)))
    state, _ = state.mark(marker(2, digest="c" * 32))
    state = state.__class__(
        **{**_fields(state), "attempts": 2, "wake": 3, "wakes": 3, "redrive": 1, "dead": "why"}
    )
    assert decode_state(encode_state(state)) == state
    bare = TxnState.open("pds", "tx", 1)
    assert decode_state(encode_state(bare)) == bare


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        b'{"v": 2}',
        b'{"v": 1}',
        b'{"v": 1, "ns": "p", "txn": "t", "opened": 1, "slots": [[1]]}',
    ],
)
def test_an_unreadable_state_is_poison(raw):
    with pytest.raises(PoisonRecordError, match="mutation state"):
        decode_state(raw)


def test_the_state_record_stays_small_at_the_operations_cap():
    # the widest slots: every operation 64 chunks of a 16 MiB transaction's weight
    slot = Slot("f" * 32, 16 * 1024 * 1024, 64, (1 << 64) - 1)
    state = TxnState(
        namespace="n" * 63,
        txn_id="t" * 128,
        opened_at_ms=2**45,
        slots=dict.fromkeys(range(OPERATIONS_CAP), slot),
        bytes=2**40,
        count=OPERATIONS_CAP,
        marked_at_ms=2**45,
        marker_digest="f" * 32,
        next_seq=OPERATIONS_CAP - 1,
        attempts=99,
        wake=999,
        wakes=999,
        redrive=9,
        dead="x" * 600,
    )
    assert len(encode_state(state)) < 934_000  # under the worker's record limit, by default


def test_a_transactions_rows_are_keyed_apart_by_namespace_and_txn_id():
    keys = {
        state_key("pds", "tx"),
        tombstone_key("pds", "tx"),
        chunk_key("pds", "tx", 0, 0),
        state_key("pds2", "tx"),
        state_key("pds", "tx2"),
    }
    assert len(keys) == 5
    assert state_key("pds", "tx") == "s:pds:tx"
    assert tombstone_key("pds", "tx") == "t:pds:tx"


#: A state's table value as version 1 writes it: changing it needs a new version (a reader of
#: the changelog written before must still read it).
GOLDEN = (
    b'{"v":1,"ns":"pds","txn":"tx","opened":1,"slots":[[0,"0123456789abcdef0123456789abcdef",9,2,'
    b'"3"]],"bytes":9,"next":0,"attempts":1,"wake":2,"wakes":2,"redrive":0,"count":1,"marked":100}'
)


def test_the_state_format_is_pinned_and_new_fields_are_read_past():
    state = TxnState(
        namespace="pds",
        txn_id="tx",
        opened_at_ms=1,
        slots={0: Slot("0123456789abcdef0123456789abcdef", 9, 2, 3)},
        bytes=9,
        count=1,
        marked_at_ms=100,
        attempts=1,
        wake=2,
        wakes=2,
    )
    assert encode_state(state) == GOLDEN
    assert decode_state(GOLDEN[:-1] + b',"added_later":[1]}') == state
