"""A replay's ``resume_from`` must name a place of its log: a partition it has, an offset up to
that partition's end (walstream.core.replay.cursor_refusal, checked when the replay starts)."""

from __future__ import annotations

from walstream.core.replay import cursor_refusal, partition_refusal

ENDS = {0: 10, 1: 0, 2: 7}


def test_a_cursor_of_the_log_is_taken_up_to_each_partitions_end():
    assert cursor_refusal({0: 3}, ENDS) is None
    assert cursor_refusal({0: 10, 1: 0, 2: 0}, ENDS) is None  # at the end: nothing left


def test_a_partition_the_log_does_not_have_is_named():
    refusal = cursor_refusal({0: 1, 99: 5}, ENDS)
    assert refusal == "names partition 99, which the log does not have (it has partitions 0-2)"
    assert "(it has no partitions)" in (cursor_refusal({0: 0}, {}) or "")


def test_an_offset_past_its_partitions_end_is_named():
    refusal = cursor_refusal({0: 11, 1: 0, 2: 9}, ENDS)
    assert refusal == (
        "names an offset past its partition's end: 0:11 (it ends at 10), 2:9 (it ends at 7)"
    )


def test_the_api_refuses_a_partition_past_the_deployments_count():
    assert partition_refusal({0: 5, 3: 1}, range(4)) is None
    assert partition_refusal({4: 0, 99: 5}, range(4)) == (
        "names partition 4, 99, which the log does not have (it has partitions 0-3)"
    )
