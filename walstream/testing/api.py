"""The API over fakes, and the bearer tokens of API tests."""

from __future__ import annotations

from typing import Any

from walstream.api.deps import ApiDeps
from walstream.clock import FakeClock
from walstream.core.auth import hash_token
from walstream.core.limits import InFlightLimiter
from walstream.kafka.producer import LogProducer, MemoryLogProducer
from walstream.namespaces.registry import NamespaceRegistry
from walstream.settings import Settings
from walstream.testing.records import NOW_MS

# -- the API ---------------------------------------------------------------------------------


def api_deps(
    settings: Settings,
    registry: NamespaceRegistry,
    producer: LogProducer | None = None,
    *,
    slots: int = 4,
    now_ms: int = NOW_MS,
    **kw: Any,
) -> ApiDeps:
    """The API's collaborators over fakes: ``producer`` (a ``MemoryLogProducer`` unless given),
    ``slots`` requests in flight, a ``FakeClock`` at ``now_ms``, no jitter (``rand`` 0.5)."""
    return ApiDeps(
        settings=settings,
        registry=registry,
        producer=producer if producer is not None else MemoryLogProducer(),
        limiter=InFlightLimiter(slots),
        clock=FakeClock(now_ms),
        rand=lambda: 0.5,
        **kw,
    )


# -- the API's tokens ------------------------------------------------------------------------

#: Bearer tokens of API tests by name, and the role each is admitted with.
API_TOKENS = {
    "admin": "wal_admin-0123456789abcdefghijklmnopqrstuvwxyz0",
    "a_writer": "wal_awriter-0123456789abcdefghijklmnopqrstuvwxyz",
    "a_admin": "wal_aadmin-0123456789abcdefghijklmnopqrstuvwxyz0",
    "b_writer": "wal_bwriter-0123456789abcdefghijklmnopqrstuvwxyz",
    "b_admin": "wal_badmin-0123456789abcdefghijklmnopqrstuvwxyz0",
}
API_ROLES = {
    "admin": "admin",
    "a_writer": "writer:a",
    "a_admin": "namespace-admin:a",
    "b_writer": "writer:b",
    "b_admin": "namespace-admin:b",
}
#: A well-formed token no setting admits.
UNKNOWN_TOKEN = "wal_unknown-0123456789abcdefghijklmnopqrstuvwxy"  # noqa: S105 - a test token


def api_tokens_setting() -> str:
    """The WALSTREAM_TOKENS setting admitting each of ``API_TOKENS`` with its role (hashes)."""
    return " ".join(
        f"{hash_token(API_TOKENS[n])}:{'admin:' if n == 'admin' else API_ROLES[n]}:{n}"
        for n in API_TOKENS
    )


def bearer(who: str | None) -> dict[str, str]:
    """The Authorization header of ``API_TOKENS[who]`` (``unknown``: ``UNKNOWN_TOKEN``; None:
    no header)."""
    if who is None:
        return {}
    token = UNKNOWN_TOKEN if who == "unknown" else API_TOKENS[who]
    return {"Authorization": f"Bearer {token}"}
