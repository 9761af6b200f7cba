"""The Target protocol: deliver one record, or raise a classified TargetError."""

from __future__ import annotations

from typing import Protocol

from walstream.records import Envelope

__all__ = ["Target", "delivery_headers"]


class Target(Protocol):
    """Something walstream delivers records to.

    ``deliver`` returns when the write is done (or was already done: targets are idempotent on
    the record's idempotency token) and raises TargetUnavailableError (retry) or
    TargetRejectedError (dead-letter) otherwise; it wraps every third-party error in one of them.
    """

    async def deliver(self, envelope: Envelope) -> None: ...

    async def close(self) -> None: ...


def delivery_headers(envelope: Envelope) -> dict[str, str]:
    """What every target passes along with a record: who it is and which version it is."""
    return {
        "Idempotency-Key": envelope.idempotency_token,
        "X-Wal-Id": envelope.id,
        "X-Wal-Namespace": envelope.namespace,
        "X-Wal-Original-Write-Time": str(envelope.lifecycle.original_write_time_ms),
        "X-Wal-Attempt": str(envelope.attempt),
        # when it was due (lifecycle delay and jitter applied): a target can check precision
        "X-Wal-Deliver-At": str(envelope.lifecycle.deliver_at_ms),
    }
