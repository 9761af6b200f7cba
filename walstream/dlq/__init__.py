"""DLQ operations: read a namespace's DLQ, redrive entries to its log, discard them.

Redrive republishes each selected entry to the namespace's log as it was (same id, token, key,
payload, original write time) with attempts reset and its history kept, then appends a
``redriven`` marker so the entry is no longer open. Log first, marker second: a crash in between
leaves the entry open, and redriving it again delivers it twice, which targets absorb (they are
idempotent on the token).

One redrive per namespace at a time, across processes: a redrive first appends a **claim** to
partition 0 of the DLQ topic, then reads the topic (its index pass); if an earlier claim there is
still live (not released, renewed within its lease), it releases its own and fails with 409. A
running redrive renews its claim every third of ``CLAIM_LEASE_MS`` and releases it when it ends;
a redrive whose process died holds the namespace for one lease at most.

Modules: ``reading`` (DlqReader, read_dlq), ``redriving`` (redrive), ``closing`` (discard and the
markers that close an entry or settle its key), ``redrives`` (Redrives and claimed_dlq: claimed
redrives), ``access`` (DlqAccess for the HTTP API, entry_json), ``kafka_io`` (client timeouts,
sending, a silent broker as a 503), ``regions`` (a replicated namespace's region DLQs). Import
from ``walstream.dlq``.
"""

from __future__ import annotations

from walstream.dlq.access import DlqAccess, entry_bytes, entry_json
from walstream.dlq.closing import discard
from walstream.dlq.kafka_io import unavailable_broker
from walstream.dlq.reading import DEFAULT_PAGE, DlqPage, DlqReader, flatten, read_dlq
from walstream.dlq.redrives import CLAIM_LEASE_MS, Redrives, claimed_dlq
from walstream.dlq.redriving import RedriveProgress, RedriveState, redrive, source_reader
from walstream.dlq.regions import RegionDlq, region_dlq

__all__ = [
    "CLAIM_LEASE_MS",
    "DEFAULT_PAGE",
    "DlqAccess",
    "DlqPage",
    "DlqReader",
    "RedriveProgress",
    "RedriveState",
    "Redrives",
    "RegionDlq",
    "claimed_dlq",
    "discard",
    "entry_bytes",
    "entry_json",
    "flatten",
    "read_dlq",
    "redrive",
    "region_dlq",
    "source_reader",
    "unavailable_broker",
]
