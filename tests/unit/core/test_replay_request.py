"""A replay window is validated at the edge: times before the epoch or past the year 9999 are a
400 naming the field (they reached the replay and its JSON progress: a 500 on POST, then on every
GET and DELETE of the namespace's replay, found by schemathesis)."""

from __future__ import annotations

import pytest

from walstream.core.replay_request import MAX_TIME_MS, parse_replay_request
from walstream.errors import BadRequestError

NOW = 1_700_000_000_000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"from": "-348416769378305650h", "to": NOW}, "from"),  # long before the epoch
        ({"from": "1032-04-06T19:00:50+15:53", "to": NOW}, "from"),
        ({"from": -1, "to": NOW}, "from"),
        ({"from": 0, "to": 2**64 - 1}, "to"),  # past the year 9999 (and 64 bits, signed)
        ({"from": 0, "to": MAX_TIME_MS + 1}, "to"),
        ({"from": 0, "to": "99999999999999999999999"}, "to"),
    ],
)
def test_a_window_outside_the_epoch_to_the_year_9999_is_refused_naming_the_field(body, field):
    with pytest.raises(BadRequestError) as refused:
        parse_replay_request(body, NOW)
    assert refused.value.field == field


def test_the_window_bounds_themselves_are_accepted():
    request = parse_replay_request({"from": 0, "to": MAX_TIME_MS}, NOW)
    assert (request.from_ms, request.to_ms) == (0, MAX_TIME_MS)
    relative = parse_replay_request({"from": "-2h", "to": "9999-12-31T23:59:59.999Z"}, NOW)
    assert (relative.from_ms, relative.to_ms) == (NOW - 7_200_000, MAX_TIME_MS)
