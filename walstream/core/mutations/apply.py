"""Applying an operation to the kv target: its idempotency token, version and record (pure).

The kv target orders writes by ``walstream.core.lww.Version`` (original write time, then the
idempotency token, compared bytewise) and ignores a write whose token the row already holds; an
operation is applied through the same target with the same rule, so nothing here ranks writes
a second way. What this module decides is which version an operation carries:

* token ``mut:<namespace>:<txn_id>:<seq, 8 digits>``: derived, so a resumed commit re-applies
  an operation with the token the row may already hold (a duplicate, no change); unique across
  namespaces and transactions (neither name holds a ``:``); the zero-padded seq makes tokens of
  one transaction sort in seq order, so among its operations on one key with one write time,
  the highest seq wins, as applying them in order does.
* write time: the operation's ``original_write_time`` when the client gave one, else the time
  the API accepted the transaction's first completion marker (``TxnState.marked_at_ms``): one
  time for the whole transaction, kept in its state, so a resume after a crash or a failure
  carries the same versions, and a transaction completed later wins over one completed earlier.
  A client giving its own times to operations of one key out of seq order gets last-write-wins
  by those times, as for any write.
"""

from __future__ import annotations

import base64
from typing import Any

from walstream.core.lww import Version
from walstream.core.mutations.request import Operation
from walstream.core.mutations.state import TxnState
from walstream.records import Envelope, Lifecycle

__all__ = ["TOKEN_PREFIX", "kv_envelope", "kv_target", "op_token", "op_version"]

TOKEN_PREFIX = "mut"  # noqa: S105 - a token prefix, not a secret


def op_token(namespace: str, txn_id: str, seq: int) -> str:
    """The idempotency token of operation ``seq`` of ``txn_id`` in ``namespace``."""
    return f"{TOKEN_PREFIX}:{namespace}:{txn_id}:{seq:08d}"


def op_version(state: TxnState, seq: int, op: Operation) -> Version:
    """The last-write-wins version operation ``seq`` carries.

    Raises:
        ValueError: no write time: neither the operation's nor a marker's.
    """
    owt = op.original_write_time_ms or state.marked_at_ms
    if owt is None:
        raise ValueError("no write time: the transaction has no marker")
    return Version(owt, op_token(state.namespace, state.txn_id, seq))


def kv_target(op: Operation) -> dict[str, Any]:
    """The kv target an operation writes (the API checks it against the namespace's policy)."""
    return {"type": "kv", "table": op.table, "key": op.id, "op": op.op}


def kv_envelope(state: TxnState, seq: int, op: Operation, *, now_ms: int) -> Envelope:
    """The record the kv target applies for operation ``seq`` (its ``deliver``): the value as
    base64 bytes (a delete: none), its version in the lifecycle and the token."""
    version = op_version(state, seq, op)
    value = base64.b64encode(op.value).decode("ascii") if op.value is not None else None
    return Envelope(
        id=version.idempotency_token,
        namespace=state.namespace,
        key=None,
        payload=value,
        payload_encoding="base64" if value is not None else "json",
        target=kv_target(op),
        lifecycle=Lifecycle(deliver_at_ms=now_ms, original_write_time_ms=version[0]),
        idempotency_token=version.idempotency_token,
        created_at_ms=now_ms,
    )
