"""`make run`'s restart backoff (walstream.core.supervise)."""

from __future__ import annotations

import pytest

from walstream.core.supervise import Restart, RestartPolicy


def test_delays_double_per_exit_in_a_row_up_to_the_cap():
    policy = RestartPolicy(base_s=1.0, cap_s=10.0, stable_s=60.0)
    exits, delays = 0, []
    for _ in range(6):
        restart = policy.after_exit(exits, uptime_s=2.0)
        exits = restart.exits_in_a_row
        delays.append(restart.delay_s)
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert exits == 6


def test_a_child_that_was_up_long_enough_starts_the_count_again():
    policy = RestartPolicy(base_s=1.0, cap_s=30.0, stable_s=60.0)
    assert policy.after_exit(7, uptime_s=60.0) == Restart(delay_s=1.0, exits_in_a_row=1)
    assert policy.after_exit(7, uptime_s=59.0) == Restart(delay_s=30.0, exits_in_a_row=8)


def test_many_exits_stay_at_the_cap_without_overflow():
    policy = RestartPolicy(base_s=0.5, cap_s=30.0)
    assert policy.after_exit(10_000, uptime_s=0.0).delay_s == 30.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_s": 0}, "base_s"),
        ({"base_s": 5, "cap_s": 1}, "cap_s"),
        ({"stable_s": 0}, "stable_s"),
    ],
)
def test_nonsense_policies_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RestartPolicy(**kwargs)
