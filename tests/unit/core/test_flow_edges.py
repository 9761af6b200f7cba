"""Edges of the delay headers, the per-key ordering core and its markers (walstream.core.delay,
.ordering, .outbox) the other tests do not reach (core/ is held to 100 % in make test)."""

from __future__ import annotations

import orjson
import pytest

from walstream.core.delay import parse_due_header
from walstream.core.ordering import (
    KeyHead,
    KeyState,
    OnDlq,
    RecordRef,
    dead_lettered,
    dead_lettered_head,
    skip_first,
    state_from_json,
)
from walstream.core.outbox.markers import MarkerKind, decode_marker
from walstream.core.outbox.records import release_marker
from walstream.errors import PoisonRecordError

REF = RecordRef("id-2", "orders-log", 0, 7)

# -- delay headers ---------------------------------------------------------------------------


def test_a_due_header_that_is_missing_or_no_number_gives_no_due_time():
    assert parse_due_header(None) is None
    assert parse_due_header([]) is None
    assert parse_due_header([("wal-origin", b"x")]) is None
    assert parse_due_header({"wal-due": b"soon"}) is None
    assert parse_due_header([("wal-due", b"12")]) == 12


# -- per-key ordering ------------------------------------------------------------------------


def test_a_dead_record_that_is_not_its_keys_head_changes_nothing():
    state = KeyState(head="id-1", since_ms=5)
    assert dead_lettered(state, "id-9", OnDlq.HOLD, 10) == (state, None)
    head = KeyHead(head="id-1", since_ms=5)
    assert dead_lettered_head(head, "id-9", OnDlq.HOLD, 10) is None


def test_a_stored_state_whose_waiting_is_not_a_list_is_refused():
    with pytest.raises(ValueError, match="waiting must be a list"):
        state_from_json({"head": "id-1", "since_ms": 5, "waiting": "id-2"})


def test_an_entry_that_cannot_be_found_is_skipped():
    head = KeyHead(head="id-1", since_ms=5, first=3, next=5)
    assert skip_first(head) == KeyHead(head="id-1", since_ms=5, first=4, next=5)


# -- ordering markers ------------------------------------------------------------------------


def test_a_release_marker_that_is_due_now_carries_no_due_time():
    record = release_marker("orders-retry", "orders", REF, b"k", 0)
    assert record.headers == [("wal-order", MarkerKind.RELEASE)]
    marker = decode_marker(MarkerKind.RELEASE, record.value)
    assert (marker.record_id, marker.ref, marker.tries) == ("id-2", REF, 0)


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        (b"rewind", b'{"ns": "orders", "id": "id-2", "ref": null}', "unknown ordering marker"),
        (MarkerKind.SETTLE, b"not json", "undecodable ordering marker"),
        (MarkerKind.SETTLE, b'{"ns": "orders"}', "undecodable ordering marker"),
        (MarkerKind.RELEASE, b'{"ns": "orders", "id": "id-2", "ref": [1]}', "undecodable"),
        (MarkerKind.RELEASE, None, "undecodable ordering marker"),
        (MarkerKind.RELEASE, orjson.dumps({"ns": "o", "id": "i", "ref": None}), "without"),
    ],
)
def test_a_marker_that_cannot_be_read_is_poison(kind, value, reason):
    with pytest.raises(PoisonRecordError, match=reason):
        decode_marker(kind, value)
