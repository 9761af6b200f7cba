"""The namespace registry: a pure fold of control-topic events (last value per key wins).

The control topic is compacted on Kafka but not on every broker (Tansu keeps every record), so the
reader folds by key itself: a later value replaces an earlier one and a tombstone deletes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from walstream.errors import ConfigError, NamespaceNotFoundError
from walstream.namespaces.config import NamespaceConfig, parse_namespace

__all__ = ["Change", "NamespaceRegistry", "decode_event", "encode_event"]

logger = logging.getLogger(__name__)

EVENT_VERSION = 1


class Change(Enum):
    """What one event did to the registry."""

    APPLIED = "applied"
    DELETED = "deleted"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class _Entry:
    config: NamespaceConfig
    updated_at_ms: int


def encode_event(config: NamespaceConfig, updated_at_ms: int) -> tuple[bytes, bytes]:
    """Key and value of the control-topic record that applies ``config``."""
    value = {"v": EVENT_VERSION, "updated_at_ms": updated_at_ms, "config": config.to_json()}
    return config.name.encode(), orjson.dumps(value)


def decode_event(value: bytes) -> tuple[NamespaceConfig, int]:
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
    if not isinstance(updated, int):
        raise ConfigError("event.updated_at_ms", updated, "must be an integer")
    return parse_namespace(obj.get("config")), updated


class NamespaceRegistry:
    """The local view of every namespace, converging with every other process's view."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_topic: dict[str, str] = {}
        #: Events folded so far; lets callers wait for "a change after this point".
        self.events_applied = 0

    def apply(self, key: bytes | None, value: bytes | None) -> Change:
        """Fold one control-topic record; never raises on bad data (it is logged and skipped)."""
        self.events_applied += 1
        if key is None:
            logger.warning("control record without key ignored")
            return Change.IGNORED
        name = key.decode("utf-8", errors="replace")
        if value is None:
            removed = self._entries.pop(name, None)
            self._index_topics()
            return Change.DELETED if removed else Change.IGNORED
        try:
            config, updated_at_ms = decode_event(value)
        except ConfigError as exc:
            logger.warning("control record for namespace %s ignored: %s", name, exc)
            return Change.IGNORED
        if config.name != name:
            logger.warning("control record key %s names namespace %s: ignored", name, config.name)
            return Change.IGNORED
        self._entries[name] = _Entry(config, updated_at_ms)
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
        """
        entry = self._entries.get(name)
        if entry is None:
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
