"""The worker's /readyz waits for its replication stages (issue 17): every fan-out and region
writer the namespace registry asks for must run and have joined its consumer group, so `make
run`'s "up" and a k8s readiness probe mean the writers run. A stage that cannot start (its
region's cluster away) keeps the worker not ready, and delays no other stage."""

from __future__ import annotations

from typing import Any

import pytest

from walstream.namespaces.broadcast import NamespacePublisher
from walstream.testing.records import namespace_definition

from .conftest import apply_namespace, eventually, wait_serving
from .replication_rig import readyz, replicated_definition

pytestmark = pytest.mark.integration


async def test_the_worker_is_ready_only_once_its_replication_stages_have_joined(
    workers, wal_settings, memcached_servers, own_broker, unique
) -> None:
    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    good, away, plain = f"g{unique}", f"x{unique}", f"p{unique}"
    await apply_namespace(wal_settings, namespace_definition(plain))
    await apply_namespace(wal_settings, replicated_definition(good, servers))
    # region c of ``away`` names a Kafka cluster of its own, stopped once the namespace is
    # applied (which creates c's topics there): its writer and the fan-out to c cannot start
    # (the fan-outs to a and b, in groups of their own, start and join)
    await apply_namespace(
        wal_settings, replicated_definition(away, servers, {"c": own_broker.bootstrap_servers})
    )
    own_broker.stop(timeout=1.0)
    worker = workers()
    await wait_serving(worker, f"wal.{plain}.log", within_s=90)  # the agents have joined

    def waiting_for_away() -> Any:
        answer = readyz(worker.web_port)
        if answer is None or not answer[1].get("registry_loaded"):
            return None
        # ``good``'s fan-out and writers joined: only ``away``'s unstartable stages wait
        return (
            answer
            if answer[1].get("replication_waiting") == [f"{away}/c", f"{away}/fanout/c"]
            else None
        )

    status, body = await eventually(
        waiting_for_away, 90, f"only {away}'s stages to wait\n{worker.log_tail()}", every=0.5
    )
    assert status == 503
    assert body["status"] == "not ready"

    publisher = NamespacePublisher(wal_settings)
    await publisher.start()
    try:
        await publisher.delete(away)
    finally:
        await publisher.stop()

    def ready() -> Any:
        answer = readyz(worker.web_port)
        return answer if answer is not None and answer[0] == 200 else None

    status, body = await eventually(ready, 90, f"the worker ready\n{worker.log_tail()}", every=0.5)
    assert body["replication_waiting"] == []
    assert body["status"] == "ready"
