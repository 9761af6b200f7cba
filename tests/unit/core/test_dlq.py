"""DLQ records and the view folded from them."""

from __future__ import annotations

import itertools

import pytest

from walstream.core.dlq import (
    DlqEntry,
    DlqIndex,
    DlqTally,
    DlqView,
    Marker,
    MarkerKind,
    Selection,
    entry_headers,
    marker_headers,
    parse_dlq_record,
    parse_selection,
)
from walstream.errors import BadRequestError

_offsets = itertools.count(1000)


def entry(record_id, dead_at, error_class="http_503", offset=None, partition=0):
    """An entry at its own coordinates (the next free offset unless given)."""
    offset = next(_offsets) if offset is None else offset
    headers = entry_headers(
        namespace="ns",
        reason="gave up",
        error_class=error_class,
        source="wal.ns.log[0]@7",
        attempts=3,
        dead_at_ms=dead_at,
        behind=["b1", "b2"],
    )
    return parse_dlq_record(record_id.encode(), b"v", headers, partition=partition, offset=offset)


def test_entries_parse_with_every_header():
    parsed = entry("a", 10)
    assert isinstance(parsed, DlqEntry)
    assert (parsed.id, parsed.reason, parsed.error_class) == ("a", "gave up", "http_503")
    assert (parsed.source, parsed.attempts, parsed.dead_at_ms) == ("wal.ns.log[0]@7", 3, 10)
    assert parsed.behind == ("b1", "b2")


def test_markers_close_entries_and_a_new_entry_reopens():
    first, other = entry("a", 10), entry("b", 11)
    redriven = parse_dlq_record(
        b"a", b"", marker_headers(MarkerKind.REDRIVEN, 20), partition=0, offset=next(_offsets)
    )
    assert isinstance(redriven, Marker)
    view = DlqView.fold([first, other, redriven])
    assert set(view.open) == {"b"}
    assert view.closed["a"].kind is MarkerKind.REDRIVEN
    view.apply(entry("a", 30))  # dead-lettered again after the redrive
    assert set(view.open) == {"a", "b"}
    assert view.oldest_dead_at_ms() == 11


def closing(item, kind=MarkerKind.REDRIVEN, offset=None):
    """The marker redrive/discard writes for ``item`` (names it, on its partition)."""
    return parse_dlq_record(
        item.id.encode(),
        b"",
        marker_headers(kind, 50, (item.partition, item.offset)),
        partition=item.partition,
        offset=next(_offsets) if offset is None else offset,
    )


def test_a_marker_closes_only_the_entry_it_names_in_any_partition_order():
    """Issue 14 item 4: a redriven keyless record dead again on another partition stays open
    whichever partition a reader folds first (on 9e4a94b the marker closed the new entry)."""
    firsts = [entry(f"r{n}", 10 + n, partition=0) for n in range(20)]
    markers = [closing(e) for e in firsts]
    agains = [entry(f"r{n}", 100 + n, partition=1 + n % 3) for n in range(20)]
    p0 = firsts + markers
    others = agains
    orders = {
        "partition 0 first": p0 + others,
        "others first": others + p0,
        "interleaved": [x for pair in itertools.zip_longest(p0, others) for x in pair if x],
        "markers last": firsts + others + markers,
    }
    for name, items in orders.items():
        view, index, tally = DlqView(), DlqIndex(), DlqTally()
        for item in items:
            view.apply(item)
            index.apply(item)
            tally.apply(item)
        assert sorted((e.partition, e.offset) for e in view.all_open()) == sorted(
            (e.partition, e.offset) for e in agains
        ), name
        assert len(index) == tally.open_count == 20, name
        assert tally.oldest_dead_at_ms() == 100, name
        for n in range(20):  # each one redrivable by id
            refs = index.select(Selection(ids=frozenset({f"r{n}"})))
            assert [(r.partition, r.offset) for r in refs] == [
                (agains[n].partition, agains[n].offset)
            ], name


def test_a_second_entry_of_an_open_id_is_open_too_until_its_own_marker():
    one, two = entry("a", 10, partition=0), entry("a", 20, partition=2)
    view = DlqView.fold([one, two])
    assert [e.offset for e in view.all_open()] == [one.offset, two.offset]
    assert view.open["a"].offset == two.offset  # the newest of the id
    view.apply(closing(two))
    assert [e.offset for e in view.all_open()] == [one.offset]
    view.apply(closing(two))  # closing it twice changes nothing
    assert [e.offset for e in view.all_open()] == [one.offset]


def test_an_old_marker_closes_the_latest_earlier_entry_on_its_partition_never_a_later_one():
    one, two = entry("a", 10, partition=0), entry("a", 20, partition=0)
    old = marker("a")  # no wal-closes, after both on partition 0
    later = entry("a", 30, partition=0)
    elsewhere = entry("a", 40, partition=3)  # dead again on another partition
    for items in ([one, two, old, later, elsewhere], [elsewhere, one, two, old, later]):
        view = DlqView.fold(items)
        assert sorted(e.offset for e in view.all_open()) == sorted(
            [one.offset, later.offset, elsewhere.offset]
        )
    # a marker read before any entry of its id closes nothing
    view = DlqView.fold([marker("b"), entry("b", 5)])
    assert set(view.open) == {"b"}


def marker(record_id, at=0):
    """An old-style marker (no wal-closes), after every entry written so far on partition 0."""
    return parse_dlq_record(
        record_id.encode(),
        b"",
        marker_headers(MarkerKind.DISCARDED, at),
        partition=0,
        offset=next(_offsets),
    )


def test_tally_counts_open_entries_and_tracks_the_oldest_as_entries_close():
    tally = DlqTally()
    for item in (entry("a", 10), entry("b", 5), entry("c", 20), None):
        tally.apply(item)
    assert (tally.open_count, tally.oldest_dead_at_ms()) == (3, 5)
    tally.apply(marker("b"))
    assert (tally.open_count, tally.oldest_dead_at_ms()) == (2, 10)
    tally.apply(marker("missing"))  # a marker for an entry not seen changes nothing
    tally.apply(marker("a"))  # redriven
    tally.apply(entry("a", 30))  # dead again after a redrive: open, and younger
    assert (tally.open_count, tally.oldest_dead_at_ms()) == (2, 20)
    tally.apply(marker("a"))
    tally.apply(marker("c"))
    assert (tally.open_count, tally.oldest_dead_at_ms()) == (0, None)


def test_tally_memory_stays_proportional_to_open_entries():
    tally = DlqTally()
    for i in range(50_000):
        tally.apply(entry(f"r{i}", i))
        tally.apply(marker(f"r{i}"))
    assert tally.open_count == 0
    assert len(tally._heap) <= 1024 + 1  # compacted, not 50,000 stale items
    assert tally.oldest_dead_at_ms() is None


def test_foreign_records_are_ignored():
    assert parse_dlq_record(b"a", b"v", [], partition=0, offset=0) is None
    assert parse_dlq_record(None, b"v", [("wal-dlq", b"entry")], partition=0, offset=0) is None
    assert parse_dlq_record(b"a", b"", [("wal-dlq", b"weird")], partition=0, offset=0) is None


def test_selection_filters_and_orders_oldest_first():
    view = DlqView.fold([entry("c", 30), entry("a", 10, "http_404"), entry("b", 20)])
    assert [e.id for e in view.select(Selection())] == ["a", "b", "c"]
    assert [e.id for e in view.select(Selection(since_ms=20))] == ["b", "c"]
    assert [e.id for e in view.select(Selection(until_ms=20))] == ["a"]
    assert [e.id for e in view.select(Selection(error_class="http_503"))] == ["b", "c"]
    assert [e.id for e in view.select(Selection(ids=frozenset({"c"})))] == ["c"]


def test_selection_from_a_request_names_bad_fields():
    chosen = parse_selection({"ids": "a,b", "since": "-1h", "error_class": "x"}, 7_200_000)
    assert chosen.ids == {"a", "b"}
    assert chosen.since_ms == 3_600_000
    for bad, field in (
        ({"since": "soon"}, "since"),
        ({"ids": [1]}, "ids"),
        ({"colour": 1}, "colour"),
        ({"error_class": ""}, "error_class"),
    ):
        with pytest.raises(BadRequestError) as caught:
            parse_selection(bad, 0)
        assert caught.value.field == field


def test_the_index_pages_like_the_view_selects_without_holding_values():
    from walstream.core.dlq import DlqCursor

    items = [
        entry(f"e{n}", 100 - n % 10, "http_500" if n % 3 else "http_503", n) for n in range(50)
    ]
    items += [
        parse_dlq_record(
            f"e{n}".encode(),
            b"",
            marker_headers(MarkerKind.DISCARDED, 1),
            partition=0,
            offset=100 + n,
        )
        for n in range(0, 50, 5)
    ]
    items.append(entry("e1", 1, "http_500", 200))  # dead-lettered again: a second open entry
    view, index = DlqView.fold(items), DlqIndex()
    for item in items:
        index.apply(item)
    assert len(index) == len(view.all_open()) == 41
    for selection in (Selection(), Selection(error_class="http_503"), Selection(since_ms=95)):
        expected = [e.id for e in view.select(selection)]
        paged, after = [], None
        while True:
            refs, matching, after = index.page(selection, 7, after)
            assert len(refs) <= 7
            assert matching == len(expected)
            paged += [r.id for r in refs]
            if after is None:
                break
            assert DlqCursor.parse(str(after)) == after
        assert paged == expected
        assert [r.id for r in index.select(selection)] == expected
    assert sorted(r.offset for r in index.open.values() if r.id == "e1") == [1, 200]


@pytest.mark.parametrize("raw", ["", "1.2", "a.b.c", "1.2.3.4", "1..3"])
def test_a_bad_cursor_names_the_field(raw):
    from walstream.core.dlq import DlqCursor

    with pytest.raises(BadRequestError) as info:
        DlqCursor.parse(raw)
    assert info.value.field == "after"


def test_the_earliest_live_claim_on_partition_0_holds_the_dlq():
    from walstream.core.dlq import CLAIM_KEY, ClaimFold, claim_headers

    def claim(name, at, offset, partition=0, released=False):
        headers = claim_headers(name, at, 30_000, released=released)
        return parse_dlq_record(CLAIM_KEY, b"", headers, partition=partition, offset=offset)

    fold = ClaimFold()
    for item in (claim("a", 1_000, 1), claim("b", 2_000, 2), claim("x", 0, 0, partition=3)):
        fold.apply(item)
    assert fold.holder_before("a") is None  # first: it runs
    assert fold.holder_before("b") == "a"  # second: 409, and it releases its claim
    fold.apply(claim("b", 2_000, 3, released=True))
    fold.apply(claim("a", 40_000, 4))  # renewed
    fold.apply(claim("c", 60_000, 5))
    assert fold.holder_before("c") == "a"  # 20 s after a's renewal: still held
    fold.apply(claim("c", 60_000, 6, released=True))
    fold.apply(claim("d", 71_000, 7))
    assert fold.holder_before("d") is None  # a's lease ran out (40 s + 30 s < 71 s)
    fold.apply(claim("e", 72_000, 8))
    assert fold.holder_before("e") == "d"
    # none of it is an entry or a marker to the other readers
    view = DlqView.fold([claim("a", 1, 10), entry("r", 5)])
    assert set(view.open) == {"r"}
