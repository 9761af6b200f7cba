"""Where a region's own fan-out group starts (walstream.core.fanout_start)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from walstream.core.fanout_start import start_offsets


def test_a_group_with_commits_everywhere_is_left_alone() -> None:
    assert start_offsets({0: 5, 1: 9}, {0: 1, 1: 2}, {0: 0, 1: 0}) == {}


def test_a_new_group_starts_where_the_shared_fanout_stands() -> None:
    assert start_offsets({0: None, 1: None}, {0: 40, 1: 17}, {0: 0, 1: 0}) == {0: 40, 1: 17}


def test_a_partition_the_shared_group_has_not_committed_is_pinned_at_its_beginning() -> None:
    assert start_offsets({0: None, 1: None}, {0: 40}, {0: 3, 1: 5}) == {0: 40, 1: 5}


def test_only_partitions_without_a_commit_are_placed() -> None:
    assert start_offsets({0: 3, 1: None, 2: None}, {0: 1, 1: 8}, {2: 0}) == {1: 8, 2: 0}
    assert start_offsets({0: None}, {}, {}) == {}


offsets = st.dictionaries(st.integers(0, 5), st.integers(0, 1_000), max_size=6)


@given(
    st.dictionaries(st.integers(0, 5), st.none() | st.integers(0, 1_000), max_size=6),
    offsets,
    offsets,
)
def test_every_partition_without_a_commit_is_placed_if_it_can_be(own, shared, beginnings) -> None:
    start = start_offsets(own, shared, beginnings)
    for partition, committed in own.items():
        if committed is not None:
            assert partition not in start
        elif partition in shared:
            assert start[partition] == shared[partition]
        elif partition in beginnings:
            assert start[partition] == beginnings[partition]
        else:
            assert partition not in start
    assert set(start) <= set(own)
