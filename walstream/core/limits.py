"""Limits: in-flight writes, and how large a record the API (and the replicating client) may accept.

Every record the API accepts must be re-producible by the worker after it failed, with its
history and its DLQ headers: the worker's producer refuses requests over
WALSTREAM_PRODUCER_MAX_REQUEST_BYTES, so the API refuses (413) an encoded record over that less
the history bound and a fixed allowance for what the worker adds.
"""

from __future__ import annotations

from collections.abc import Callable

from walstream.errors import PayloadTooLargeError

__all__ = [
    "WORKER_ALLOWANCE_BYTES",
    "InFlightLimiter",
    "check_record_size",
    "max_record_bytes",
    "record_too_large",
]

#: What the worker adds to a record besides its history: envelope fields (attempt, not_before_ms,
#: first_attempt_ms, redrive, the history key), the record id as a DLQ key, a DLQ entry's headers
#: (reason <= 4 KiB, up to 1,000 ids of records waiting behind it ~ 33 KiB, the rest < 1 KiB),
#: delay headers, and the record batch's framing (~ 70 bytes).
WORKER_ALLOWANCE_BYTES = 48 * 1024


def max_record_bytes(producer_max_request_bytes: int, history_max_bytes: int) -> int:
    """The largest encoded record (key + value) the API accepts.

    Args:
        producer_max_request_bytes: the worker's producer limit (aiokafka ``max_request_size``).
        history_max_bytes: the bound of a record's encoded history.
    """
    return producer_max_request_bytes - history_max_bytes - WORKER_ALLOWANCE_BYTES


def record_too_large(size: int, limit: int) -> str:
    """The refusal's message by default (WriteToLog's)."""
    return f"the record is {size} bytes encoded, over the limit of {limit}"


def check_record_size(
    key: bytes | None,
    value: bytes | None,
    limit: int,
    *,
    field: str = "payload",
    message: Callable[[int, int], str] = record_too_large,
) -> None:
    """Refuse a record for the log the worker could not write again with its history: one whose
    encoded key and value are over ``limit`` (``max_record_bytes``). The API's WriteToLog and
    the replicating client (``walstream.replication``) both check with it.

    Args:
        key: the record's key (None: none).
        value: its value (None: none).
        limit: the largest size accepted, in bytes.
        field: the request field the error names.
        message: the error's message from (size, limit).

    Raises:
        PayloadTooLargeError: over the limit (413), naming ``field``.
    """
    size = (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
    if size > limit:
        raise PayloadTooLargeError(field, message(size, limit))


class InFlightLimiter:
    """A non-blocking counting limiter: a caller over the limit is refused at once, never queued.

    Queueing would turn overload into latency and then into timeouts (durable=UNKNOWN); refusing
    gives the client a definite durable=FALSE it can retry.
    """

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("limit must be > 0")
        self.limit = limit
        self.in_flight = 0

    def try_acquire(self, n: int = 1) -> bool:
        """Take ``n`` slots if all are free; return whether they were taken."""
        if self.in_flight + n > self.limit:
            return False
        self.in_flight += n
        return True

    def release(self, n: int = 1) -> None:
        self.in_flight -= n
        if self.in_flight < 0:
            raise RuntimeError("released more slots than were acquired")
