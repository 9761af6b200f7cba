"""The namespace registry: a pure fold of control-topic events, one namespace per key.

The control topic is compacted on Kafka but not on every broker (Tansu keeps every record), so the
reader folds by key itself. The fold gives the same registry whether the topic was compacted or
not (compaction keeps at least the last record of each key), because each namespace's state
follows from its last record:

* a config event applies unless it is **older** than the one in force: each event carries a
  ``version`` (the applier's view + 1; ``ns apply --expect-version`` makes it a compare-and-set)
  and ``updated_at_ms``; an event with a lower (version, updated_at_ms) than the current one is
  stale and ignored (ERROR logged, counted). ``NamespacePublisher`` never leaves a stale event
  last: it re-reads after writing and re-publishes the winner if its own event lost;
* an **unreadable** event (an unknown ``v``, bad JSON, an invalid config, a key that names
  another namespace) makes its namespace **unavailable** everywhere: running processes drop the
  config they had, exactly as a process started after compaction (which sees only that event)
  has none. Its requests get a 503 naming the reason, an ERROR is logged and
  ``walstream_namespace_config_unreadable{namespace}`` is 1 until a readable event follows;
* a tombstone deletes the namespace.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from walstream.errors import (
    ConfigError,
    NamespaceNotFoundError,
    NamespaceUnavailableError,
    VersionConflictError,
)
from walstream.namespaces.config import NamespaceConfig, parse_namespace

__all__ = [
    "Change",
    "NamespaceRegistry",
    "decode_event",
    "decode_versioned",
    "encode_event",
    "next_event",
]

logger = logging.getLogger(__name__)

EVENT_VERSION = 1


class Change(Enum):
    """What one event did to the registry."""

    APPLIED = "applied"
    DELETED = "deleted"
    IGNORED = "ignored"
    #: Older than the event in force: not applied.
    STALE = "stale"
    #: Not readable: the namespace is unavailable until a readable event follows.
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class _Entry:
    config: NamespaceConfig
    updated_at_ms: int
    version: int = 0

    @property
    def rank(self) -> tuple[int, int]:
        return self.version, self.updated_at_ms


def encode_event(
    config: NamespaceConfig, updated_at_ms: int, version: int = 1
) -> tuple[bytes, bytes]:
    """Key and value of the control-topic record that applies ``config`` as ``version``."""
    value = {
        "v": EVENT_VERSION,
        "version": version,
        "updated_at_ms": updated_at_ms,
        "config": config.to_json(),
    }
    return config.name.encode(), orjson.dumps(value)


def decode_event(value: bytes) -> tuple[NamespaceConfig, int]:
    """Decode a non-tombstone control-topic value: its config and ``updated_at_ms``.

    Raises:
        ConfigError: the value is not a namespace event this version understands.
    """
    config, updated, _ = decode_versioned(value)
    return config, updated


def decode_versioned(value: bytes) -> tuple[NamespaceConfig, int, int]:
    """Decode a non-tombstone control-topic value.

    Raises:
        ConfigError: the value is not a namespace event this version understands.
    """
    try:
        obj: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ConfigError("event", value[:80], "not JSON") from exc
    if not isinstance(obj, dict) or obj.get("v") != EVENT_VERSION:
        raise ConfigError("event.v", obj.get("v") if isinstance(obj, dict) else obj, "unknown")
    updated = obj.get("updated_at_ms", 0)
    if not isinstance(updated, int) or isinstance(updated, bool):
        raise ConfigError("event.updated_at_ms", updated, "must be an integer")
    version = obj.get("version", 0)  # events from before versions: 0
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ConfigError("event.version", version, "must be an integer >= 0")
    return parse_namespace(obj.get("config")), updated, version


class NamespaceRegistry:
    """The local view of every namespace, converging with every other process's view."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_topic: dict[str, str] = {}
        #: Namespaces whose last event is unreadable, and why (they are unavailable).
        self.unreadable: dict[str, str] = {}
        #: Events folded so far; lets callers wait for "a change after this point".
        self.events_applied = 0
        #: Stale events ignored so far.
        self.stale_events = 0

    def apply(self, key: bytes | None, value: bytes | None) -> Change:
        """Fold one control-topic record; never raises on bad data (it is logged)."""
        self.events_applied += 1
        if key is None:
            logger.warning("control record without key ignored")
            return Change.IGNORED
        name = key.decode("utf-8", errors="replace")
        if value is None:
            removed = self._entries.pop(name, None)
            self.unreadable.pop(name, None)
            self._index_topics()
            return Change.DELETED if removed else Change.IGNORED
        try:
            config, updated_at_ms, version = decode_versioned(value)
            if config.name != name:
                raise ConfigError("event.config.name", config.name, f"the key names {name!r}")
        except ConfigError as exc:
            logger.error(
                "namespace %s is unavailable: its latest control event is unreadable (%s)",
                name,
                exc,
            )
            self._entries.pop(name, None)
            self.unreadable[name] = str(exc)
            self._index_topics()
            return Change.UNREADABLE
        entry = _Entry(config, updated_at_ms, version)
        current = self._entries.get(name)
        if current is not None and entry.rank < current.rank:
            self.stale_events += 1
            logger.error(
                "control event for namespace %s ignored: version %d (updated_at_ms %d) is older "
                "than version %d (updated_at_ms %d) in force",
                name,
                version,
                updated_at_ms,
                current.version,
                current.updated_at_ms,
            )
            return Change.STALE
        self._entries[name] = entry
        self.unreadable.pop(name, None)
        self._index_topics()
        return Change.APPLIED

    def _index_topics(self) -> None:
        self._by_topic = {
            topic: name
            for name, entry in self._entries.items()
            for topic in entry.config.topics.all()
        }

    def namespace_of(self, topic: str) -> str | None:
        """The namespace whose log, retry or DLQ topic this is (None: no namespace's)."""
        return self._by_topic.get(topic)

    def get(self, name: str) -> NamespaceConfig:
        """The namespace's current configuration.

        Raises:
            NamespaceNotFoundError: it was never applied, or was deleted.
            NamespaceUnavailableError: its latest event is unreadable (a NamespaceNotFoundError
                answered with 503).
        """
        entry = self._entries.get(name)
        if entry is None:
            reason = self.unreadable.get(name)
            if reason is not None:
                raise NamespaceUnavailableError(name, reason)
            raise NamespaceNotFoundError(name)
        return entry.config

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[NamespaceConfig]:
        return iter([e.config for e in self._entries.values()])

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def updated_at_ms(self, name: str) -> int:
        entry = self._entries.get(name)
        if entry is None:
            raise NamespaceNotFoundError(name)
        return entry.updated_at_ms

    def version(self, name: str) -> int:
        """The version in force (0: none, or from before versions; an unavailable namespace
        has none)."""
        entry = self._entries.get(name)
        return entry.version if entry is not None else 0

    def snapshot(self) -> dict[str, tuple[dict[str, Any], int, int] | str]:
        """Every namespace as (config JSON, version, updated_at_ms), or the reason it is
        unreadable: what two registries compare equal on when they agree."""
        state: dict[str, tuple[dict[str, Any], int, int] | str] = {
            name: (e.config.to_json(), e.version, e.updated_at_ms)
            for name, e in self._entries.items()
        }
        state.update(self.unreadable)
        return state


def next_event(
    registry: NamespaceRegistry,
    config: NamespaceConfig,
    now_ms: int,
    expect_version: int | None = None,
) -> tuple[int, int]:
    """The (version, updated_at_ms) an apply of ``config`` publishes, as the applier's registry
    sees the namespace: one version up, and never an earlier time than the version in force.

    Raises:
        VersionConflictError: ``expect_version`` is not the version in force (0: none).
        ConfigError: the namespace is live and ``config`` changes its topics (its retry records
            and DLQ entries would be stranded on the old ones), or turns its replication on or
            off (the agents or the replication stages would stop reading what it holds).
    """
    name = config.name
    current = registry.version(name)
    if expect_version is not None and current != expect_version:
        seen = f"version {current}" if name in registry else "not defined (version 0)"
        raise VersionConflictError(
            f"namespace {name!r} is {seen}, not version {expect_version}: it changed since you "
            "read it; read it again (walstream ns show) and apply again"
        )
    if name not in registry:
        return current + 1, now_ms
    live = registry.get(name).topics
    if live != config.topics:
        raise ConfigError(
            f"{name}: topics",
            {"log": config.topics.log, "retry": config.topics.retry, "dlq": config.topics.dlq},
            f"the namespace is live on log={live.log}, retry={live.retry}, dlq={live.dlq}: "
            "changing a live namespace's topics would strand its retry records and DLQ entries "
            "on the old topics; keep them",
        )
    replicated = registry.get(name).replication is not None
    if replicated != (config.replication is not None):
        raise ConfigError(
            f"{name}: replication",
            "on" if config.replication is not None else "off",
            f"the namespace is live and {'replicates' if replicated else 'does not replicate'}: "
            "its log and retry topic are read by the replication stages or by the agents, not "
            "both, so turning replication on or off would strand its records; apply another "
            "namespace",
        )
    return current + 1, max(now_ms, registry.updated_at_ms(name) + 1)
