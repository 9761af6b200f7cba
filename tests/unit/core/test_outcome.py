"""A request of several records is durable TRUE only when all are acked; else its least certain
record's answer."""

from __future__ import annotations

from walstream.core.outcome import request_outcome
from walstream.errors import BrokerUnavailableError, WriteRejectedError, WriteUnknownError


def test_every_record_acked_is_true():
    assert request_outcome([None, None]) is None
    assert request_outcome([]) is None


def test_a_record_that_may_be_on_the_log_makes_the_request_unknown():
    refused = WriteRejectedError("no")
    unknown = WriteUnknownError("timeout")
    assert request_outcome([None, refused, unknown, WriteUnknownError("later")]) is unknown


def test_refusals_only_answer_the_first_refusal_with_its_headers():
    first = BrokerUnavailableError("down", retry_after=3)
    assert request_outcome([None, first, WriteRejectedError("no")]) is first
    assert first.headers() == {"Retry-After": "3"}
