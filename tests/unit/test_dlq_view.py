"""DLQ records and the view folded from them."""

from __future__ import annotations

import pytest

from walstream.core.dlq import (
    DlqEntry,
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


def entry(record_id, dead_at, error_class="http_503", offset=0):
    headers = entry_headers(
        namespace="ns",
        reason="gave up",
        error_class=error_class,
        source="wal.ns.log[0]@7",
        attempts=3,
        dead_at_ms=dead_at,
        behind=["b1", "b2"],
    )
    return parse_dlq_record(record_id.encode(), b"v", headers, partition=0, offset=offset)


def test_entries_parse_with_every_header():
    parsed = entry("a", 10)
    assert isinstance(parsed, DlqEntry)
    assert (parsed.id, parsed.reason, parsed.error_class) == ("a", "gave up", "http_503")
    assert (parsed.source, parsed.attempts, parsed.dead_at_ms) == ("wal.ns.log[0]@7", 3, 10)
    assert parsed.behind == ("b1", "b2")


def test_markers_close_entries_and_a_new_entry_reopens():
    redriven = parse_dlq_record(
        b"a", b"", marker_headers(MarkerKind.REDRIVEN, 20), partition=0, offset=1
    )
    assert isinstance(redriven, Marker)
    view = DlqView.fold([entry("a", 10), entry("b", 11), redriven])
    assert set(view.open) == {"b"}
    assert view.closed["a"].kind is MarkerKind.REDRIVEN
    view.apply(entry("a", 30, offset=2))  # dead-lettered again after the redrive
    assert set(view.open) == {"a", "b"}
    assert view.oldest_dead_at_ms() == 11


def marker(record_id, at=0):
    return parse_dlq_record(
        record_id.encode(), b"", marker_headers(MarkerKind.DISCARDED, at), partition=0, offset=9
    )


def test_tally_counts_open_entries_and_tracks_the_oldest_as_entries_close():
    tally = DlqTally()
    for item in (entry("a", 10), entry("b", 5), entry("c", 20), None):
        tally.apply(item)
    assert (tally.open_count, tally.oldest_dead_at_ms()) == (3, 5)
    tally.apply(marker("b"))
    assert (tally.open_count, tally.oldest_dead_at_ms()) == (2, 10)
    tally.apply(marker("missing"))  # a marker for an entry not seen changes nothing
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
    from walstream.core.dlq import DlqCursor, DlqIndex

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
    items.append(entry("e1", 1, "http_500", 200))  # dead-lettered again: open, newest copy
    view, index = DlqView.fold(items), DlqIndex()
    for item in items:
        index.apply(item)
    assert len(index) == len(view.open) == 40
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
    assert index.open["e1"].offset == 200


@pytest.mark.parametrize("raw", ["", "1.2", "a.b.c", "1.2.3.4", "1..3"])
def test_a_bad_cursor_names_the_field(raw):
    from walstream.core.dlq import DlqCursor

    with pytest.raises(BadRequestError) as info:
        DlqCursor.parse(raw)
    assert info.value.field == "after"
