"""Review of issue 18's pure commit decisions (engineer R): defects proven deterministically.

Each test is a strict xfail until its owner fixes the defect named in its reason."""

from __future__ import annotations

from walstream.core.mutations import (
    Apply,
    CommitPolicy,
    DeadLetter,
    Marker,
    MutateItems,
    MutationLimits,
    OpChunk,
    Operation,
    Stored,
    decode_op_chunk,
    encode_op_chunk,
    items_records,
    on_chunk,
    on_marker,
    op_chunks,
    value_digest,
)

NS = "pds"
TXN = "t1"
POLICY = CommitPolicy(limits=MutationLimits(completion_timeout_ms=60_000))


def _redriven(entry: Marker) -> Marker:
    """What ``walstream dlq redrive`` sends for a transaction's entry (core.dlq.mutations.
    redrive_marker): redrive + 1, as a client's (wake 0), a count of 0 included."""
    return entry._replace(redrive=entry.redrive + 1, wake=0)


def test_a_marker_after_a_no_marker_dead_letter_is_kept_so_a_redrive_commits():
    now = 1_000_000
    state = None
    for seq in (0, 1):
        op = Operation(op="put", table="items", id=f"k{seq}", value=b"v")
        (chunk,) = op_chunks(NS, TXN, seq, op, 1024)
        state, _, _ = on_chunk(state, None, chunk, POLICY, now_ms=now)
    assert state is not None
    # the deadline wake (id 1, count 0) at the completion timeout: no marker came
    deadline = Marker(NS, TXN, 0, now, wake=1)
    state, decision = on_marker(state, None, deadline, POLICY, now_ms=now + 60_000, rand=0.5)
    assert isinstance(decision, DeadLetter)
    assert state is not None
    # the DLQ entry as MutationOut.dead_txn writes it (count 0: the state had none)
    entry = Marker(NS, TXN, state.count or 0, state.opened_at_ms, redrive=state.redrive)
    # the client's marker arrives late (answered durable TRUE by the API)
    late = Marker(NS, TXN, 2, now + 61_000)
    state, _ = on_marker(state, None, late, POLICY, now_ms=now + 61_000, rand=0.5)
    assert state is not None
    # the operator redrives the entry, as the docs say
    state, decision = on_marker(
        state, None, _redriven(entry), POLICY, now_ms=now + 62_000, rand=0.5
    )
    assert decision == Apply(from_seq=0), decision


def test_a_crafted_operation_cannot_store_more_than_the_transaction_limit():
    limits = MutationLimits(txn_bytes_max=4_096, chunk_bytes=1_024)
    size, count = 1_000, 100
    state = None
    stored = 0
    for i in range(count):
        crafted = OpChunk(
            namespace=NS, txn_id=TXN, seq=0, op="put", table="items", id="k",
            original_write_time_ms=None, size=size, digest=value_digest(b"x" * size),
            chunks=count, chunk=i, data=b"x" * size,
        )  # fmt: skip
        chunk = decode_op_chunk(encode_op_chunk(crafted))  # the worker re-checks it: accepted
        state, outcome, _ = on_chunk(
            state, None, chunk, CommitPolicy(limits=limits), now_ms=1_000_000
        )
        if isinstance(outcome, Stored):
            stored += len(chunk.data)
    assert stored <= limits.txn_bytes_max, (
        f"{stored} bytes stored under a {limits.txn_bytes_max} limit"
    )


def test_a_mutate_items_commits_only_the_operation_set_its_marker_names():
    now = 1_000_000

    def items(values: list[bytes]) -> MutateItems:
        ops = tuple(
            Operation(op="put", table="items", id=f"k{i}", value=v) for i, v in enumerate(values)
        )
        return MutateItems(txn_id=TXN, operations=ops)

    first, _ = items_records(NS, items([b"a0", b"a1", b"a2"]), 1024, at_ms=now)
    second, marker = items_records(NS, items([b"b0", b"b1", b"b2"]), 1024, at_ms=now + 5)
    state = None
    for chunk in first[:2]:  # the first request: two of its three records landed (FALSE)
        state, _, _ = on_chunk(state, None, chunk, POLICY, now_ms=now)
    for chunk in second:  # the retry with other values: seqs 0 and 1 conflict, seq 2 is kept
        state, _, _ = on_chunk(state, None, chunk, POLICY, now_ms=now + 5)
    assert state is not None
    state, decision = on_marker(state, None, marker, POLICY, now_ms=now + 6, rand=0.5)
    assert state is not None
    applied_set = state.set_digest() if state.complete() else None
    assert not isinstance(decision, Apply) or applied_set == marker.digest, (
        "applies an operation set its marker does not name"
    )
