"""The mutation table's upkeep (issue 18): the open-transaction index rebuilt from the table
after its recovery and the gauges it feeds, a transaction's status read from its rows, and the
rows of namespaces that left (deleted, or their mutations block removed) dropped in one pass.

Run beside the agents' handlers (``walstream.agents.mutations.MutationStage``), under the same
per-transaction turns, so a purge never interleaves with a record being handled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from walstream.agents.key_locks import KeyTurns
from walstream.agents.mutation_rows import OpenIndex, Rows, row_txn
from walstream.clock import Clock
from walstream.core.mutations import (
    decode_state,
    decode_tombstone,
    state_key,
    tombstone_key,
    txn_status,
)
from walstream.errors import PoisonRecordError
from walstream.metrics import WalMetrics
from walstream.namespaces.registry import NamespaceRegistry

__all__ = ["MutationUpkeep"]

logger = logging.getLogger(__name__)


class MutationUpkeep:
    """See the module docstring."""

    def __init__(
        self,
        *,
        rows: Rows,
        turns: KeyTurns,
        open: OpenIndex,
        registry: NamespaceRegistry,
        clock: Clock,
        metrics: WalMetrics | None = None,
    ) -> None:
        self.rows = rows
        self.turns = turns
        self.open = open
        self.registry = registry
        self.clock = clock
        self.metrics = metrics
        #: namespaces taking mutations at the last registry change (an unavailable one stays)
        self._mutating: set[str] = set()
        #: namespaces that took mutations and left (deleted, or their block removed) since this
        #: worker started: their rows are dropped (``purge_gone``)
        self.left: set[str] = set()

    def reindex(self) -> None:
        """Rebuild the open transactions' index from the table (after its recovery)."""
        states = []
        for key, value in self.rows.items():
            if key.startswith("s:"):
                try:
                    states.append(decode_state(value))
                except PoisonRecordError:
                    logger.error("mutation table row %s is unreadable", key)
        self.open.rebuild(iter(states))

    def namespaces_changed(self, names: Iterable[str], unavailable: Iterable[str]) -> bool:
        """The registry changed: ``names`` take mutations now, ``unavailable`` are unreadable
        for now (neither left nor back). True when a namespace left: ``purge_gone`` should run.
        """
        mutating, unreadable = set(names), set(unavailable)
        newly = self._mutating - mutating - unreadable
        self._mutating = mutating | (self._mutating & unreadable)
        self.left = (self.left | newly) - mutating
        return bool(newly)

    async def purge_gone(self) -> int:
        """Drop every row of this worker's table partitions that belongs to a namespace that
        left (``left``): one pass over the table, then each transaction's rows deleted under its
        lock unless its namespace came back meanwhile. The wakes and ``Forget`` records that
        would drop them are never read: the worker stops reading a namespace's markers topic
        once it takes no mutations. Run on each registry change that removes one, and after
        each table recovery (a partition's next owner). Never raises; returns the rows dropped.
        """
        if not self.left:
            return 0
        dropped = 0
        try:
            txns: dict[tuple[str, str], list[str]] = {}
            for key, _ in self.rows.items():
                try:
                    name, txn = row_txn(key)
                except ValueError:
                    continue
                if name in self.left:
                    txns.setdefault((name, txn), []).append(key)
            for (name, txn), keys in txns.items():
                async with self.turns.hold((name, txn)):
                    if name not in self.left:
                        continue  # it came back: its rows are its own again
                    for key in keys:
                        await self.rows.put(key, None)
                    self.open.note(name, txn, None)
                    dropped += len(keys)
            if txns:
                logger.info(
                    "mutation rows of namespaces gone dropped: %d rows of %d transactions (%s)",
                    dropped, len(txns), sorted({name for name, _ in txns}),
                )  # fmt: skip
        except Exception:
            logger.exception(
                "dropping the mutation rows of namespaces gone failed (%d dropped): the next "
                "table recovery, or namespace leaving, tries again",
                dropped,
            )
        return dropped

    def status(self, namespace: str, txn_id: str) -> dict[str, Any] | None:
        """What ``GET .../mutations/{txn_id}`` answers, from this worker's rows (valid on the
        worker owning the transaction's partition); None: no such transaction here."""
        get = getattr(self.rows, "get_anywhere", self.rows.get)
        raw_state = get(state_key(namespace, txn_id))
        raw_tomb = get(tombstone_key(namespace, txn_id))
        state = None if raw_state is None else decode_state(raw_state)
        tomb = None if raw_tomb is None else decode_tombstone(raw_tomb)
        return txn_status(state, tomb)

    def report(self) -> None:
        """Set the open-transaction gauges (every namespace taking mutations, 0 when none)."""
        if self.metrics is None:
            return
        now = self.clock.now_ms()
        stats = self.open.stats()
        for ns in self.registry:
            if ns.mutations is not None and ns.name not in stats:
                stats[ns.name] = (0, now)
        for name, (count, oldest) in stats.items():
            self.metrics.mutation_open.labels(name).set(count)
            self.metrics.mutation_oldest_open_age.labels(name).set(max(0, now - oldest) / 1000)
