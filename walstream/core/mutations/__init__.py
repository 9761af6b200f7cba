"""Multi-partition mutations (issue 18): a MutateItems applied in seq order, once. Pure parts.

Design of the whole feature; this package holds its decisions, the wiring is the API's and the
worker's (``walstream.api``, ``walstream.agents``), which only move bytes to and from them.

1. **API** (``request``). ``POST /v1/namespaces/{ns}/mutations/{txn_id}/{seq}`` (one
   operation), ``.../mutations/{txn_id}:complete`` (``{"count": n}``) and ``.../mutations``
   (a whole MutateItems: ``{"txn_id", "operations": [...]}``, operation i is seq i) parse into
   ``Operation`` / a count / ``MutateItems`` or raise BadRequestError naming the field (413 past
   ``MutationLimits``: 1,000 operations and 16 MiB a transaction by default, the limit a
   setting). The API also checks each operation's ``kv_target`` against the namespace's target
   policy (403), then writes: each operation as ``chunks.op_chunks`` records (one per chunk of
   ``chunk_bytes``; a value up to it: one) to ``wal.<ns>.mutations``, and a ``Marker``
   (``at_ms`` now) to ``wal.<ns>.markers``; every record keyed by the txn id's UTF-8 bytes.
   A MutateItems is ``chunks.items_records`` (its marker names the operation set's digest),
   its marker written once its operations are acked. Answers: durable TRUE / FALSE / UNKNOWN
   as WriteToLog, once the broker acked every record of the request (acks=all). The outbox
   (walstream.core.outbox) gets the builders of these records (topic, partition, key, value).
2. **Co-partitioning.** Both topics have the same partition count and the same key, so one
   transaction's records sit on partition P of each. Faust assigns topics of one partition
   count that the same workers subscribe to together (``faust/assignor/partition_assignor.py``
   ``_get_copartitioned_groups``), and writes a table row to the changelog partition of the
   record being handled (``faust/tables/base.py`` ``partition_for_key``: ``return
   event.message.partition``, after ``_verify_source_topic_partitions`` checked the source
   topic has the changelog's count). So the worker owning P owns the transaction's records,
   rows and changelog partition; one table for every namespace needs every namespace's
   mutation topics at the table's partition count (one setting), or a table per namespace.
   Operations sent by different API processes meet there; only markers drive the commit.
3. **Table state** (``state``, ``keys``). One Faust table (its changelog is the durable store)
   holds, per transaction: a small ``TxnState`` (``keys.state_key``: slots of digests and
   chunk bits, the marker's count, progress), each chunk's record (``keys.chunk_key``), and once
   committed a ``Tombstone`` (``keys.tombstone_key``). Every row is written while an agent
   handles a record keyed by the txn id, so Faust puts it on that partition of the changelog.
   An agent on ``wal.<ns>.mutations`` calls ``commit.on_chunk``: it stores the chunk, or drops
   a duplicate, or dead-letters a conflict (another operation for a seq) or a refusal (past a
   limit); the first record of a transaction also sends its deadline wake.
4. **Commit agent** on ``wal.<ns>.markers`` calls ``commit.on_marker``. ``Apply(from_seq)``:
   for each seq from there, read its chunks, ``chunks.reassemble`` (order, count, size and
   digest checked), ``apply.kv_envelope`` to the kv target's ``deliver`` (the kv target's own
   last-write-wins: a token per operation, the transaction's write time), then
   ``state.applied(seq)`` written to the table before the next seq. A failure:
   ``commit.after_failure``. ``Requeue``: send ``commit.wake_marker`` through the delay tiers
   (walstream.core.outbox ``wait`` to the markers topic, partition P). Agents never raise:
   a record that does not decode (PoisonRecordError) goes to the DLQ, the stream goes on.
   ``DeadLetter``: a DLQ entry naming the missing seqs or the progress; the state stays, and a
   redriven marker (``redrive`` + 1) resumes from the first unapplied seq.
5. **Commit.** Once ``state.done()``: ``commit.committed`` gives the tombstone that replaces
   the state (its chunk rows deleted: ``keys.chunk_keys``) and a ``Forget`` record sent through
   the delay tiers, due when the idempotency window (>= 24 h) ends; ``commit.on_forget`` drops
   the tombstone then. Within the window a re-sent operation is ignored and a re-sent marker
   answered ``AlreadyCommitted`` (``Reject``: another operation set or count under that txn
   id). The
   table holds open and dead-lettered transactions and the window's tombstones; expiry is
   driven by records on the log, so nothing scans the table, and nothing is held in memory.

``status.txn_status`` is what ``GET .../mutations/{txn_id}`` answers from those rows.

seq is 0-based; progress n means seqs below n are applied. A transaction's changelog rows are
one per chunk plus one state record per update (~70 bytes an operation: ``wire.OPERATIONS_CAP``
keeps it one record).
"""

from __future__ import annotations

from walstream.core.mutations import apply, chunks, commit, keys, request, state, status, wire
from walstream.core.mutations.apply import *  # noqa: F403 - the package is its parts
from walstream.core.mutations.chunks import *  # noqa: F403
from walstream.core.mutations.commit import *  # noqa: F403
from walstream.core.mutations.keys import *  # noqa: F403
from walstream.core.mutations.request import *  # noqa: F403
from walstream.core.mutations.state import *  # noqa: F403
from walstream.core.mutations.status import *  # noqa: F403
from walstream.core.mutations.wire import *  # noqa: F403

__all__ = [
    *apply.__all__,
    *chunks.__all__,
    *commit.__all__,
    *keys.__all__,
    *request.__all__,
    *state.__all__,
    *status.__all__,
    *wire.__all__,
]
