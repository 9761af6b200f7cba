"""Which open entries a listing or redrive takes (pure): ``Selection``, and
``parse_selection``, which reads one from a request and names the field it refuses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from walstream.core.numbers import as_integer
from walstream.core.times import parse_time_ms
from walstream.errors import BadRequestError

__all__ = ["Selectable", "Selection", "parse_selection"]


class Selectable(Protocol):
    """What a selection looks at: a DLQ entry, or an index's reference to one."""

    @property
    def id(self) -> str: ...

    @property
    def dead_at_ms(self) -> int: ...

    @property
    def error_class(self) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which open entries a list or redrive takes (every given condition must hold)."""

    ids: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    error_class: str | None = None

    def matches(self, entry: Selectable) -> bool:
        if self.ids and entry.id not in self.ids:
            return False
        if self.since_ms is not None and entry.dead_at_ms < self.since_ms:
            return False
        if self.until_ms is not None and entry.dead_at_ms >= self.until_ms:
            return False
        return self.error_class is None or entry.error_class == self.error_class


def _record_ids(value: Any, field: str) -> list[str]:
    """A selection's record ids: a list of them, or one string of them comma-separated."""
    ids = [i for i in value.split(",") if i] if isinstance(value, str) else value
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise BadRequestError(field, "must be a list of record ids")
    return ids


def parse_selection(obj: Mapping[str, Any], now_ms: int) -> Selection:
    """A Selection from a request (query string or JSON body).

    Raises:
        BadRequestError: naming the field.
    """
    unknown = sorted(set(obj) - {"ids", "id", "since", "until", "error_class"})
    if unknown:
        raise BadRequestError(unknown[0], "is not a selection field")
    # ``id`` (deprecated) is checked as ``ids`` is, whether or not ids is there (and wins)
    legacy = _record_ids(obj["id"], "id") if "id" in obj else []
    ids = _record_ids(obj["ids"], "ids") if "ids" in obj else legacy
    times: dict[str, int | None] = {}
    for name in ("since", "until"):
        raw = obj.get(name)
        if raw is None:
            times[name] = None
            continue
        if isinstance(raw, float) and (integral := as_integer(raw)) is not None:
            raw = integral  # 5.0 is the integer 5 (JSON Schema's integer), not "5.0"
        try:
            times[name] = parse_time_ms(str(raw), now_ms)
        except ValueError as exc:
            raise BadRequestError(name, str(exc)) from None
    error_class = obj.get("error_class")
    if error_class is not None and (not isinstance(error_class, str) or not error_class):
        raise BadRequestError("error_class", "must be a non-empty string")
    return Selection(
        ids=frozenset(ids),
        since_ms=times["since"],
        until_ms=times["until"],
        error_class=error_class,
    )
