"""Second review of issue 18's mutation agents (engineer R2): defects the first review missed or
its fixes opened, proven over in-memory rows, a recording emitter and a recording kv target (the
first review's ``Rig``: records are read on their key's partition, every record scheduled back to
the markers topic is delivered in due order).

Each test is a strict xfail until its owner fixes the defect named in its reason."""

from __future__ import annotations

import orjson
from aiokafka.errors import KafkaTimeoutError

from walstream.core.delay import parse_delay_headers
from walstream.core.dlq.mutations import entry_marker, expiry_marker
from walstream.core.dlq.records import DlqEntry, parse_dlq_record
from walstream.core.mutations import encode_marker
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import encode_event
from walstream.records import Envelope
from walstream.testing.mutation_rig import (
    DAY_MS,
    NS,
    TOPICS,
    CrashingRows,
    Kv,
    Rig,
    definition,
)

HOUR_MS = 3_600_000


def _dlq(rig: Rig) -> list[dict[str, object]]:
    """The DLQ entries' values (each a transaction's marker or a record's bytes), decoded."""
    return [orjson.loads(e.value) for e in rig.emitter.to(f"wal.{NS}.dlq") if e.value]


def _last_scheduled_marker(rig: Rig) -> tuple[bytes, int]:
    """The value and due time of the record scheduled last-due back to the markers topic."""
    best: tuple[bytes, int] | None = None
    for e in rig.emitter.emitted:
        delay = parse_delay_headers(e.headers)
        if delay is None or delay.dest_topic != TOPICS.markers or e.value is None:
            continue
        if best is None or delay.due_ms >= best[1]:
            best = (e.value, delay.due_ms)
    assert best is not None
    return best


async def test_a_redriven_transactions_expiry_read_again_opens_no_ghost() -> None:
    rig = Rig()
    await rig.op("t5", 0)
    await rig.handle_marker(rig.marker_record("t5", 2), "t5")  # seq 1 never comes
    await rig.drain(61_000)  # dead-lettered: incomplete (redrive 0)
    assert len(_dlq(rig)) == 1
    # the operator redrives it (walstream dlq redrive: redrive + 1, a client's marker)
    entry = entry_marker(rig.emitter.to(f"wal.{NS}.dlq")[0].value)
    redriven = entry._replace(redrive=entry.redrive + 1, wake=0)
    await rig.handle_marker(encode_marker(redriven), "t5")
    await rig.drain(61_000)  # still incomplete: dead-lettered again, at redrive 1
    assert len(_dlq(rig)) == 2
    expiry, due = _last_scheduled_marker(rig)
    assert due >= rig.clock.now_ms() + DAY_MS - 61_000  # the expiry wake, a window away
    # (Rig.drain gives up what is due past its horizon: the expiry is handed over here)
    rig.clock.advance(due - rig.clock.now_ms())
    await rig.handle_marker(expiry, "t5")  # the expiry drops the rows
    assert rig.txn_rows("t5") == []
    # the same expiry record read again (its worker killed before the ack)
    await rig.handle_marker(expiry, "t5")
    await rig.drain(61_000)
    assert rig.txn_rows("t5") == []  # fails: a ghost state (count 2, no operation)
    assert len(_dlq(rig)) == 2  # fails: a third entry, 'incomplete ... missing seqs [0, 1]'


async def test_a_txn_id_reused_after_the_window_is_applied_even_if_the_forget_is_late() -> None:
    rig = Rig()
    await rig.op("t6", 0, value=b"first")
    await rig.handle_marker(rig.marker_record("t6", 1), "t6")
    assert rig.kv.applied == [f"mut:{NS}:t6:00000000"]
    # the window passes; the delay stage is an hour behind: the Forget is not handled yet
    rig.clock.advance(DAY_MS + HOUR_MS)
    rig.delivered = len(rig.emitter.emitted)  # what was scheduled so far is still in the tiers
    await rig.op("t6", 0, value=b"second")  # a new transaction under the same id
    await rig.handle_marker(rig.marker_record("t6", 1), "t6")
    assert rig.kv.applied == [f"mut:{NS}:t6:00000000"] * 2  # fails: the second never applied


class FailingKv(Kv):
    """A kv target whose first ``failures`` batches fail (a database down for a while)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def deliver_many(self, envelopes: list[Envelope]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down")
        await super().deliver_many(envelopes)


def _unreadable(rig: Rig) -> None:
    """The namespace's latest control event is unreadable (a bad apply, or an event of a newer
    version during a rolling upgrade): the namespace is unavailable (503 at the API)."""
    rig.registry.apply(NS.encode(), b"{not a namespace event")


def _readable_again(rig: Rig) -> None:
    rig.registry.apply(*encode_event(parse_namespace(definition()), 2))


UNAVAILABLE = (
    "MutationStage._placed (agents/mutations.py) answers (None, False) for a namespace whose "
    "config is unreadable for now (NamespaceUnavailableError), and the handler returns, so the "
    "agent ACKS the record and it is lost (the deliver agent parks such records and looks "
    "again: agents/failures.park). Fix: never ack a mutation record of an unavailable "
    "namespace: park it (through the delay tiers back to its topic and partition, as a wake) "
    "or hold its partition until the namespace is readable"
)


async def test_an_operation_read_while_its_namespace_is_unavailable_is_not_lost() -> None:
    rig = Rig()
    await rig.op("t7", 0)
    _unreadable(rig)
    await rig.op("t7", 1)  # written (durable TRUE) before the bad event; read now
    _readable_again(rig)
    await rig.handle_marker(rig.marker_record("t7", 2), "t7")
    await rig.drain_all(120_000)
    assert rig.kv.applied == [f"mut:{NS}:t7:00000000", f"mut:{NS}:t7:00000001"]


async def test_a_wake_read_while_its_namespace_is_unavailable_still_drives_its_commit() -> None:
    rig = Rig()
    rig.kv = FailingKv(failures=1)
    rig.stage = rig.worker()
    await rig.op("t8", 0)
    await rig.handle_marker(rig.marker_record("t8", 1), "t8")  # apply fails: re-queued
    assert rig.kv.applied == []
    _unreadable(rig)
    await rig.drain_all(1_000)  # the retry wake (backoff 100 ms) comes: skipped, acked
    _readable_again(rig)
    await rig.drain_all(2 * DAY_MS)  # whatever else is scheduled
    assert rig.kv.applied == [f"mut:{NS}:t8:00000000"]  # fails: never applied
    assert rig.txn_rows("t8") == []  # fails: open for ever


class FlakyRows(CrashingRows):
    """Rows whose first durable write of a state fails as the producer's send does when the
    broker does not take it in time (an Exception, not a crash: the worker lives on)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next_durable_state = False

    async def put(self, key: str, value: bytes | None, *, durable: bool = False) -> None:
        if durable and key.startswith("s:") and self.fail_next_durable_state:
            self.fail_next_durable_state = False
            if value is not None:
                self[key] = value  # in the store; its changelog record was not taken
            raise KafkaTimeoutError()
        await super().put(key, value, durable=durable)


async def test_a_transient_failure_writing_the_progress_does_not_strand_the_transaction() -> None:
    rig = Rig()
    rows = FlakyRows()
    rig.rows = rows
    rig.stage = rig.worker()
    await rig.op("t9", 0)
    await rig.op("t9", 1)
    marker = rig.marker_record("t9", 2)
    rows.fail_next_durable_state = True
    try:
        await rig.handle_marker(marker, "t9")  # the batch applied; its progress write fails
    except Exception:  # noqa: BLE001 - a fix may leave it unacked: a new worker reads it again
        rig.stage = rig.worker()
        await rig.handle_marker(marker, "t9")
    await rig.drain(2 * DAY_MS)
    dlq = rig.emitter.to(f"wal.{NS}.dlq")
    assert [dict(e.headers).get("wal-error-class") for e in dlq] == []  # fails: mutation_poison
    assert rig.txn_rows("t9") == []  # fails: the transaction stays open for ever


async def test_a_discarded_redriven_transaction_does_not_come_back() -> None:
    rig = Rig()
    await rig.op("ta", 0)
    await rig.handle_marker(rig.marker_record("ta", 2), "ta")  # seq 1 never comes
    await rig.drain(61_000)  # dead-lettered (redrive 0)
    first = rig.emitter.to(f"wal.{NS}.dlq")[0]
    entry = entry_marker(first.value)
    redriven = entry._replace(redrive=entry.redrive + 1, wake=0)  # walstream dlq redrive
    await rig.handle_marker(encode_marker(redriven), "ta")
    await rig.drain(61_000)  # dead-lettered again, at redrive 1
    second = rig.emitter.to(f"wal.{NS}.dlq")[1]
    parsed = parse_dlq_record(second.key, second.value, second.headers or [], partition=0, offset=1)
    assert isinstance(parsed, DlqEntry)
    discard = expiry_marker(parsed)  # walstream dlq discard sends this, due now
    assert discard is not None
    await rig.handle_marker(discard.value, "ta")
    assert rig.txn_rows("ta") == []  # discarded: its rows are gone
    # the agent's own expiry wake comes when the window ends (the delay tiers hold it)
    expiry, due = _last_scheduled_marker(rig)
    rig.clock.advance(due - rig.clock.now_ms())
    await rig.handle_marker(expiry, "ta")
    await rig.drain(61_000)
    assert rig.txn_rows("ta") == []  # fails: a ghost state (count 2, no operation)
    assert len(rig.emitter.to(f"wal.{NS}.dlq")) == 2  # fails: a third entry
