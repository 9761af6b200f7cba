"""What an ordering marker read back means for its key's head (``core.outbox.markers``)."""

from __future__ import annotations

import pytest

from walstream.core.ordering import KeyHead, RecordRef
from walstream.core.outbox.markers import Follow, Marker, MarkerKind, Settle, marker_step

REF = RecordRef("id-2", "wal.seq.log", 2, 7)
OTHER = RecordRef("id-3", "wal.seq.log", 2, 8)


def release(ref: RecordRef | None = REF, *, tries: int = 0) -> Marker:
    return Marker(MarkerKind.RELEASE, "seq", "id-2", ref, tries)


def head(name: str, **kw: object) -> KeyHead:
    return KeyHead(head=name, since_ms=1, **kw)  # type: ignore[arg-type]  # KeyHead's fields


@pytest.mark.parametrize(
    ("current", "step"),
    [
        (head("id-1", held=True), Settle()),  # the held head it names ends
        (head("id-1"), None),  # not held: a live head (redriven) goes on
        (head("id-9", held=True), None),  # another head: handled already
        (None, None),  # the key is free
    ],
)
def test_a_settle_marker_ends_only_the_held_head_it_names(current, step):
    marker = Marker(MarkerKind.SETTLE, "seq", "id-1", None)
    assert marker_step(marker, current) == step


def test_a_release_marker_is_followed_while_its_record_heads_the_key():
    assert marker_step(release(tries=3), head("id-2")) == Follow(REF, 3)


def test_a_release_marker_read_again_after_its_turn_passed_is_stale():
    assert marker_step(release(), None) is None
    assert marker_step(release(), head("id-9")) is None


def test_a_release_marker_whose_handler_stopped_mid_drain_resumes_at_the_head_it_handed_on():
    # its handler handed the key on to id-3 inline (via id-2) when it stopped: resume there,
    # its tries were id-2's
    assert marker_step(release(tries=3), head("id-3", via="id-2", ref=OTHER)) == Follow(OTHER, 0)
    assert marker_step(release(), head("id-3", via="id-2")) == Follow(None, 0)


def test_a_release_marker_without_a_record_cannot_be_followed():
    assert marker_step(release(None, tries=2), head("id-2")) == Follow(None, 0)
