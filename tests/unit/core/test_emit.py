"""walstream.core.emit: which failed worker writes are given up, and when."""

from __future__ import annotations

import pytest

from walstream.core.emit import Refuse, Retry, after_emit_failure, past_grace

GRACE = 60_000


@pytest.mark.parametrize(
    "error",
    [
        "TopicAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
        "PolicyViolationError",
        "InvalidTimestampError",
        "CorruptRecordException",
        "MessageSizeTooLargeError",
        "InvalidTopicError",
    ],
)
@pytest.mark.parametrize("last_resort", [False, True])
def test_permanent_errors_are_refused_at_once(error, last_resort):
    verdict = after_emit_failure(
        error, failing_since_ms=0, now_ms=0, grace_ms=GRACE, last_resort=last_resort
    )
    assert verdict == Refuse(error)


@pytest.mark.parametrize("error", ["UnknownTopicOrPartitionError", "KafkaTimeoutError"])
def test_a_missing_destination_is_refused_only_past_its_grace_and_only_if_confirmed(error):
    def verdict(now, missing, last=False, grace=GRACE):
        return after_emit_failure(
            error,
            failing_since_ms=1_000,
            now_ms=now,
            grace_ms=grace,
            last_resort=last,
            destination_missing=missing,
        )

    assert verdict(1_000 + GRACE - 1, True) == Retry()  # within the grace
    refused = verdict(1_000 + GRACE, True)
    assert isinstance(refused, Refuse)
    assert refused.reason.startswith(f"{error}: the topic does not exist")
    assert verdict(1_000 + GRACE, False) == Retry(stuck=True)  # it exists: something else
    assert verdict(1_000 + GRACE, None) == Retry(stuck=True)  # no answer: an outage
    assert verdict(10**9, True, last=True) == Retry(stuck=True)  # a DLQ: never given up
    assert verdict(10**9, True, grace=None) == Retry()  # no grace: the old behaviour


@pytest.mark.parametrize("error", ["NotLeaderForPartitionError", "KafkaConnectionError", "OSError"])
def test_other_errors_are_retried_for_as_long_as_they_last(error):
    verdict = after_emit_failure(
        error, failing_since_ms=0, now_ms=10**9, grace_ms=GRACE, last_resort=False,
        destination_missing=True,
    )  # fmt: skip
    assert verdict == Retry()
    assert not past_grace(error, 0, 10**9, GRACE)
