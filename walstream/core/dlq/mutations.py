"""DLQ entries of multi-partition mutations (issue 18, pure): what they are, how a listing shows
them, and the marker that redrives a dead-lettered transaction.

The commit agent dead-letters a whole transaction (its operations never all arrived, or its
apply gave up) as an entry whose value is the transaction's completion marker
(``walstream.core.mutations.wire.encode_marker``), record id ``txn.<txn id>``, header
``wal-mutation: marker`` and error class ``mutation_incomplete`` or ``mutation_apply_failed``
(redrivable), or ``mutation_set_mismatch`` (its operations are not the set its marker names: a
redrive finds the same mismatch, so it is only discarded); its state stays in the table. A
single bad record (an undecodable one, a conflict, a refusal, a rejected marker) is an entry
of its own bytes with header ``wal-mutation: op`` (or ``marker``) and its own error class.
Neither is an Envelope: readers ask here first.

Redriving a transaction entry sends its marker again to the namespace's markers topic, keyed by
the txn id (so on the partition holding its state), with ``redrive`` one more than the entry's:
the commit agent then revives the dead-lettered state and resumes from its first unapplied seq
(``walstream.core.mutations.commit.on_marker``). Other mutation entries are not redrivable,
a set mismatch's included.

Discarding a transaction entry sends its expiry wake at once (``expiry_marker``): the wake the
commit agent sent itself when it dead-lettered the transaction, due when the idempotency window
ends (``walstream.core.mutations.commit.expiry``), whose id the entry names (header
``wal-mutation-expiry``). The agent drops the transaction's rows on it (``commit.expired``)
unless a redrive revived it meanwhile; its own copy, due later, then finds nothing to drop.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

from walstream.core.dlq.records import DlqEntry
from walstream.core.mutations.commit import SET_MISMATCH, DeadLetter
from walstream.core.mutations.wire import Marker, decode_marker, encode_marker
from walstream.errors import PoisonRecordError

__all__ = [
    "DEAD_TRANSACTION_CLASSES",
    "SET_MISMATCH_CLASS",
    "TRANSACTION_CLASSES",
    "TXN_RECORD_PREFIX",
    "MarkerRedrive",
    "dead_transaction",
    "describe_mutation",
    "entry_marker",
    "expiry_marker",
    "missing_seqs",
    "redrive_marker",
    "transaction_class",
    "transaction_entry",
]

#: The error classes of a dead-lettered transaction (its state kept, a redrive resumes it).
TRANSACTION_CLASSES = frozenset({"mutation_incomplete", "mutation_apply_failed"})
#: The error class of a transaction whose operations are not the set its marker names
#: (``commit.SET_MISMATCH``): its state kept, but a redrive finds the same mismatch.
SET_MISMATCH_CLASS = "mutation_set_mismatch"
#: The error classes of every dead-lettered transaction (shown as one, discarded as one).
DEAD_TRANSACTION_CLASSES = TRANSACTION_CLASSES | {SET_MISMATCH_CLASS}
#: A transaction entry's record id is this prefix and its txn id.
TXN_RECORD_PREFIX = "txn."
_MISSING = re.compile(r"missing seqs \[([0-9, ]*)(\]?)")


class MarkerRedrive(NamedTuple):
    """What redriving a transaction entry sends: ``value`` keyed by ``key`` (the txn id's UTF-8
    bytes, placed by the default partitioner) to the namespace's markers topic."""

    key: bytes
    value: bytes
    marker: Marker


def transaction_class(dead: DeadLetter, error_class: str) -> str:
    """The error class of the DLQ entry of a transaction dead-lettered by ``dead``:
    ``SET_MISMATCH_CLASS`` for a set mismatch, else ``error_class`` (the agent's:
    ``mutation_incomplete`` or ``mutation_apply_failed``)."""
    return SET_MISMATCH_CLASS if dead.kind == SET_MISMATCH else error_class


def transaction_entry(entry: DlqEntry) -> bool:
    """Whether ``entry`` is a dead-lettered transaction redrivable as one."""
    return entry.mutation == "marker" and entry.error_class in TRANSACTION_CLASSES


def dead_transaction(entry: DlqEntry) -> bool:
    """Whether ``entry`` is a dead-lettered transaction, redrivable or not (a set mismatch)."""
    return entry.mutation == "marker" and entry.error_class in DEAD_TRANSACTION_CLASSES


def missing_seqs(reason: str) -> list[int]:
    """The seqs a transaction entry's reason names as missing (none: it names none). A reason
    cut short (a DLQ entry keeps its first 4 KiB) gives the seqs it names whole."""
    found = _MISSING.search(reason)
    if found is None:
        return []
    named = found.group(1).replace(" ", "")
    parts = [part for part in named.split(",") if part]
    if not found.group(2) and not named.endswith(",") and parts:
        parts.pop()  # cut short inside a number: it may be cut too
    return [int(part) for part in parts]


def describe_mutation(entry: DlqEntry) -> dict[str, Any] | None:
    """What a listing adds for a mutation entry (None: not one): ``kind`` (``transaction``, or
    ``operation`` / ``marker`` for a single bad record), and for a transaction its ``txn_id``
    and the ``missing`` seqs its reason names. Read from the headers, id and reason only (a
    listing holds no values)."""
    if entry.mutation is None:
        return None
    if dead_transaction(entry):
        return {
            "kind": "transaction",
            "txn_id": entry.id.removeprefix(TXN_RECORD_PREFIX),
            "missing": missing_seqs(entry.reason),
        }
    return {"kind": "operation" if entry.mutation == "op" else entry.mutation}


def entry_marker(value: bytes | None) -> Marker:
    """The marker a mutation's entry holds.

    A transaction dead-lettered before its completion marker came holds count 0 and no wake,
    which ``decode_marker`` refuses when its redrive is 0 (a client's marker counts at least one
    operation): it is read as a deadline wake's, every other field re-checked.

    Raises:
        PoisonRecordError: not a completion marker.
    """
    countless = False
    try:
        decoded = decode_marker(value)
    except PoisonRecordError:
        try:
            obj = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            raise PoisonRecordError("not a mutation marker: undecodable") from None
        if not isinstance(obj, dict) or obj.get("kind") != "marker":
            raise
        if obj.get("count") != 0 or "wake" in obj:
            raise
        decoded = decode_marker(orjson.dumps({**obj, "wake": 1}))
        countless = True
    if not isinstance(decoded, Marker):
        raise PoisonRecordError("not a mutation marker: a forget record")
    return decoded._replace(wake=0) if countless else decoded


def _marker_of(entry: DlqEntry) -> Marker:
    """The marker of the transaction entry ``entry`` (it must name that transaction)."""
    marker = entry_marker(entry.value)
    txn_id = entry.id.removeprefix(TXN_RECORD_PREFIX)
    if marker.txn_id != txn_id or marker.namespace != entry.namespace:
        raise PoisonRecordError(
            f"the entry's marker names {marker.namespace}/{marker.txn_id}, "
            f"not {entry.namespace}/{txn_id}"
        )
    return marker


def redrive_marker(entry: DlqEntry) -> MarkerRedrive:
    """The marker that redrives the transaction ``entry`` dead-lettered: the entry's, with
    ``redrive`` + 1 and as a client's (wake 0). One whose count is 0 (no completion marker came)
    goes so too: ``decode_marker`` reads count 0 with wake 0 when ``redrive`` > 0 (a client's
    marker counts at least one). Never as a wake: a wake that finds no state is ignored (its
    transaction is gone), a redrive revives the state.

    Raises:
        PoisonRecordError: not a transaction entry, or its value is not a marker of the
            transaction it names.
    """
    if dead_transaction(entry) and not transaction_entry(entry):
        raise PoisonRecordError(
            f"a transaction dead-lettered for an operation set mismatch ({entry.error_class}) is "
            "not redrivable: a redrive finds the same mismatch (a seq's operation is never "
            "replaced): discard it"
        )
    if not transaction_entry(entry):
        what = describe_mutation(entry)
        kind = what["kind"] if what is not None else "record"
        raise PoisonRecordError(
            f"a mutation {kind} entry ({entry.error_class}) is not redrivable: "
            "only a dead-lettered transaction is"
        )
    marker = _marker_of(entry)
    redriven = marker._replace(redrive=marker.redrive + 1, wake=0)
    return MarkerRedrive(marker.txn_id.encode(), encode_marker(redriven), redriven)


def expiry_marker(entry: DlqEntry) -> MarkerRedrive | None:
    """The expiry wake of the transaction ``entry`` dead-lettered, to send at once (keyed by the
    txn id, to the namespace's markers topic) when the entry is discarded: the marker
    ``commit.wake_marker`` built for the state's ``commit.expiry`` (the entry's marker, as a
    wake: the id its ``wal-mutation-expiry`` header names, no digest). None: not a transaction's
    entry, or one naming no expiry wake (written before the header: its rows go when its own
    wake comes).

    Raises:
        PoisonRecordError: its value is not a marker of the transaction it names.
    """
    if entry.mutation != "marker" or entry.expiry_wake is None:
        return None
    if not entry.id.startswith(TXN_RECORD_PREFIX):
        return None
    marker = _marker_of(entry)
    wake = Marker(
        namespace=marker.namespace,
        txn_id=marker.txn_id,
        op_count=marker.op_count,
        at_ms=marker.at_ms,
        wake=entry.expiry_wake,
        redrive=marker.redrive,
    )
    return MarkerRedrive(wake.txn_id.encode(), encode_marker(wake), wake)
