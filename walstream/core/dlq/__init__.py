"""The dead-letter queue's records and the view folded from them (pure; no I/O).

A namespace's DLQ topic holds two kinds of records, both keyed by the record id:

* an **entry**: the dead record's value as it was (the envelope with its whole attempt history,
  or a poison record's raw bytes), with headers saying why, from where (``wal-source``:
  ``topic[partition]@offset``), after how many attempts, its namespace and its key (``wal-key``,
  the key it is ordered by). An entry the broker refused with the record in it has no value: its
  headers alone name the record (where it stays, at its source) and the key it may hold;
* a **marker**: the entry was redriven or discarded (the topic is append-only, like the log).

An entry is open until the marker that names it closes it. A marker names the exact entry it
closes (``wal-closes: <partition>@<offset>``) and is written on that entry's partition, so it
always follows its entry, whatever order a reader sees the partitions in: a redriven keyless
record that dies again lands on any partition, and its new entry is a new open entry, never
closed by the marker of the earlier one. A marker from before ``wal-closes`` closes the latest
open entry of its id at a lower offset of its own partition (where markers were always written),
never a later one. Every reader (listings, redrives, the open-entries gauge) folds by these
rules, so every read of a DLQ shows the same open entries.

A DLQ may hold millions of entries of up to a megabyte each, so listings and redrives read it in
two passes: ``DlqIndex`` folds the topic keeping only each open entry's coordinates (id, death
time, error class, partition, offset; no value, no reason), then the entries of one page are
read back by offset. What is held at once is one page of records plus ~100 bytes per open
entry. Pages follow the listing order (oldest death first) and resume after a ``DlqCursor``.

Modules: ``records`` (the records and their headers), ``open_entries`` (the fold: OpenEntries,
DlqView, DlqTally), ``index`` (DlqIndex, DlqRef, DlqCursor), ``selection`` (Selection and its
parsing), ``claims`` (ClaimFold), ``mutations`` (entries of multi-partition mutations: how
they show, the marker that redrives a transaction). Import from ``walstream.core.dlq``.
"""

from __future__ import annotations

from walstream.core.dlq.claims import ClaimFold
from walstream.core.dlq.index import DlqCursor, DlqIndex, DlqRef
from walstream.core.dlq.mutations import (
    DEAD_TRANSACTION_CLASSES,
    SET_MISMATCH_CLASS,
    TRANSACTION_CLASSES,
    TXN_RECORD_PREFIX,
    MarkerRedrive,
    dead_transaction,
    describe_mutation,
    entry_marker,
    expiry_marker,
    missing_seqs,
    redrive_marker,
    transaction_class,
    transaction_entry,
)
from walstream.core.dlq.open_entries import DlqTally, DlqView, OpenEntries
from walstream.core.dlq.records import CLAIM_KEY as CLAIM_KEY
from walstream.core.dlq.records import CLAIM_PARTITION as CLAIM_PARTITION
from walstream.core.dlq.records import (
    Claim,
    DlqEntry,
    Marker,
    MarkerKind,
    claim_headers,
    entry_headers,
    expiry_header,
    marker_headers,
    mutation_header,
    parse_dlq_record,
    parse_source,
)
from walstream.core.dlq.selection import Selection, parse_selection

__all__ = [
    "DEAD_TRANSACTION_CLASSES",
    "SET_MISMATCH_CLASS",
    "TRANSACTION_CLASSES",
    "TXN_RECORD_PREFIX",
    "Claim",
    "ClaimFold",
    "DlqCursor",
    "DlqEntry",
    "DlqIndex",
    "DlqRef",
    "DlqTally",
    "DlqView",
    "Marker",
    "MarkerKind",
    "MarkerRedrive",
    "OpenEntries",
    "Selection",
    "claim_headers",
    "dead_transaction",
    "describe_mutation",
    "entry_headers",
    "entry_marker",
    "expiry_header",
    "expiry_marker",
    "marker_headers",
    "missing_seqs",
    "mutation_header",
    "parse_dlq_record",
    "parse_selection",
    "parse_source",
    "redrive_marker",
    "transaction_class",
    "transaction_entry",
]
