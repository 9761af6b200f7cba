"""DLQ entries of multi-partition mutations (issue 18): read back with their kind, shown as a
transaction (txn id, missing seqs), and redriven by their marker (redrive + 1, a client's), which
revives the dead-lettered state in the commit decisions."""

from __future__ import annotations

import pytest

from walstream.core import outbox
from walstream.core.dlq import (
    SET_MISMATCH_CLASS,
    DlqEntry,
    dead_transaction,
    describe_mutation,
    entry_marker,
    expiry_header,
    expiry_marker,
    missing_seqs,
    mutation_header,
    parse_dlq_record,
    redrive_marker,
    transaction_class,
    transaction_entry,
)
from walstream.core.mutations import (
    SET_MISMATCH,
    Apply,
    CommitPolicy,
    DeadLetter,
    Forget,
    Ignore,
    Marker,
    MutationLimits,
    Operation,
    Requeue,
    decode_marker,
    encode_marker,
    expired,
    expiry,
    on_chunk,
    on_marker,
    op_chunks,
    wake_marker,
)
from walstream.errors import PoisonRecordError

POLICY = CommitPolicy(limits=MutationLimits(completion_timeout_ms=60_000))
T0 = 1_700_000_000_000


def chunk(seq):
    op = Operation(op="put", table="t", id=f"k{seq}", value=b"v")
    return op_chunks("pds", "tx-1", seq, op, 1024)[0]


def dlq_record(
    value,
    *,
    txn="tx-1",
    reason="r",
    error_class="mutation_incomplete",
    kind="marker",
    extra=(),
    rid=None,
):
    """A DLQ entry exactly as the contract says the commit agent writes one, read back."""
    record = outbox.dlq_entry(
        value,
        dlq_topic="wal.pds.dlq",
        partition=None,
        record_id=rid or f"txn.{txn}",
        namespace="pds",
        reason=reason,
        error_class=error_class,
        source="wal.pds.markers[3]@41",
        attempts=0,
        dead_at_ms=T0,
        origin=None,
    )
    headers = [*(record.headers or []), mutation_header(kind), *extra]
    entry = parse_dlq_record(record.key, record.value, headers, partition=3, offset=7)
    assert isinstance(entry, DlqEntry)
    return entry


def dead_lettered(*seqs, count=3):
    """A transaction missing the seqs not in ``seqs``, dead-lettered at its timeout: its state,
    decision and DLQ entry (the marker with the state's redrive count)."""
    state = None
    for seq in seqs:
        state, _, _ = on_chunk(state, None, chunk(seq), POLICY, now_ms=T0)
    m = Marker("pds", "tx-1", count, T0)
    state, requeue = on_marker(state, None, m, POLICY, now_ms=T0, rand=0.5)
    assert state is not None
    assert isinstance(requeue, Requeue)
    wake = wake_marker(state, requeue)
    state, decision = on_marker(state, None, wake, POLICY, now_ms=T0 + 60_000, rand=0.5)
    assert isinstance(decision, DeadLetter), decision
    assert state is not None
    value = encode_marker(Marker("pds", "tx-1", count, T0, wake=0, redrive=state.redrive))
    return state, decision, dlq_record(value, reason=decision.reason)


def test_an_entry_reads_back_as_a_mutation_with_its_kind():
    _, _, entry = dead_lettered(0, 2)
    assert entry.mutation == "marker"
    assert transaction_entry(entry)
    plain = parse_dlq_record(b"id", b"{}", outbox.dlq_entry(
        b"{}", dlq_topic="d", partition=None, record_id="id", namespace="pds", reason="r",
        error_class="http_503", source="s", attempts=1, dead_at_ms=T0, origin=None,
    ).headers or [], partition=0, offset=0)  # fmt: skip
    assert isinstance(plain, DlqEntry)
    assert plain.mutation is None
    assert describe_mutation(plain) is None
    assert not transaction_entry(plain)


def test_a_transaction_shows_its_txn_id_and_the_missing_seqs_its_reason_names():
    _, decision, entry = dead_lettered(0, 2, count=5)
    assert describe_mutation(entry) == {
        "kind": "transaction",
        "txn_id": "tx-1",
        "missing": [1, 3, 4],
    }
    assert list(decision.missing) == [1, 3, 4]


def test_missing_seqs_of_a_reason_that_names_none():
    assert missing_seqs("seq 2 of 4: http_503 after 5 attempts") == []
    assert missing_seqs("missing seqs []") == []
    assert missing_seqs("incomplete: missing seqs [7]") == [7]


def test_missing_seqs_of_a_reason_cut_short_are_those_it_names_whole():
    seqs = list(range(1000, 2000))
    reason = f"incomplete after 5 ms (timeout 1 ms): missing seqs {seqs}"
    cut = reason.encode()[:4096].decode()  # what the entry's header keeps
    found = missing_seqs(cut)
    assert found == seqs[: len(found)]
    assert 600 < len(found) < 1000
    assert missing_seqs("missing seqs [12, 13") == [12]
    assert missing_seqs("missing seqs [12, 13,") == [12, 13]
    assert missing_seqs("missing seqs [") == []


@pytest.mark.parametrize(
    ("kind", "error_class", "shown"),
    [
        ("op", "mutation_conflict", "operation"),
        ("op", "mutation_poison", "operation"),
        ("marker", "mutation_rejected", "marker"),
    ],
)
def test_a_single_bad_record_is_shown_by_its_kind_and_not_redrivable(kind, error_class, shown):
    entry = dlq_record(b"{}", error_class=error_class, kind=kind)
    assert describe_mutation(entry) == {"kind": shown}
    assert not transaction_entry(entry)
    with pytest.raises(PoisonRecordError, match="not redrivable"):
        redrive_marker(entry)


def test_a_log_record_entry_is_not_redrivable_as_a_transaction():
    entry = DlqEntry(
        id="x", namespace="pds", reason="r", error_class="http_503", source="s",
        attempts=1, dead_at_ms=T0, value=b"{}",
    )  # fmt: skip
    with pytest.raises(PoisonRecordError, match="record entry"):
        redrive_marker(entry)


def test_redriving_sends_the_marker_again_once_more_redriven_as_a_clients():
    _, _, entry = dead_lettered(0, 2)
    again = redrive_marker(entry)
    assert again.key == b"tx-1"
    assert decode_marker(again.value) == Marker("pds", "tx-1", 3, T0, wake=0, redrive=1)
    assert again.marker == decode_marker(again.value)


def test_a_redriven_transaction_resumes_once_its_missing_operations_came():
    state, _, entry = dead_lettered(0, 2)
    # the missing operation arrives while dead-lettered: kept, nothing driven
    state, _, _ = on_chunk(state, None, chunk(1), POLICY, now_ms=T0 + 70_000)
    assert state is not None
    assert state.dead is not None
    state, ignored = on_marker(state, None, Marker("pds", "tx-1", 3, T0), POLICY,
                               now_ms=T0 + 70_000, rand=0.5)  # fmt: skip
    assert isinstance(ignored, Ignore)
    redriven = decode_marker(redrive_marker(entry).value)
    assert isinstance(redriven, Marker)
    state, decision = on_marker(state, None, redriven, POLICY, now_ms=T0 + 80_000, rand=0.5)
    assert decision == Apply(from_seq=0)
    assert state is not None
    assert state.dead is None
    assert state.redrive == 1
    # redriven again from a second dead letter: the count goes on
    again = dlq_record(encode_marker(Marker("pds", "tx-1", 3, T0, redrive=state.redrive)))
    assert decode_marker(redrive_marker(again).value).redrive == 2  # type: ignore[union-attr]


def test_a_transaction_whose_marker_never_came_is_redriven_countless_and_revives():
    state = None
    state, _, deadline = on_chunk(state, None, chunk(1), POLICY, now_ms=T0)
    assert isinstance(deadline, Requeue)
    assert state is not None
    wake = Marker("pds", "tx-1", 0, T0, wake=deadline.wake)
    state, decision = on_marker(state, None, wake, POLICY, now_ms=T0 + 60_000, rand=0.5)
    assert isinstance(decision, DeadLetter)
    assert state is not None
    # count 0, no wake: what the contract's entry holds; decode_marker alone refuses it
    value = encode_marker(Marker("pds", "tx-1", 0, T0, wake=0, redrive=state.redrive))
    with pytest.raises(PoisonRecordError):
        decode_marker(value)
    entry = dlq_record(value, reason=decision.reason)
    assert entry_marker(entry.value) == Marker("pds", "tx-1", 0, T0)
    assert describe_mutation(entry) == {"kind": "transaction", "txn_id": "tx-1", "missing": [0]}
    redriven = decode_marker(redrive_marker(entry).value)
    # a client's form (wake 0), never a wake's: a wake of no state is ignored
    assert redriven == Marker("pds", "tx-1", 0, T0, wake=0, redrive=1)
    revived, decision = on_marker(state, None, redriven, POLICY, now_ms=T0 + 90_000, rand=0.5)
    assert isinstance(decision, Requeue), decision  # revived: waits again for its marker
    assert revived is not None
    assert revived.dead is None
    assert revived.redrive == 1
    # its entry after a second dead letter (count 0, redrive 1): decoded as is, redriven again
    again = dlq_record(encode_marker(Marker("pds", "tx-1", 0, T0, redrive=1)))
    assert entry_marker(again.value) == Marker("pds", "tx-1", 0, T0, redrive=1)
    assert redrive_marker(again).marker == Marker("pds", "tx-1", 0, T0, redrive=2)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (None, "undecodable|empty"),
        (b"not json", "undecodable"),
        (b"[0]", "not a JSON object|undecodable"),
        (encode_marker(Forget("pds", "tx-1", T0)), "forget"),
        (encode_marker(Marker("pds", "other", 2, T0)), "names pds/other"),
        (encode_marker(Marker("elsewhere", "tx-1", 2, T0)), "names elsewhere/tx-1"),
        (
            b'{"v": 1, "ns": "pds", "txn": "tx-1", "kind": "marker", "count": 0, "at_ms": 0}',
            "at_ms",
        ),
        (b'{"v": 1, "ns": "pds", "txn": "tx-1", "kind": "forget", "count": 0}', "committed_at"),
        (b'{"v": 1, "ns": "pds", "txn": "tx-1", "kind": "marker", "count": 0, "wake": 0}', "wake"),
        (
            b'{"v": 1, "ns": "pds", "txn": "tx-1", "kind": "marker", "count": -1, "at_ms": 5}',
            "count",
        ),
    ],
)
def test_an_entry_whose_value_is_not_its_transactions_marker_is_refused(value, match):
    with pytest.raises(PoisonRecordError, match=match):
        redrive_marker(dlq_record(value))


def test_a_discarded_transactions_expiry_is_the_wake_the_agent_sent_and_drops_its_rows():
    state, decision, _ = dead_lettered(0, 2)
    # what the agent does on a DeadLetter: the entry (naming the expiry's wake id), then the
    # expiry wake (due when the window ends), then the state naming it
    expiring, requeue = expiry(state, POLICY.limits)
    sent = encode_marker(wake_marker(expiring, requeue))
    digest_marker = Marker("pds", "tx-1", 3, T0, digest="d" * 32, redrive=state.redrive)
    entry = dlq_record(
        encode_marker(digest_marker), reason=decision.reason, extra=[expiry_header(requeue.wake)]
    )
    assert entry.expiry_wake == requeue.wake
    now = expiry_marker(entry)
    assert now is not None
    assert (now.key, now.value) == (b"tx-1", sent)  # the same record, sent at once
    assert expired(expiring, now.marker)
    # a redrive revived it meanwhile: the expiry drops nothing
    revived, _ = on_marker(
        expiring, None, redrive_marker(entry).marker, POLICY, now_ms=T0, rand=0.5
    )
    assert not expired(revived, now.marker)


def test_a_countless_transactions_expiry_keeps_count_0():
    value = encode_marker(Marker("pds", "tx-1", 0, T0, wake=0, redrive=2))
    entry = dlq_record(value, extra=[expiry_header(5)])
    now = expiry_marker(entry)
    assert now is not None
    assert now.marker == Marker("pds", "tx-1", 0, T0, wake=5, redrive=2)
    assert decode_marker(now.value) == now.marker


@pytest.mark.parametrize(
    ("kind", "rid", "extra"),
    [
        ("marker", None, []),  # an entry from before the header
        ("marker", None, [("wal-mutation-expiry", b"0")]),
        ("marker", None, [("wal-mutation-expiry", b"soon")]),
        ("op", None, [expiry_header(3)]),
        ("marker", "poison-wal.pds.markers-3-41", [expiry_header(3)]),
    ],
)
def test_an_entry_naming_no_expiry_wake_gets_none(kind, rid, extra):
    value = encode_marker(Marker("pds", "tx-1", 2, T0))
    entry = dlq_record(value, kind=kind, extra=extra, rid=rid)
    assert expiry_marker(entry) is None


def test_an_expiry_of_an_entry_whose_marker_names_another_transaction_is_refused():
    entry = dlq_record(encode_marker(Marker("pds", "other", 2, T0)), extra=[expiry_header(3)])
    with pytest.raises(PoisonRecordError, match="names pds/other"):
        expiry_marker(entry)


def test_a_set_mismatch_is_its_own_class_shown_as_a_transaction_discardable_not_redrivable():
    assert transaction_class(DeadLetter(reason="r", kind=SET_MISMATCH), "mutation_incomplete") == (
        SET_MISMATCH_CLASS
    )
    assert SET_MISMATCH_CLASS == "mutation_set_mismatch"
    for kept in ("mutation_incomplete", "mutation_apply_failed"):
        assert transaction_class(DeadLetter(reason="r"), kept) == kept
    value = encode_marker(Marker("pds", "tx-1", 2, T0, digest="d" * 32))
    reason = "operation set mismatch: the marker names set dd.., the operations held make set ee.."
    entry = dlq_record(
        value, reason=reason, error_class=SET_MISMATCH_CLASS, extra=[expiry_header(3)]
    )
    assert dead_transaction(entry)
    assert not transaction_entry(entry)
    assert describe_mutation(entry) == {"kind": "transaction", "txn_id": "tx-1", "missing": []}
    with pytest.raises(PoisonRecordError, match=r"set mismatch .* not redrivable.*discard it"):
        redrive_marker(entry)
    dropped = expiry_marker(entry)  # discarded: its rows go
    assert dropped is not None
    assert dropped.marker == Marker("pds", "tx-1", 2, T0, wake=3)
    redrivable = dlq_record(value, error_class="mutation_apply_failed")
    assert dead_transaction(redrivable)
    assert transaction_entry(redrivable)
    assert not dead_transaction(dlq_record(value, error_class="mutation_rejected"))
