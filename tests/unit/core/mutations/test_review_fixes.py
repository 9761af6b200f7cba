"""The review's defects, fixed (issue 18; the review's own tests are in test_review.py): what
else each fix promises, beyond the case the review proved."""

from __future__ import annotations

import re

import orjson
import pytest

from walstream.core.dlq.mutations import missing_seqs
from walstream.core.mutations import (
    KEY_MAX_CHARS,
    KV_KEY_PATTERN,
    OPERATIONS_CAP,
    Apply,
    CommitPolicy,
    DeadLetter,
    Duplicate,
    Ignore,
    Marker,
    MutateItems,
    MutationLimits,
    OpChunk,
    Operation,
    Refused,
    Reject,
    Slot,
    Stored,
    TxnState,
    decode_op_chunk,
    decode_state,
    encode_op_chunk,
    encode_state,
    items_records,
    kv_key_problem,
    on_chunk,
    on_marker,
    op_chunks,
    parse_mutate_items,
    parse_operation,
    txn_status,
    value_digest,
)
from walstream.errors import BadRequestError, PoisonRecordError

NS = "pds"
TXN = "t1"
T0 = 1_700_000_000_000
POLICY = CommitPolicy(limits=MutationLimits(completion_timeout_ms=60_000))


def _items(values: list[bytes]) -> MutateItems:
    ops = tuple(
        Operation(op="put", table="items", id=f"k{i}", value=v) for i, v in enumerate(values)
    )
    return MutateItems(txn_id=TXN, operations=ops)


def _chunks(state, records, now=T0):
    for record in records:
        state, _, _ = on_chunk(state, None, record, POLICY, now_ms=now)
    return state


def _marking(state, m, now=T0):
    new, decision = on_marker(state, None, m, POLICY, now_ms=now, rand=0.5)
    assert new is not None
    return new, decision


# -- a late marker of a dead-lettered transaction ---------------------------------------------


def test_a_late_marker_of_a_dead_lettered_transaction_is_kept_not_acted_on():
    records, late = items_records(NS, _items([b"a", b"b"]), 1024, at_ms=T0 + 61_000)
    state = _chunks(None, records)
    state, decision = _marking(state, Marker(NS, TXN, 0, T0, wake=1), now=T0 + 60_000)
    assert isinstance(decision, DeadLetter)
    assert missing_seqs(decision.reason) == []  # every operation came; no marker
    state, decision = _marking(state, late, now=T0 + 61_000)
    assert isinstance(decision, Ignore)  # only a redrive resumes it
    assert (state.count, state.marked_at_ms, state.marker_digest) == (2, late.at_ms, late.digest)
    assert state.dead is not None
    body = txn_status(state, None)
    assert body is not None
    assert (body["status"], body["operations"]) == ("dead_lettered", 2)
    # a late marker contradicting what arrived is still rejected alone, the state untouched
    before = _chunks(None, records)
    before, _ = _marking(before, Marker(NS, TXN, 0, T0, wake=1), now=T0 + 60_000)
    after, decision = _marking(before, Marker(NS, TXN, 1, T0 + 61_000), now=T0 + 61_000)
    assert isinstance(decision, Reject)
    assert after is before


# -- the marker's operation set ---------------------------------------------------------------


def test_a_mutate_items_whose_set_is_held_applies():
    records, marker = items_records(NS, _items([b"a", b"b"]), 1024, at_ms=T0)
    state = _chunks(None, records)
    state, decision = _marking(state, marker)
    assert decision == Apply(from_seq=0)
    assert state.set_digest() == marker.digest


def test_a_mixed_operation_set_is_dead_lettered_naming_the_mismatch_and_stays_so():
    first, _ = items_records(NS, _items([b"a0", b"a1"]), 1024, at_ms=T0)
    second, marker = items_records(NS, _items([b"b0", b"b1"]), 1024, at_ms=T0 + 5)
    state = _chunks(None, first[:1])  # the first request: seq 0 landed
    state = _chunks(state, second)  # the retry: seq 0 conflicts, seq 1 is kept
    state, decision = _marking(state, marker, now=T0 + 6)
    assert isinstance(decision, DeadLetter), decision
    assert "operation set mismatch" in decision.reason
    assert marker.digest is not None
    assert marker.digest in decision.reason
    assert state.set_digest() in decision.reason
    assert (decision.progress, decision.missing) == (0, ())
    assert missing_seqs(decision.reason) == []
    assert state.dead == decision.reason
    body = txn_status(state, None)
    assert body is not None
    assert body["status"] == "dead_lettered"
    # its redrive finds the same mismatch: dead-lettered again, never applied
    entry = Marker(NS, TXN, 2, T0 + 5, marker.digest, redrive=state.redrive)
    state, decision = _marking(state, entry._replace(redrive=1), now=T0 + 10)
    assert isinstance(decision, DeadLetter)
    assert "mismatch" in decision.reason
    assert state.redrive == 1


def test_a_marker_naming_no_set_applies_the_operations_held():
    records, marker = items_records(NS, _items([b"a", b"b"]), 1024, at_ms=T0)
    state = _chunks(None, records)
    _, decision = _marking(state, marker._replace(digest=None))  # the per-operation routes
    assert decision == Apply(from_seq=0)


def test_a_wake_checks_the_set_its_transaction_s_marker_named():
    first, _ = items_records(NS, _items([b"a0", b"a1"]), 1024, at_ms=T0)
    second, marker = items_records(NS, _items([b"b0", b"b1"]), 1024, at_ms=T0 + 5)
    state = _chunks(None, [first[0], second[1]])
    waiting = _chunks(None, [second[1]])
    waiting, decision = _marking(waiting, marker, now=T0 + 6)  # seq 0 missing: re-queued
    assert not isinstance(decision, (Apply, DeadLetter))
    # seq 0 then arrives from the first request (its write was answered FALSE, then landed)
    waiting = _chunks(waiting, [first[0]], now=T0 + 7)
    assert waiting.slots == state.slots
    wake = Marker(NS, TXN, 2, T0 + 5, wake=waiting.wake)
    _, decision = _marking(waiting, wake, now=T0 + 8)
    assert isinstance(decision, DeadLetter)
    assert "mismatch" in decision.reason


# -- the bytes a transaction's chunk rows hold -------------------------------------------------


def _crafted(chunk: int, data: bytes, *, size: int = 10, chunks: int = 4) -> OpChunk:
    return OpChunk(
        namespace=NS, txn_id=TXN, seq=0, op="put", table="items", id="k",
        original_write_time_ms=None, size=size, digest=value_digest(b"x" * size),
        chunks=chunks, chunk=chunk, data=data,
    )  # fmt: skip


def test_an_operation_s_chunks_store_at_most_its_announced_size():
    limits = MutationLimits()
    state = TxnState.open(NS, TXN, T0)
    state, outcome = state.receive(_crafted(0, b"x" * 6), limits)
    assert isinstance(outcome, Stored)
    assert state.slots[0].stored == 6
    before = state
    state, outcome = state.receive(_crafted(1, b"x" * 5), limits)  # 11 > 10
    assert isinstance(outcome, Refused)
    assert "chunk 1 brings its value's chunks to 11 bytes, over the 10" in outcome.reason
    assert state is before  # nothing kept: the chunk's row is not written
    state, outcome = state.receive(_crafted(1, b"x" * 4), limits)  # exactly its size
    assert isinstance(outcome, Stored)
    assert state.slots[0].stored == 10
    state, outcome = state.receive(_crafted(2, b"x"), limits)
    assert isinstance(outcome, Refused)
    # a re-sent chunk is a duplicate, whatever its data: nothing more is stored
    assert state.receive(_crafted(0, b"x" * 9), limits) == (state, Duplicate())


def test_the_api_s_chunks_store_their_value_whole_within_the_transaction_bytes():
    limits = MutationLimits(txn_bytes_max=4_096, chunk_bytes=100)
    op = Operation(op="put", table="items", id="k", value=b"y" * 1_000)
    state = TxnState.open(NS, TXN, T0)
    for c in op_chunks(NS, TXN, 0, op, limits.chunk_bytes):
        state, outcome = state.receive(c, limits)
        assert isinstance(outcome, Stored)
    delete = Operation(op="delete", table="items", id="k", value=None)
    state, outcome = state.receive(op_chunks(NS, TXN, 1, delete, 100)[0], limits)
    assert isinstance(outcome, Stored)
    assert [slot.stored for slot in state.slots.values()] == [1_000, 0]
    assert state.slots[0].whole
    assert sum(slot.stored for slot in state.slots.values()) <= state.bytes <= 4_096


def test_the_stored_bytes_survive_the_table_and_an_older_state_reads_as_none_stored():
    state = TxnState(
        namespace=NS, txn_id=TXN, opened_at_ms=1,
        slots={
            0: Slot("0" * 32, 9, 2, 1, 4), 1: Slot("1" * 32, 3, 1, 1), 2: Slot("2" * 32, 5, 1, 0)
        },
        bytes=17,
    )  # fmt: skip
    raw = encode_state(state)
    assert b'"stored":[[0,4]]' in raw  # seqs holding none are left out
    assert decode_state(raw) == state
    older = raw.replace(b',"stored":[[0,4]]', b"")  # a state written before the field
    assert decode_state(older).slots[0] == Slot("0" * 32, 9, 2, 1, 0)
    assert b"stored" not in encode_state(decode_state(older))
    with pytest.raises(PoisonRecordError, match="mutation state"):
        decode_state(raw.replace(b"[[0,4]]", b"[[0]]"))


def test_the_state_record_stays_small_with_every_slot_s_stored_bytes():
    # as test_state's widest case, each slot also holding its whole (16 MiB) value's bytes
    slot = Slot("f" * 32, 16 * 1024 * 1024, 64, (1 << 64) - 1, 16 * 1024 * 1024)
    state = TxnState(
        namespace="n" * 63, txn_id="t" * 128, opened_at_ms=2**45,
        slots=dict.fromkeys(range(OPERATIONS_CAP), slot), bytes=2**40, count=OPERATIONS_CAP,
        marked_at_ms=2**45, marker_digest="f" * 32, next_seq=OPERATIONS_CAP - 1, attempts=99,
        wake=999, wakes=999, redrive=9, dead="x" * 600,
    )  # fmt: skip
    assert len(encode_state(state)) < 934_000  # under the worker's record limit, by default


# -- a kv key PostgreSQL can store ------------------------------------------------------------


@pytest.mark.parametrize("key", ["\x00", "k\x00evil", "k" * 1023 + "\x00"])
def test_an_id_holding_nul_is_refused_at_the_edge_naming_the_field(key):
    body = {"op": "put", "table": "items", "id": key, "value": "v"}
    with pytest.raises(BadRequestError) as one:
        parse_operation(body, MutationLimits(), now_ms=T0)
    assert one.value.field == "id"
    assert "NUL" in str(one.value)
    items = {"txn_id": TXN, "operations": [{**body, "id": "k0"}, body]}
    with pytest.raises(BadRequestError) as many:
        parse_mutate_items(items, MutationLimits(), now_ms=T0)
    assert many.value.field == "operations[1].id"


def test_an_operation_record_whose_id_holds_nul_is_poison():
    op = Operation(op="put", table="items", id="k", value=b"v")
    (chunk,) = op_chunks(NS, TXN, 0, op, 1024)
    raw = encode_op_chunk(chunk._replace(id="k\x00evil"))  # written to the topic by hand
    with pytest.raises(PoisonRecordError, match="'id' must not hold NUL"):
        decode_op_chunk(raw)
    for bad in ("", "k" * (KEY_MAX_CHARS + 1), 5, None):
        obj = {**orjson.loads(encode_op_chunk(chunk)), "id": bad}
        with pytest.raises(PoisonRecordError, match=r"'id' must be a string of 1\.\.1024"):
            decode_op_chunk(orjson.dumps(obj))


@pytest.mark.parametrize("key", ["k", "tab\there", "line\nbreak\r", "\x01\x1f\x7f\x85", "é😀"])
def test_every_other_key_is_taken_as_the_kv_target_stores_it(key):
    assert kv_key_problem(key) is None
    op = parse_operation({"op": "delete", "table": "items", "id": key}, MutationLimits(), now_ms=T0)
    assert op.id == key
    (chunk,) = op_chunks(NS, TXN, 0, op, 1024)
    assert decode_op_chunk(encode_op_chunk(chunk)).id == key
    assert re.fullmatch(KV_KEY_PATTERN, key)  # the OpenAPI document's pattern agrees
    assert not re.fullmatch(KV_KEY_PATTERN, key + "\x00")
