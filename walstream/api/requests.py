"""What handlers do with every request: find its namespace, decode its JSON body, refuse
targets naming walstream's own topics, and write records as one request (acks=all).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import orjson

from walstream.api.deps import ApiDeps
from walstream.core.outbox import Outgoing
from walstream.core.outcome import request_outcome
from walstream.core.target_policy import ReservedTopics
from walstream.core.validate import invalid_json
from walstream.errors import OverloadedError
from walstream.namespaces.config import NamespaceConfig
from walstream.namespaces.registry import NamespaceRegistry
from walstream.topology import reserved_topics

__all__ = ["Params", "decode_json", "loaded", "namespace_for", "reserved_for", "send_records"]

#: A route's path parameters.
Params = Mapping[str, str]


def loaded(deps: ApiDeps) -> None:
    """503 + Retry-After until the registry has caught up (a 404 then could be wrong)."""
    if not deps.registry_loaded():
        raise OverloadedError(deps.settings.shed_retry_after_s, "namespace registry is loading")


def namespace_for(deps: ApiDeps, params: Params) -> NamespaceConfig:
    """The route's namespace (503 while the registry loads; 404 unknown, 503 unreadable)."""
    loaded(deps)
    return deps.registry.get(params["namespace"])


@lru_cache(maxsize=8)
def _reserved_of(app_id: str, control_topic: str, registry: NamespaceRegistry) -> ReservedTopics:
    return reserved_topics(app_id, control_topic, registry.namespace_of)


def reserved_for(deps: ApiDeps) -> ReservedTopics:
    """walstream's own topics on this deployment: no target may name one."""
    return _reserved_of(deps.settings.app_id, deps.settings.control_topic, deps.registry)


def decode_json(raw: bytes) -> Any:
    """A request's JSON body (400 naming the field or ``body``)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_json(raw, str(exc)) from None


async def send_records(deps: ApiDeps, records: Sequence[Outgoing]) -> None:
    """Write ``records`` (acks=all) as one request: a write slot each (503 when the process has
    too few free), the producer's outcomes folded into the request's (walstream.core.outcome).

    Raises:
        OverloadedError: too many writes in flight (nothing written).
        WalError: the producer's error of the least certain record (FALSE or UNKNOWN).
    """
    slots = min(len(records), deps.limiter.limit)  # a request larger than the limit still fits
    if not deps.limiter.try_acquire(slots):
        raise OverloadedError(deps.settings.shed_retry_after_s)
    try:
        results = await deps.producer.send_many(records)
    finally:
        deps.limiter.release(slots)
    error = request_outcome(results)
    if error is not None:
        raise error
