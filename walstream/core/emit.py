"""What the worker does when one of its own writes (a retry copy, a delay hop, a DLQ entry, an
ordering marker) fails: pure, no I/O (``walstream.agents.emit`` does the sending).

* A **refusal** no wait changes: the record is over a size limit, the topic name is invalid, the
  cluster does not let the worker write there (topic or cluster authorization), a broker policy
  refuses it, its timestamp or record is invalid. The write is given up at once
  (``EmitRefusedError``): the record goes to its DLQ, or, a DLQ entry refused, without its
  record, else it stays at its source (the deliverer's fallbacks).
* A **missing destination**: the topic is unknown, or sends to it time out (on a cluster without
  topic auto-creation a deleted topic looks like that). Retried, but not forever: once a
  destination has failed so for ``grace_ms`` and the cluster's metadata, freshly read, says it
  does not exist, the write is refused (its key and its partition's commit are not pinned for
  good). A cluster that does not answer at all is an outage, not a missing topic: retried for
  as long as it lasts. A write to a DLQ (the last resort) is never given up for a missing
  destination: it is retried, loudly.
* Anything else (a broker away, a leader moving, a full accumulator) is retried for as long as
  it lasts.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DESTINATION_ERRORS",
    "REFUSALS",
    "Refuse",
    "Retry",
    "after_emit_failure",
    "past_grace",
]

#: Errors (class names) saying the record can never be written to the topic.
REFUSALS = frozenset(
    {
        "MessageSizeTooLargeError",
        "RecordListTooLargeError",
        "RecordTooLargeError",
        "InvalidTopicError",
        "TopicAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
        "TransactionalIdAuthorizationFailed",
        "PolicyViolationError",
        "InvalidTimestampError",
        "CorruptRecordException",
        "InvalidRecordError",
        "InvalidRequiredAcksError",
    }
)

#: Errors (class names) a missing destination topic shows as (also an outage's, at first).
DESTINATION_ERRORS = frozenset({"UnknownTopicOrPartitionError", "KafkaTimeoutError"})


@dataclass(frozen=True, slots=True)
class Refuse:
    """Give the write up: ``EmitRefusedError(reason)``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Retry:
    """Send it again after the backoff; ``stuck``: a destination failing past its grace that is
    kept trying anyway (a DLQ, or a cluster that does not answer): log it loudly."""

    stuck: bool = False


def past_grace(error: str, failing_since_ms: int, now_ms: int, grace_ms: int | None) -> bool:
    """Whether a destination failing with ``error`` since ``failing_since_ms`` is past its grace
    (then the caller reads the cluster's metadata: does the topic exist?)."""
    return (
        grace_ms is not None
        and error in DESTINATION_ERRORS
        and now_ms - failing_since_ms >= grace_ms
    )


def after_emit_failure(
    error: str,
    *,
    failing_since_ms: int,
    now_ms: int,
    grace_ms: int | None,
    last_resort: bool,
    destination_missing: bool | None = None,
) -> Refuse | Retry:
    """What to do with a write that failed with ``error`` (its class name).

    Args:
        error: the error's class name (the cause, for an error Faust wrapped).
        failing_since_ms: since when the write's destination has been failing with a
            destination error (this write's first failure, or an earlier write's to the same
            topic).
        now_ms: the time now.
        grace_ms: how long a missing destination is tried before the write is given up
            (None: forever, the old behaviour).
        last_resort: the write is a DLQ entry: never given up for a missing destination.
        destination_missing: what the cluster's metadata, read after the grace, says: True the
            topic does not exist, False it does, None the cluster did not answer (or not read).
    """
    if error in REFUSALS:
        return Refuse(error)
    if not past_grace(error, failing_since_ms, now_ms, grace_ms):
        return Retry()
    if last_resort or destination_missing is not True:
        return Retry(stuck=True)
    return Refuse(
        f"{error}: the topic does not exist (failing for {now_ms - failing_since_ms} ms, "
        f"grace {grace_ms} ms)"
    )
