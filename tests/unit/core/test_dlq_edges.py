"""Edges of the DLQ fold (walstream.core.dlq) the other tests do not reach: malformed headers
read as defaults, a claim fold past its bound, entries read twice, filters by time, sources that
are not ``topic[partition]@offset``, times given as JSON numbers."""

from __future__ import annotations

from walstream.core.dlq import (
    Claim,
    ClaimFold,
    DlqEntry,
    DlqIndex,
    DlqRef,
    Marker,
    OpenEntries,
    Selection,
    entry_headers,
    parse_dlq_record,
    parse_selection,
    parse_source,
)


def test_a_marker_closing_unreadable_coordinates_closes_by_its_id_only():
    marker = parse_dlq_record(
        b"id-1",
        b"",
        [("wal-dlq", b"redriven"), ("wal-dead-at", b"5"), ("wal-closes", b"x@y")],
        partition=0,
        offset=9,
    )
    assert isinstance(marker, Marker)
    assert marker.closes is None  # as an old marker: the latest earlier entry of its id


def test_an_entry_with_an_unreadable_number_reads_it_as_zero():
    entry = parse_dlq_record(
        b"id-1",
        b"{}",
        [("wal-dlq", b"entry"), ("wal-attempt", b"three"), ("wal-dead-at", b"7")],
        partition=0,
        offset=1,
    )
    assert isinstance(entry, DlqEntry)
    assert (entry.attempts, entry.dead_at_ms) == (0, 7)


def claim(name: str, offset: int, *, at_ms: int = 0, released: bool = False) -> Claim:
    return Claim(
        claim=name, at_ms=at_ms, lease_ms=30_000, released=released, partition=0, offset=offset
    )


def test_a_claim_fold_over_its_bound_forgets_released_claims():
    fold = ClaimFold()
    for n in range(1_000):
        fold.apply(claim(f"done-{n}", n, released=True))
    for n in range(1_000, 1_024):
        fold.apply(claim(f"live-{n}", n))
    assert len(fold.claims) == 1_024  # at the bound: all kept
    fold.apply(claim("live-last", 1_024))
    assert sorted(fold.claims) == sorted([f"live-{n}" for n in range(1_000, 1_024)] + ["live-last"])
    assert fold.holder_before("live-last") == "live-1000"


def test_claims_released_or_run_out_before_mine_do_not_hold_the_dlq():
    fold = ClaimFold()
    fold.apply(claim("released", 1, released=True))
    fold.apply(claim("expired", 2, at_ms=0))
    fold.apply(claim("mine", 3, at_ms=60_000))
    assert fold.holder_before("mine") is None


def test_an_entry_read_twice_is_held_once():
    entries: OpenEntries[str] = OpenEntries()
    entries.add("id-1", (0, 5), "first read")
    entries.add("id-1", (0, 5), "read again")
    entries.add("id-1", (1, 2), "a second entry of the id")
    assert len(entries) == 2
    assert entries.of("id-1") == ["first read", "a second entry of the id"]
    assert entries.of("id-2") == []


def test_an_index_selects_by_death_time_and_ignores_what_is_no_dlq_record():
    index = DlqIndex()
    index.apply(None)
    index.apply(claim("redrive-1", 0))  # a claim: folded apart, never an entry
    assert index.claims.holder_before("redrive-1") is None
    for n, dead_at in enumerate((100, 200, 300)):
        entry = parse_dlq_record(
            f"id-{n}".encode(),
            b"{}",
            [("wal-dlq", b"entry"), ("wal-dead-at", str(dead_at).encode())],
            partition=0,
            offset=n,
        )
        index.apply(entry)
    chosen = index.select(Selection(since_ms=200, until_ms=300))
    assert chosen == [DlqRef(200, 0, 1, "id-1", "")]


def test_a_source_reads_as_its_coordinates_only_in_the_topic_partition_offset_form():
    assert parse_source("wal.ns.log[3]@42") == ("wal.ns.log", 3, 42)
    for malformed in ("wal.ns.log@42", "[3]@42", "wal.ns.log[x]@42", "wal.ns.log[3]@y", ""):
        assert parse_source(malformed) is None, malformed


def test_an_entry_knows_its_source_and_whether_it_was_no_record():
    headers = entry_headers(
        namespace="ns",
        reason="not JSON",
        error_class="PoisonRecordError",
        source="wal.ns.log[1]@9",
        attempts=0,
        dead_at_ms=5,
    )
    assert [name for name, _ in headers if name in ("wal-behind", "wal-key")] == []
    entry = parse_dlq_record(b"id-1", b"\xff", headers, partition=0, offset=1)
    assert isinstance(entry, DlqEntry)
    assert (entry.poison, entry.behind, entry.key) == (True, (), None)
    assert entry.source_coordinates() == ("wal.ns.log", 1, 9)


def test_a_selection_time_given_as_a_whole_json_number_is_that_integer():
    chosen = parse_selection({"since": 5.0, "until": 7}, 1_000)
    assert (chosen.since_ms, chosen.until_ms) == (5, 7)
