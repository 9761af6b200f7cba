"""What ``GET /v1/namespaces/{ns}/mutations/{txn_id}`` reports of a transaction (pure).

``open`` (waiting for operations or its marker), ``committing`` (complete; ``progress`` seqs
applied), ``committed`` (its tombstone, within the idempotency window) or ``dead_lettered``
(with the reason, the progress and the missing seqs); None: walstream knows no such
transaction (never seen, or committed longer ago than the window).
"""

from __future__ import annotations

from typing import Any

from walstream.core.mutations.commit import Tombstone, leftover
from walstream.core.mutations.state import TxnState

__all__ = ["txn_status"]


def txn_status(state: TxnState | None, tombstone: Tombstone | None) -> dict[str, Any] | None:
    """The JSON body describing a transaction from its table rows (a state beside a tombstone:
    a commit's leftover, reported committed, or a transaction opened under the txn id once the
    tombstone's window ended, ``commit.leftover``: reported as itself)."""
    if tombstone is not None and (state is None or leftover(state, tombstone)):
        return {
            "status": "committed",
            "committed_at_ms": tombstone.committed_at_ms,
            "operations": tombstone.op_count,
        }
    if state is None:
        return None
    body: dict[str, Any] = {
        "operations": state.count,
        "received": sum(slot.whole for slot in state.slots.values()),
        "progress": state.next_seq,
        "missing": list(state.missing()),
        "opened_at_ms": state.opened_at_ms,
    }
    if state.dead is not None:
        return {"status": "dead_lettered", "reason": state.dead, **body}
    return {"status": "committing" if state.complete() else "open", **body}
