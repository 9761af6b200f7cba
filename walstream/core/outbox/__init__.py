"""The outbox: every record walstream writes besides a new write, and the wire protocol's reference.

Stages decide, the outbox builds, the caller only sends: the API, the deliverer, the delay stage
and the DLQ tools send the ``OutRecord`` (topic, partition, key, value, headers, timestamp) a
builder of ``walstream.core.outbox.records`` returns, and make no addressing decision of their
own. Delay-tier addressing is one rule (``tier_topic``, ``tier_partition``, ``wait_headers``):
a record bound for partition P of its destination waits on partition ``P % tier partitions``
of the tier ``next_stop`` names, with ``wal-due``/``wal-dest``/``wal-dest-partition``.

Records (README "Wire format" is the user-facing version of this list):

=================== ============================ ================================================
record              built by                     sent by
=================== ============================ ================================================
tier wait           ``wait`` / ``route_write``   deliverer (retry, delay, breaker deferral, a
                    (+ ``Outgoing.placed``)      record of an unknown namespace), API (a delayed
                                                 write)
tier hop            ``hop``                      delay stage (the same wait, one tier down)
hand-over           ``forward``                  delay stage (to the destination, due soon)
retry copy          ``retry_copy``               deliverer (a retry due within the hand-over lead)
DLQ entry           ``dlq_entry``                deliverer, delay stage (``poison_id``: bytes
                                                 that are not a record)
release marker      ``release_marker``           deliverer (a key's turn passes)
settle marker       ``settle_marker``            ``walstream dlq discard`` (CLI and API)
DLQ close marker    ``dlq_close_marker``         ``walstream dlq redrive/discard`` (CLI and API)
redriven copy       ``redriven``                 ``walstream dlq redrive`` (CLI and API)
redrive claim       ``redrive_claim``            ``walstream dlq redrive`` (CLI and API)
region copy         ``region_copy``              replication fan-out (a replicated namespace's
                                                 log to each other region's topic)
origin repair       ``origin_repair``            replicating client (an operation it logged but
                                                 could not apply in its own region, again on the
                                                 log for the fan-out to copy there)
region DLQ entry    ``region_dlq_entry``         region writer (an operation it can never apply)
mutation operation  ``mutation_ops``             API (an operation's chunks, issue 18, to
                                                 ``wal.<ns>.mutations``)
completion marker   ``mutation_marker``          API (a client's marker of a transaction, to
                                                 ``wal.<ns>.markers``)
mutation wake       ``wait`` (value              mutation agents (a transaction's deadline, a
                    ``encode_marker``)           backoff; a commit's ``Forget``: through the
                                                 tiers to the markers topic partition it came
                                                 from)
mutation DLQ entry  ``dlq_entry`` +              mutation agents (a dead-lettered transaction:
                    ``wal-mutation``             its marker, id ``txn.<id>``; a single bad
                                                 record: its bytes, ``poison_id``)
redriven marker     ``core.dlq.redrive_marker``  ``walstream dlq redrive`` (CLI and API: a
                                                 transaction entry's marker, ``redrive`` + 1, to
                                                 the markers topic keyed by its txn id)
=================== ============================ ================================================

Mutation record values are JSON, ``"v": 1`` (``walstream.core.mutations.wire``), every one keyed
by its txn id's UTF-8 bytes, with no header but a waiting one's (a DLQ entry: by its record
id, with an entry's headers):

* operation chunk (``encode_op_chunk``, ``wal.<ns>.mutations``): ``kind`` ``op``, ``ns``,
  ``txn``, ``seq``, ``op`` (``put``/``delete``), ``table``, ``id``, ``size``, ``digest`` (the
  whole value's), ``chunks``, ``chunk``, ``data`` (base64), ``owt`` when the operation has an
  original write time. Read by the ``mutation_ops`` agent (``decode_op_chunk``).
* marker, wake, Forget (``encode_marker``, ``wal.<ns>.markers``, a tier, a transaction's DLQ
  entry): ``kind`` ``marker`` with ``ns``, ``txn``, ``count``, ``at_ms``, and ``digest`` (a
  MutateItems'), ``wake`` (a wake's id), ``redrive`` when set; or ``kind`` ``forget`` with
  ``ns``, ``txn``, ``committed_at_ms``. Read by the ``mutation_commit`` agent
  (``decode_marker``) and the DLQ tools (``walstream.core.dlq.mutations``).

Headers (``wal-*``; values UTF-8 text, numbers decimal, times ms since the epoch):

* ``wal-due``: when the record is due. Written on a tier record (API, deliverer, mutation
  agents), on a hand-over (delay stage), on a retry copy due within the lead (deliverer) and on
  a release marker backing off (deliverer). Read by the delay stage (tier records) and by the
  worker's dispatcher, which holds a log or retry record until then
  (``walstream.core.delay.parse_due_header``), and by the mutation agents, which hold a wake
  or Forget handed over to a markers topic until then.
* ``wal-dest``, ``wal-dest-partition``: where a tier record goes when due. Written with
  ``wal-due`` on every tier record (API, deliverer, mutation agents); read by the delay stage
  (``parse_delay_headers``). A tier record without valid ones is a ``DelayHeadersError`` entry.
* ``wal-origin``: ``topic[partition]@offset`` where the worker first read the record. Written on
  every copy the worker makes (deliverer: waits, retry copies, DLQ entries; delay stage: carried
  on a hand-over and onto its DLQ entries). Read by the deliverer (a copy's first position) and
  the DLQ readers (``origin``) (``walstream.core.origin``).
* ``wal-order``: ``release`` or ``settle``, an ordering marker on a retry topic. Written by the
  deliverer (release) and ``dlq discard`` (settle); read by the deliverer
  (``walstream.core.outbox.markers``).
* ``wal-origin-repair``: ``1`` on an origin repair, a replicated namespace's log record the
  replicating client wrote again because its local apply failed. Written by the client
  (``walstream.replication.client``); read by the fan-out, which copies it to its origin region
  only (``fanout_regions``, ``is_origin_repair``).
* ``wal-dlq``: the kind of a DLQ record: ``entry`` (deliverer, delay stage), ``redriven`` or
  ``discarded`` (DLQ tools' close markers), ``claim`` or ``release`` (redrive claims). Read by
  every DLQ reader (``walstream.core.dlq.parse_dlq_record``: listings, redrive, the DLQ monitor).
* On an entry: ``wal-namespace``, ``wal-error`` (up to 4 KiB), ``wal-error-class``,
  ``wal-source`` (where its last copy was read), ``wal-attempt``, ``wal-dead-at``, ``wal-key``
  (the record's key; ``dlq discard`` settles it, also for an entry without a value),
  ``wal-behind`` (ids parked behind it). Written by the deliverer and the delay stage; read by
  the DLQ readers (``wal-dead-at``, ``wal-error-class``, ``wal-namespace`` also by the metrics).
* On a close marker: ``wal-dead-at`` (when) and ``wal-closes`` (``partition@offset`` of the
  entry it closes). Written by the DLQ tools; read by every DLQ fold (``OpenEntries``).
* ``wal-mutation``: on a mutation's DLQ entry, ``marker`` (its value a completion marker: a
  dead-lettered transaction's, redrivable when its class is ``mutation_incomplete`` or
  ``mutation_apply_failed``; or a rejected or undecodable markers record) or ``op`` (a record
  of the mutations topic: a conflict, a refusal, an undecodable one). Written by the mutation
  agents (``walstream.agents.mutation_out``, which add it to a ``dlq_entry``; the name is
  ``core.dlq.records.H_MUTATION``); read by the DLQ readers (``DlqEntry.mutation``:
  listings, ``walstream.core.dlq.mutations``, redrive).
* ``wal-mutation-expiry``: on a dead-lettered transaction's DLQ entry, the wake id of its
  expiry (``core.mutations.commit.expiry``). Written by the mutation agents beside
  ``wal-mutation``; read by ``dlq discard`` (``DlqEntry.expiry_wake``,
  ``walstream.core.dlq.mutations.expiry_marker``), which sends that wake at once.
* On a claim (key ``wal-redrive-claim``, partition 0): ``wal-claim`` (the redrive's id),
  ``wal-dead-at`` (when), ``wal-lease-ms``. Written and read by redrive (``ClaimFold``); other
  readers skip them.
"""

from __future__ import annotations

from walstream.core.outbox import mutations, records, replication
from walstream.core.outbox.mutations import *  # noqa: F403
from walstream.core.outbox.records import *  # noqa: F403 - the package is its records' builders
from walstream.core.outbox.replication import *  # noqa: F403

__all__ = [*records.__all__, *replication.__all__, *mutations.__all__]
