"""The answer to a request written as several records: durable TRUE only once every one is acked.

A mutation request (issue 18) is one or more log records (an operation's chunks, a MutateItems'
operations). Each record's own outcome is the producer's (walstream.kafka.producer, as for
WriteToLog); the request's is the least certain of them: any record that may be on the log makes
it UNKNOWN, else any refused record makes it FALSE. A request answered FALSE may still have put
some of its records on the log: a mutation is applied only once all its records and its marker
are there, and a re-sent one is idempotent, so the client sends it again either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from walstream.errors import WalError

__all__ = ["request_outcome"]


def request_outcome(results: Sequence[WalError | None]) -> WalError | None:
    """None when every record was acked (durable TRUE); else the error to answer: the first
    whose durable is UNKNOWN, or else the first refusal (its status and headers, Retry-After,
    are the answer's)."""
    errors = [error for error in results if error is not None]
    for error in errors:
        if error.durable == "UNKNOWN":
            return error
    return errors[0] if errors else None
