"""Where a fan-out's new consumer group starts (walstream.core.fanout_start)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from walstream.core.fanout_start import start_offsets


def test_a_group_with_commits_everywhere_is_left_alone() -> None:
    assert start_offsets({0: 5, 1: 9}, [{0: 1, 1: 2}]) == {}


def test_a_new_group_starts_where_the_old_single_fanout_stood() -> None:
    assert start_offsets({0: None, 1: None}, [{0: 40, 1: 17}]) == {0: 40, 1: 17}


def test_it_starts_at_the_lowest_commit_of_the_groups_given() -> None:
    others = [{0: 40, 1: 17}, {0: 35}, {1: 30}]
    assert start_offsets({0: None, 1: None}, others) == {0: 35, 1: 17}


def test_only_partitions_without_a_commit_are_started_and_none_without_any_other_commit() -> None:
    assert start_offsets({0: 3, 1: None, 2: None}, [{0: 1, 1: 8}]) == {1: 8}
    assert start_offsets({0: None}, []) == {}


offsets = st.dictionaries(st.integers(0, 5), st.integers(0, 1_000), max_size=6)


@given(
    st.dictionaries(st.integers(0, 5), st.none() | st.integers(0, 1_000), max_size=6),
    st.lists(offsets, max_size=4),
)
def test_no_partition_starts_past_any_other_group_s_commit(own, others) -> None:
    start = start_offsets(own, others)
    for partition, offset in start.items():
        assert own[partition] is None
        held = [commits[partition] for commits in others if partition in commits]
        assert offset == min(held)
    for partition, committed in own.items():
        if committed is None and any(partition in commits for commits in others):
            assert partition in start
