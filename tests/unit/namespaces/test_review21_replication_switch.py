"""Review of issue 17 (worker.py on_namespaces): the worker leaves a replicated namespace's log
and retry topic to the replication stages, and the API takes only cache operations for it. An
apply that turns replication on for a live namespace (or off for a replicated one) strands what
it holds, as the topic change next_event refuses does: its records waiting on the retry topic
are read by no agent any more (never delivered, their keys blocked), and the fan-out, a new
consumer group reading the log from its start, sends every record the log still holds (targets
delivered or not) to each region as an operation, where it is poison (the region DLQs). Turned
off, the agents read the cache operations as records to deliver. A live namespace keeps whether
it replicates."""

from __future__ import annotations

from typing import Any

import pytest

from walstream.errors import ConfigError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event, next_event

REGIONS = {"a": {"memcached": ["127.0.0.1:11211"]}, "b": {"memcached": ["127.0.0.1:11212"]}}
PLAIN: dict[str, Any] = {"name": "pay", "target": {"type": "http", "url": "http://h/x"}}
REPLICATED: dict[str, Any] = {"name": "pay", "replication": {"regions": REGIONS}}


@pytest.mark.parametrize(("live", "applied"), [(PLAIN, REPLICATED), (REPLICATED, PLAIN)])
def test_a_live_namespace_keeps_whether_it_replicates(
    live: dict[str, Any], applied: dict[str, Any]
) -> None:
    registry = NamespaceRegistry()
    registry.apply(*encode_event(parse_namespace(live), 1_000, 1))
    with pytest.raises(ConfigError) as info:
        next_event(registry, parse_namespace(applied), now_ms=2_000)
    assert info.value.key == "pay: replication"
