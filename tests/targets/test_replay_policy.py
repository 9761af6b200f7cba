"""Replay delivers through the namespace's target policy: a replayed record naming a target its
namespace does not allow fails without any connection (replay is an operator path, not a bypass)."""

from __future__ import annotations

from walstream.clock import FakeClock
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope, Lifecycle
from walstream.replay import deliver_once
from walstream.settings import Settings
from walstream.targets.pool import TargetPool


class _NoProducers:
    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self, cluster: str) -> object:
        self.made.append(cluster)
        raise AssertionError(f"replay connected to {cluster}")


async def test_replay_refuses_a_target_outside_allowed_targets_without_connecting():
    factory = _NoProducers()
    pool = TargetPool(
        Settings(bootstrap_servers="home:9092"),
        NamespaceRegistry(),
        FakeClock(),
        producer_factory=factory,
    )
    ns = parse_namespace(
        {"name": "hooks", "target": {"type": "http", "url": "http://127.0.0.1:8/in"}}
    )
    spec = {"type": "kafka", "topic": "t", "bootstrap_servers": "evil:1"}
    env = Envelope("r-1", "hooks", None, {"n": 1}, "json", spec, Lifecycle(1, 1, 0), "t", 1)
    try:
        failure = await deliver_once(pool, env, ns)
    finally:
        await pool.close()
    assert failure is not None
    assert "allowed_targets" in failure
    assert factory.made == []
