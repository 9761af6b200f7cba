"""A Faust topic channel whose topic list changes while the worker runs (namespaces come and go).

Faust agents iterate *clones* of their channel, and the conductor routes messages to the clones.
``faust.Topic`` shares its topic list with its clones only when the list is non-empty
(``topics or []``), so a list that starts empty, or is replaced, never reaches them. Here every
clone holds the very same list object, changed in place; ``resubscribe`` then asks the conductor
to subscribe again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import faust

__all__ = ["DynamicTopic"]


class DynamicTopic(faust.Topic):
    """A topic channel over a shared, mutable list of topic names."""

    def __init__(self, *args: Any, names: list[str] | None = None, **kwargs: Any) -> None:
        self._names: list[str] = names if names is not None else []
        super().__init__(*args, **kwargs)

    @property
    def topics(self) -> Sequence[str]:
        return self._names

    @topics.setter
    def topics(self, value: Sequence[str]) -> None:
        if value is not self._names:
            self._names[:] = list(value)

    def _clone_args(self) -> Mapping[str, Any]:
        return {**super()._clone_args(), "names": self._names}

    def set_topics(self, names: Iterable[str]) -> bool:
        """Replace the topic list in place; return whether it changed."""
        wanted = sorted(set(names))
        if wanted == self._names:
            return False
        self._names[:] = wanted
        return True

    def resubscribe(self, app: faust.App) -> None:
        """Have the conductor subscribe again (after its resubscribe delay)."""
        for channel in list(app.topics):
            if getattr(channel, "_names", None) is self._names:
                app.topics.discard(channel)
                app.topics.add(channel)
