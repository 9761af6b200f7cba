"""What the mutation agents send (issue 18): wakes and ``Forget`` records through the delay
tiers, back to the markers topic partition they came from, and DLQ entries with the
``wal-mutation`` header: a transaction's (its marker, record id ``txn.<id>``, redrivable) or a
single bad record's (its own bytes); a record that cannot be handled now parked (back through
the delay tiers to its own topic and partition, ``PARK_MS``). Each returns once the broker
acknowledged.
"""

from __future__ import annotations

import dataclasses
import logging

from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from walstream.agents.outcomes import Emitter, Source, send
from walstream.clock import Clock
from walstream.core import outbox
from walstream.core.dlq.mutations import transaction_class
from walstream.core.dlq.records import H_MUTATION, expiry_header
from walstream.core.mutations import (
    DeadLetter,
    Marker,
    Requeue,
    TxnState,
    encode_marker,
    expiry,
    wake_marker,
)
from walstream.errors import EmitRefusedError, WalError
from walstream.metrics import WalMetrics
from walstream.namespaces.config import NamespaceConfig
from walstream.namespaces.registry import NamespaceRegistry
from walstream.settings import Settings
from walstream.topology import mutation_topics

__all__ = ["PARK_MS", "TRANSIENT", "MutationOut"]

logger = logging.getLogger(__name__)

#: How long a record that cannot be handled now (its namespace unavailable, the broker failing)
#: waits in the delay tiers before it is read again. Short: it is a transaction's record (an
#: operation, or the wake that alone drives it) and its completion timeout runs meanwhile. Cheap:
#: the worker stops reading an unavailable namespace's topics at its registry change
#: (``Delivery.on_namespaces``), so only the records read before that come round again, and
#: while the broker is down the park's own send waits for it (the emitter) instead of spinning.
PARK_MS = 500

#: What a handler's writes raise while the broker is unreachable or busy (a changelog row not
#: taken, a send timing out) or refuse (``EmitRefusedError``): not the record's fault, so it is
#: parked, never dead-lettered as poison. ``ProducerSendError`` is Faust's wrapper of a
#: ``KafkaError``; ``TimeoutError`` and ``ConnectionError`` are ``OSError``\ s.
TRANSIENT: tuple[type[Exception], ...] = (
    KafkaError,
    ProducerSendError,
    OSError,
    EmitRefusedError,
)


class MutationOut:
    """Sends the mutation agents' records (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: NamespaceRegistry,
        emitter: Emitter,
        clock: Clock,
        metrics: WalMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.emitter = emitter
        self.clock = clock
        self.metrics = metrics

    async def park(
        self,
        value: bytes | None,
        key: bytes | None,
        source: Source,
        kind: str,
        why: Exception,
    ) -> None:
        """Send the record back through the delay tiers to its own topic and partition, due in
        ``PARK_MS`` (see the module docstring). Raises when that send fails too: the record is
        then not acked, and is read again after a restart (never lost)."""
        logger.warning(
            "mutation %s at %s parked for %d ms: %s: %s",
            kind, source.coordinates(), PARK_MS, type(why).__name__, why,
        )  # fmt: skip
        now = self.clock.now_ms()
        record = outbox.wait(
            value,
            key,
            due_ms=now + PARK_MS,
            now_ms=now,
            dest_topic=source.topic,
            dest_partition=source.partition,
            app_id=self.settings.app_id,
            tier_partitions=self.settings.default_partitions,
            origin=source.first_read(),
        )
        try:
            await send(self.emitter, record)
        except Exception as exc:
            logger.critical(
                "mutation %s at %s not parked (%r): not acked, read again after a restart",
                kind, source.coordinates(), exc,
            )  # fmt: skip
            raise

    async def unexpected(
        self, value: bytes | None, key: bytes | None, source: Source, kind: str, exc: Exception
    ) -> None:
        """A handler's error that is neither parked nor decided: logged, the record
        dead-lettered as it is (``mutation_poison``)."""
        logger.exception("mutation %s at %s failed unexpectedly", kind, source.coordinates())
        try:
            await self.dead_record(value, source, kind, "mutation_poison", repr(exc))
        except Exception:
            logger.exception("mutation %s at %s: DLQ entry failed", kind, source.coordinates())

    async def send_waiting(
        self, ns: NamespaceConfig, value: bytes, txn_id: str, due_ms: int, source: Source
    ) -> None:
        record = outbox.wait(
            value,
            txn_id.encode(),
            due_ms=due_ms,
            now_ms=self.clock.now_ms(),
            dest_topic=mutation_topics(ns.name).markers,
            dest_partition=source.partition,
            app_id=self.settings.app_id,
            tier_partitions=self.settings.default_partitions,
        )
        await send(self.emitter, record)

    async def wake(
        self, ns: NamespaceConfig, state: TxnState, requeue: Requeue, source: Source
    ) -> None:
        wake = encode_marker(wake_marker(state, requeue))
        due = self.clock.now_ms() + requeue.delay_ms
        await self.send_waiting(ns, wake, state.txn_id, due, source)
        if self.metrics is not None:
            self.metrics.mutation_requeues.labels(ns.name).inc()

    async def dead_txn(
        self,
        ns: NamespaceConfig,
        state: TxnState,
        dead: DeadLetter,
        error_class: str,
        source: Source,
    ) -> None:
        marker = Marker(
            namespace=state.namespace,
            txn_id=state.txn_id,
            op_count=state.count or 0,
            at_ms=state.marked_at_ms or state.opened_at_ms,
            digest=state.marker_digest,
            wake=0,
            redrive=state.redrive,
        )
        # the id of the expiry wake the stage sends next (commit.expiry of this state), named
        # on the entry: ``dlq discard`` sends that wake at once (core.dlq.expiry_marker)
        _, expire = expiry(state, self.settings.mutation_limits(ns))
        await self.entry(
            ns, encode_marker(marker), f"txn.{state.txn_id}", source, "marker",
            transaction_class(dead, error_class), dead.reason, attempts=state.attempts,
            headers=[expiry_header(expire.wake)],
        )  # fmt: skip

    async def dead_record(
        self,
        value: bytes | None,
        source: Source,
        kind: str,
        error_class: str,
        reason: str,
        ns: NamespaceConfig | None = None,
    ) -> None:
        """A single record to the DLQ as it is: its namespace's (from the topic it was read on;
        not known: logged and skipped)."""
        if ns is None:
            name = source.topic.removeprefix("wal.").rsplit(".", 1)[0]
            if source.topic not in mutation_topics(name):
                logger.error("%s at %s: %s (not a mutation topic)", kind, source, reason)
                return
            try:
                ns = self.registry.get(name)
            except WalError as exc:
                logger.error("mutation %s at %s: %s; %s", kind, source, reason, exc)
                return
        record_id = outbox.poison_id(source.topic, source.partition, source.offset)
        await self.entry(ns, value, record_id, source, kind, error_class, reason)

    async def entry(
        self,
        ns: NamespaceConfig,
        value: bytes | None,
        record_id: str,
        source: Source,
        kind: str,
        error_class: str,
        reason: str,
        *,
        attempts: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        for last_resort in (False, True):
            entry = outbox.dlq_entry(
                value,
                dlq_topic=ns.topics.dlq,
                partition=source.partition,
                record_id=record_id,
                namespace=ns.name,
                reason=reason,
                error_class=error_class,
                source=source.coordinates(),
                attempts=attempts,
                dead_at_ms=self.clock.now_ms(),
                origin=None,
            )
            entry = dataclasses.replace(
                entry,
                headers=[*(entry.headers or []), (H_MUTATION, kind.encode()), *(headers or [])],
            )
            try:
                await send(self.emitter, entry)
                break
            except EmitRefusedError as exc:
                if last_resort:
                    logger.critical(
                        "DLQ entry %s refused even without its value: %s", record_id, exc
                    )
                    return
                logger.error("DLQ copy of %s refused (%s): entry without it", record_id, exc)
                value = None
        if self.metrics is not None:
            self.metrics.mutation_dead_letters.labels(ns.name, error_class).inc()
            self.metrics.dlq_records_written.labels(ns.name, error_class).inc()
