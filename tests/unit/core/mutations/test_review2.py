"""Second review of issue 18's pure commit decisions (engineer R2): defects proven
deterministically.

Each test is a strict xfail until its owner fixes the defect named in its reason."""

from __future__ import annotations

from walstream.core.mutations import (
    CommitPolicy,
    Marker,
    MutationLimits,
    Operation,
    Reject,
    Tombstone,
    on_chunk,
    on_marker,
    op_chunks,
)

NS = "pds"
TXN = "t1"
POLICY = CommitPolicy(limits=MutationLimits(completion_timeout_ms=60_000))


def test_a_marker_of_another_count_than_the_committed_one_is_rejected() -> None:
    now = 1_000_000
    # txn t1 committed with 2 operations a minute ago; its tombstone answers re-sends
    tomb = Tombstone(now - 60_000, "digest-of-the-2-operation-set", 2)
    # another client reuses the id: 5 operations, then :complete with 5 (answered TRUE)
    op = Operation(op="put", table="items", id="other", value=b"v")
    (chunk,) = op_chunks(NS, TXN, 4, op, 1024)
    state, _, _ = on_chunk(None, tomb, chunk, POLICY, now_ms=now)
    assert state is None  # its operations are dropped...
    _, decision = on_marker(None, tomb, Marker(NS, TXN, 5, now), POLICY, now_ms=now, rand=0.5)
    assert isinstance(decision, Reject), decision  # ...and nothing tells (AlreadyCommitted)
