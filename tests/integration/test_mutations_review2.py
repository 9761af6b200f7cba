"""Second review of issue 18 (engineer R2) on the real broker with a real worker subprocess:
defects the first review's fixes left open.

Each test is a strict xfail until its owner fixes the defect named in its reason."""

from __future__ import annotations

import pytest

from walstream.core.mutations import Operation
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.testing.mutations import MutationWriter, SqliteDb, Txn
from walstream.topology import mutation_topics

from .conftest import apply_namespace, eventually, wait_serving
from .helpers import changelog_rows, mutations_definition, read_topic, worker_assignment

pytestmark = pytest.mark.integration


async def test_a_deleted_namespaces_open_transaction_leaves_no_rows(
    broker, wal_settings, workers, unique, tmp_path
):
    ns = f"mutdel-{unique}"
    topics = mutation_topics(ns)
    await apply_namespace(wal_settings, mutations_definition(ns, timeout_s=1))
    worker = workers(WALSTREAM_KV_URL=SqliteDb(tmp_path / "kv.sqlite").url)
    await wait_serving(worker, topics.markers, within_s=60)
    txn = Txn("orphan", [Operation(op="put", table="m_a", id="k", value=b"v")], 0)
    state_row = f"s:{ns}:orphan"

    async def rows_of_ns() -> list[str]:
        rows = await changelog_rows(broker, wal_settings.app_id)
        return sorted(k for k in rows if f":{ns}:" in k)

    async with MutationWriter(broker, ns) as writer:  # an operation; its client dies
        await writer.send(topics.mutations, "orphan", writer.op_records(txn, 0))
    await eventually(
        lambda: _has(rows_of_ns, state_row), 60, f"the open state\n{worker.log_tail()}"
    )
    publisher = NamespacePublisher(wal_settings)  # walstream ns delete
    await publisher.start()
    try:
        await publisher.delete(ns)
    finally:
        await publisher.stop()

    def unsubscribed() -> bool:
        body = worker_assignment(worker)
        return (
            body is not None
            and not body["rebalancing"]
            and all(t != topics.markers for t, _ in body["assignment"])
        )

    await eventually(unsubscribed, 60, f"the worker to leave {topics.markers}")
    # the transaction's deadline wake (due 1 s after its operation) is handed back to its
    # markers topic by the delay stage: the record that would purge its rows is there
    assert await read_topic(broker, topics.markers, expect=1, within_s=30)
    await eventually(
        lambda: _none(rows_of_ns), 20, "the deleted namespace's rows dropped"
    )  # fails: s:<ns>:orphan and its chunk row stay


async def _has(rows, key: str) -> bool:
    return key in await rows()


async def _none(rows) -> bool:
    return not await rows()
