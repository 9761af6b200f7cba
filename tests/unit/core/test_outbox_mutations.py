"""The outbox's mutation records: an operation's chunks on wal.<ns>.mutations, a marker on
wal.<ns>.markers, all keyed by the txn id (so one partition number of both topics)."""

from __future__ import annotations

from walstream.core.mutations import Marker, Operation, op_chunks
from walstream.core.mutations.wire import decode_marker, decode_op_chunk
from walstream.core.outbox import Outgoing, mutation_marker, mutation_ops


def test_an_operations_chunks_go_to_its_namespaces_mutations_topic_in_order():
    op = Operation(op="put", table="t", id="k", value=b"x" * 25)
    chunks = op_chunks("kv", "tx-1", 4, op, 10)
    records = mutation_ops(chunks)
    assert [(r.topic, r.key, r.due, r.headers) for r in records] == [
        ("wal.kv.mutations", b"tx-1", None, None)
    ] * 3
    assert [decode_op_chunk(r.value) for r in records] == chunks
    assert mutation_ops([]) == []


def test_a_marker_goes_to_its_namespaces_markers_topic_keyed_by_its_txn():
    marker = Marker(namespace="kv", txn_id="tx-1", op_count=2, at_ms=7, digest=None)
    record = mutation_marker(marker)
    assert isinstance(record, Outgoing)
    assert (record.topic, record.key, record.due) == ("wal.kv.markers", b"tx-1", None)
    assert decode_marker(record.value) == marker
