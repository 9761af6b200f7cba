"""The DLQ tools and a multi-partition mutation's entries (issue 18): a redrive sends a
dead-lettered transaction's marker to the namespace's markers topic (not an Envelope to its log)
and closes the entry; a single bad record is skipped and stays open; a discard closes either
without a settle marker; a listing shows what they are, never "undecodable"."""

from __future__ import annotations

from walstream.clock import FakeClock
from walstream.core import outbox
from walstream.core.dlq import DlqEntry, expiry_header, mutation_header, parse_dlq_record
from walstream.core.mutations import Marker, OpChunk, decode_marker, encode_marker, encode_op_chunk
from walstream.dlq import RedriveProgress, discard, entry_json, redrive
from walstream.records import decode_envelope, encode_envelope
from walstream.testing.records import envelope, namespace_definition, registry_of
from walstream.topology import mutation_topics

NOW = 1_800_000_000_000
NS = registry_of(namespace_definition("pds", mutations={"completion_timeout_s": 600})).get("pds")
NO_MUTATIONS = registry_of(namespace_definition("pds")).get("pds")
REASON = "incomplete after 600000 ms (timeout 600000 ms): missing seqs [1, 4]"


class Producer:
    """Records what the DLQ tools send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None, list]] = []

    async def send_and_wait(self, topic, value=None, *, key=None, partition=None, headers=None):
        self.sent.append((topic, value, key, partition, list(headers or [])))

    def to(self, topic: str):
        return [s for s in self.sent if s[0] == topic]


def entry(
    value, *, record_id, error_class, kind, key=None, reason=REASON, offset=7, extra=()
) -> DlqEntry:
    record = outbox.dlq_entry(
        value,
        dlq_topic=NS.topics.dlq,
        partition=2,
        record_id=record_id,
        namespace="pds",
        reason=reason,
        error_class=error_class,
        source=f"{mutation_topics('pds').markers}[2]@40",
        attempts=0,
        dead_at_ms=NOW,
        origin=None,
        key=key,
    )
    headers = [*(record.headers or []), mutation_header(kind), *extra]
    parsed = parse_dlq_record(record.key, record.value, headers, partition=2, offset=offset)
    assert isinstance(parsed, DlqEntry)
    return parsed


def transaction(
    key=None, *, expiry=None, txn="tx-9", error_class="mutation_incomplete", offset=7
) -> DlqEntry:
    """A transaction's entry (``expiry``: the expiry wake id it names, None: from before the
    header)."""
    value = encode_marker(Marker("pds", txn, 5, NOW - 1000, redrive=2))
    extra = [] if expiry is None else [expiry_header(expiry)]
    return entry(
        value,
        record_id="txn.tx-9",
        error_class=error_class,
        kind="marker",
        key=key,
        extra=extra,
        offset=offset,
    )


def conflict() -> DlqEntry:
    op = OpChunk("pds", "tx-9", 3, "put", "t", "k", None, 1, "0" * 32, 1, 0, b"v")
    return entry(
        encode_op_chunk(op),
        record_id="txn.tx-9.3",
        error_class="mutation_conflict",
        kind="op",
        reason="another operation for seq 3",
        offset=8,
    )


def log_entry() -> DlqEntry:
    value = encode_envelope(envelope(1, ns="pds", now_ms=NOW))
    return DlqEntry(
        id="id-1", namespace="pds", reason="HTTP 503", error_class="http_503",
        source="wal.pds.log[0]@3", attempts=3, dead_at_ms=NOW, value=value, partition=0, offset=9,
    )  # fmt: skip


def closed(producer: Producer) -> list[tuple[int | None, list]]:
    return [(p, h) for _, value, _, p, h in producer.to(NS.topics.dlq) if value == b""]


async def test_redrive_sends_a_transactions_marker_to_the_markers_topic_and_closes_the_entry():
    producer = Producer()
    progress = RedriveProgress(namespace="pds", total=3)
    await redrive(
        producer, NS, [transaction(), conflict(), log_entry()], progress, clock=FakeClock(NOW)
    )
    assert progress.redriven == 2
    assert len(progress.skipped) == 1
    assert progress.skipped[0].startswith("txn.tx-9.3: ")
    assert "not redrivable" in progress.skipped[0]
    ((_, value, key, partition, _),) = producer.to(mutation_topics("pds").markers)
    # keyed by the txn id, placed by the default partitioner: the partition of its state
    assert (key, partition) == (b"tx-9", None)
    assert decode_marker(value) == Marker("pds", "tx-9", 5, NOW - 1000, wake=0, redrive=3)
    # the log gets the log record's entry only, never the transaction as an Envelope
    ((_, logged, *_),) = producer.to(NS.topics.log)
    assert decode_envelope(logged).id == "id-1"
    closes = [dict(h)["wal-closes"] for _, h in closed(producer)]
    assert sorted(closes) == [b"0@9", b"2@7"]  # the conflict stays open


async def test_a_transaction_is_left_open_when_no_agent_would_read_its_marker_or_retargeted():
    for ns, target, why in [
        (NO_MUTATIONS, None, "pds takes no mutations now"),
        (NS, {"type": "kafka", "topic": "elsewhere"}, "not to a target"),
    ]:
        producer = Producer()
        progress = RedriveProgress(namespace="pds", total=1)
        await redrive(producer, ns, [transaction()], progress, target=target)
        assert progress.redriven == 0
        (skipped,) = progress.skipped
        assert skipped.startswith("txn.tx-9: ")
        assert why in skipped
        assert producer.sent == []  # no marker, and the entry stays open


async def test_discard_closes_a_transactions_entry_without_a_settle_marker():
    producer = Producer()
    assert await discard(producer, NS, [transaction(key="tx-9"), conflict()]) == 2
    assert producer.to(NS.topics.retry) == []  # no key of the log is held behind them
    closes = [dict(h).get("wal-closes") for _, h in closed(producer)]
    assert closes == [b"2@7", b"2@8"]
    assert producer.to(mutation_topics("pds").markers) == []


async def test_discard_closes_a_transactions_entry_then_sends_its_expiry_wake_due_now():
    producer = Producer()
    assert await discard(producer, NS, [transaction(expiry=4), conflict()]) == 2
    markers = mutation_topics("pds").markers
    ((_, value, key, partition, headers),) = producer.to(markers)
    # keyed by the txn id (the partition of its rows), straight to the markers topic: due now
    assert (key, partition, headers) == (b"tx-9", None, [])
    assert decode_marker(value) == Marker("pds", "tx-9", 5, NOW - 1000, wake=4, redrive=2)
    topics = [topic for topic, *_ in producer.sent]
    # the entry is closed first: a crash in between leaves its rows to their own expiry
    assert topics == [NS.topics.dlq, markers, NS.topics.dlq]
    assert [dict(h)["wal-closes"] for _, h in closed(producer)] == [b"2@7", b"2@8"]


async def test_discard_sends_no_expiry_for_a_region_dlq_a_namespace_without_mutations_or_poison():
    for ns, entries, settle in [
        (NS, [transaction(expiry=4)], False),  # a region DLQ: no worker of ours holds its rows
        (NO_MUTATIONS, [transaction(expiry=4)], True),
        (NS, [transaction(expiry=4, txn="other")], True),  # names another transaction
    ]:
        producer = Producer()
        assert await discard(producer, ns, entries, settle=settle) == 1
        assert producer.to(mutation_topics("pds").markers) == []
        assert len(closed(producer)) == 1


async def test_a_set_mismatch_is_not_redriven_named_why_and_left_open_but_is_discarded():
    mismatch = transaction(expiry=4, error_class="mutation_set_mismatch", offset=11)
    producer = Producer()
    progress = RedriveProgress(namespace="pds", total=1)
    await redrive(producer, NS, [mismatch], progress, clock=FakeClock(NOW))
    assert progress.redriven == 0
    (skipped,) = progress.skipped
    assert skipped.startswith("txn.tx-9: ")
    assert "operation set mismatch (mutation_set_mismatch) is not redrivable" in skipped
    assert "discard it" in skipped
    assert producer.sent == []  # no marker, and the entry stays open
    assert await discard(producer, NS, [mismatch]) == 1
    assert [dict(h)["wal-closes"] for _, h in closed(producer)] == [b"2@11"]
    ((_, value, key, _, _),) = producer.to(mutation_topics("pds").markers)
    assert key == b"tx-9"
    assert decode_marker(value) == Marker("pds", "tx-9", 5, NOW - 1000, wake=4, redrive=2)
    shown = entry_json(mismatch)
    assert (shown["kind"], shown["txn_id"]) == ("transaction", "tx-9")


def test_a_listing_shows_a_transaction_and_its_missing_seqs():
    shown = entry_json(transaction())
    assert (shown["kind"], shown["txn_id"], shown["missing"]) == ("transaction", "tx-9", [1, 4])
    assert shown["error_class"] == "mutation_incomplete"
    assert "record" not in shown


def test_show_of_a_transaction_shows_its_marker_not_an_undecodable_record():
    shown = entry_json(transaction(), with_record=True)
    assert "undecodable" not in shown
    assert shown["mutation"] == {
        "kind": "marker", "namespace": "pds", "txn_id": "tx-9", "op_count": 5,
        "at_ms": NOW - 1000, "digest": None, "wake": 0, "redrive": 2,
    }  # fmt: skip


def test_show_of_a_bad_operation_shows_the_operation_without_its_data():
    shown = entry_json(conflict(), with_record=True)
    assert shown["kind"] == "operation"
    assert "undecodable" not in shown
    assert shown["mutation"]["seq"] == 3
    assert "data" not in shown["mutation"]


def test_show_of_an_undecodable_mutation_record_shows_its_bytes():
    bad = entry(b"\xff junk", record_id="txn.x", error_class="mutation_poison", kind="op")
    shown = entry_json(bad, with_record=True)
    assert shown["kind"] == "operation"
    assert shown["undecodable"]
    assert shown["raw"].endswith("junk")
