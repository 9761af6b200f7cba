"""Mutation routes (issue 18) against the real broker: what a durable TRUE answer put on the
log is exactly the records walstream.core.mutations builds, read back from the topics; a
transaction's records share one partition number of both topics; a MutateItems' marker comes
after its operations; a broker that is down answers FALSE / UNKNOWN, as WriteToLog."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from aiokafka.partitioner import DefaultPartitioner

from walstream.api.app import build_api
from walstream.client import WalClient, mutation_operation
from walstream.core.mutations.chunks import items_records, op_chunks, reassemble
from walstream.core.mutations.request import parse_mutate_items, parse_operation
from walstream.core.mutations.wire import Marker, decode_marker, decode_op_chunk
from walstream.settings import Settings
from walstream.topology import mutation_topics

from .conftest import apply_namespace, eventually, wait_serving
from .helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TABLES = {"allowed_targets": {"kv_tables": ["accounts", "orders"]}}


def _definition(name: str) -> dict:
    return {
        "name": name,
        "target": {"type": "kv", "table": "items", "key": "k"},
        **TABLES,
        "mutations": {"completion_timeout_s": 120},
    }


def _partition(key: bytes, partitions: int) -> int:
    """Where Kafka's default partitioner puts ``key`` (what the API's producer does)."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(key, every, every))


async def test_true_means_exactly_the_core_records_on_one_partition_of_both_topics(
    api_client, wal_settings, unique
):
    ns = f"muts-{unique}"
    await apply_namespace(wal_settings, _definition(ns))
    # small chunks: a 3,000-byte value is three records
    settings = wal_settings.replace(mutation_chunk_bytes=1024, mutation_txn_bytes_max=1 << 20)
    limits = settings.mutation_limits()
    api = await api_client(build_api(settings))
    base = str(api.make_url("")).rstrip("/")
    operations = [
        mutation_operation("put", "items", "a", {"n": 1}),
        mutation_operation("delete", "accounts", "b", original_write_time=1_700_000_000_000),
        mutation_operation("put", "orders", "c", bytes(range(250)) * 12),
    ]
    one = {"seq1": mutation_operation("put", "orders", "x", [1, 2]), "seq0": operations[0]}
    before_ms = int(time.time() * 1000)
    async with WalClient(base) as wal:
        items = await wal.mutate_items(ns, "items-1", operations)
        assert (items.durable, items.status) == ("TRUE", 200), items
        # one operation at a time, out of order, then the marker
        for seq in (1, 0):
            op = one[f"seq{seq}"]
            sent = await wal.mutate(
                ns, "ops-2", seq, op["op"], op["table"], op["id"], op.get("value")
            )
            assert sent.durable == "TRUE", sent
        done = await wal.complete(ns, "ops-2", 2)
        assert done.durable == "TRUE", done
    after_ms = int(time.time() * 1000)

    topics = mutation_topics(ns)
    servers = settings.bootstrap_servers
    assert servers is not None
    ops = await read_topic(servers, topics.mutations, expect=7, within_s=30)
    markers = await read_topic(servers, topics.markers, expect=2, within_s=30)

    parsed = parse_mutate_items(
        {"txn_id": "items-1", "operations": operations}, limits, now_ms=after_ms
    )
    want_items, want_marker = items_records(ns, parsed, limits.chunk_bytes, at_ms=0)
    want_ops2 = [
        *op_chunks(ns, "ops-2", 1, parse_operation(one["seq1"], limits, now_ms=after_ms), 1024),
        *op_chunks(ns, "ops-2", 0, parse_operation(one["seq0"], limits, now_ms=after_ms), 1024),
    ]
    assert len(want_items) == 5  # the 3,000-byte value in three chunks
    by_txn: dict[bytes, list] = {}
    for record in ops:
        by_txn.setdefault(record.key, []).append(record)
    assert set(by_txn) == {b"items-1", b"ops-2"}
    for key, want in ((b"items-1", want_items), (b"ops-2", want_ops2)):
        got = sorted(by_txn[key], key=lambda r: r.offset)
        assert [decode_op_chunk(r.value) for r in got] == want  # exactly, once each, in order
        partition = _partition(key, settings.default_partitions)
        assert {r.partition for r in got} == {partition}

    marker_of = {r.key: r for r in markers}
    assert set(marker_of) == {b"items-1", b"ops-2"}
    for key, count, digest in (
        (b"items-1", 3, want_marker.digest),
        (b"ops-2", 2, None),
    ):
        record = marker_of[key]
        marker = decode_marker(record.value)
        assert isinstance(marker, Marker)
        assert before_ms <= marker.at_ms <= after_ms  # the API's time
        assert marker == Marker(ns, key.decode(), count, marker.at_ms, digest)
        # the same partition number as the transaction's operations
        assert record.partition == _partition(key, settings.default_partitions)
        assert record.partition == by_txn[key][0].partition
    # the MutateItems' marker was written once its operations were acked
    last_op = max(r.timestamp for r in by_txn[b"items-1"])
    assert marker_of[b"items-1"].timestamp >= last_op


async def test_nothing_reaches_the_topics_for_a_refused_request(api_client, wal_settings, unique):
    ns = f"mutr-{unique}"
    await apply_namespace(wal_settings, _definition(ns))
    api = await api_client(build_api(wal_settings))
    base = str(api.make_url("")).rstrip("/")
    async with WalClient(base) as wal:
        refused = await wal.mutate_items(
            ns,
            "t",
            [
                mutation_operation("put", "orders", "a", 1),
                mutation_operation("put", "users", "b", 1),
            ],
        )
        assert (refused.durable, refused.status, refused.field) == (
            "FALSE",
            403,
            "operations[1].table",
        )
        bad = await wal.mutate(ns, "t", 0, "put", "orders", "", 1)
        assert (bad.status, bad.field) == (400, "id")
        too_many = await wal.complete(ns, "t", 1001)
        assert (too_many.status, too_many.field) == (413, "count")
        # a namespace without the block: 404
        await apply_namespace(
            wal_settings,
            {"name": f"p-{unique}", "target": {"type": "kv", "table": "t", "key": "k"}},
        )
        async with asyncio.timeout(30):
            while (await wal.complete(f"p-{unique}", "t", 1)).status != 404:
                await asyncio.sleep(0.2)
        ok = await wal.complete(ns, "t", 1)  # the one write that is taken
        assert ok.durable == "TRUE", ok
    servers = wal_settings.bootstrap_servers
    assert servers is not None
    assert await read_topic(servers, mutation_topics(ns).mutations, expect=1, within_s=3) == []
    assert len(await read_topic(servers, mutation_topics(ns).markers, expect=2, within_s=5)) == 1


@pytest.mark.timeout(150)
async def test_a_broker_that_is_down_answers_false_or_unknown_as_write_to_log(
    api_client, own_broker
):
    settings = Settings(
        bootstrap_servers=own_broker.bootstrap_servers,
        write_timeout_s=2.0,
        shed_retry_after_s=3.0,
        registry_ready_timeout_s=30.0,
        auth=False,
    )
    await apply_namespace(settings, _definition("written"))
    api = await api_client(build_api(settings))
    ops = [mutation_operation("put", "items", "a", 1)]
    base = str(api.make_url("")).rstrip("/")
    async with WalClient(base) as wal:
        assert (await wal.mutate_items("written", "t-0", ops)).durable == "TRUE"
        assert (await wal.write("written", 1)).durable == "TRUE"
        # a namespace made after the API's producer fetched its metadata: none for its topics
        await apply_namespace(settings, _definition("later"))
        async with asyncio.timeout(60):
            while (await api.get("/v1/namespaces/later")).status != 200:
                await asyncio.sleep(0.2)

        pid = own_broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(own_broker.stop)  # reaps it

        # topics the API never wrote to: not handed over, certainly not on the log
        for answer in (
            await wal.complete("later", "t-1", 1),
            await wal.mutate("later", "t-1", 0, "put", "items", "a", 1),
            await wal.mutate_items("later", "t-1", ops),
        ):
            assert (answer.status, answer.durable) == (503, "FALSE"), answer
            assert answer.message.startswith("broker unavailable"), answer
        # topics it wrote to: as WriteToLog, refused (503 FALSE) or maybe on the log (504 UNKNOWN)
        answers = [
            await wal.write("written", 2),
            await wal.mutate_items("written", "t-2", ops),
            await wal.mutate("written", "t-3", 0, "put", "items", "a", 1),
            await wal.complete("written", "t-0", 1),
        ]
        for answer in answers:
            assert (answer.status, answer.durable) in {(503, "FALSE"), (504, "UNKNOWN")}, answer


async def test_a_16_mib_transaction_of_1000_operations_and_a_5_mb_value_land_intact(
    api_client, wal_settings, unique
):
    """The default limits (1,000 operations, 16 MiB) in one MutateItems over HTTP; a 5 MB value
    is chunked (256 KiB a record) and every value reassembles intact from the topic."""
    ns = f"mutbig-{unique}"
    await apply_namespace(wal_settings, _definition(ns))
    settings = wal_settings.replace(write_timeout_s=60.0)  # 16 MiB on a loaded machine
    limits = settings.mutation_limits()
    assert (limits.operations_max, limits.txn_bytes_max) == (1000, 16 * 1024 * 1024)
    api = await api_client(build_api(settings))
    big = os.urandom(5_000_000)
    small = 16 * 1024 * 1024 - len(big) - 1000 * 64  # the rest, over 999 operations
    values = [big, *(os.urandom(small // 999 - 16) for _ in range(999))]
    operations = [mutation_operation("put", "items", f"k{i:03d}", v) for i, v in enumerate(values)]
    weight = sum(len(v) + len(f"k{i:03d}") + len("items") for i, v in enumerate(values))
    assert 15 * 1024 * 1024 < weight <= limits.txn_bytes_max
    async with WalClient(str(api.make_url("")).rstrip("/"), timeout_s=120) as wal:
        answer = await wal.mutate_items(ns, "big-1", operations)
        assert (answer.durable, answer.status) == ("TRUE", 200), answer
        over = await wal.mutate_items(ns, "big-2", [*operations[1:], operations[1], operations[2]])
        assert (over.status, over.field) == (413, "operations")  # 1,001 operations
    servers = settings.bootstrap_servers
    assert servers is not None
    chunks = -(-len(big) // limits.chunk_bytes)  # 20 records of 256 KiB
    expect = chunks + 999
    records = await read_topic(servers, mutation_topics(ns).mutations, expect=expect, within_s=60)
    assert len(records) == expect
    by_seq: dict[int, list] = {}
    for record in sorted(records, key=lambda r: r.offset):
        chunk = decode_op_chunk(record.value)
        by_seq.setdefault(chunk.seq, []).append(chunk)
    assert sorted(by_seq) == list(range(1000))
    assert len(by_seq[0]) == chunks
    for seq, value in enumerate(values):
        assert reassemble(by_seq[seq]).value == value, seq
    [record] = await read_topic(servers, mutation_topics(ns).markers, expect=1, within_s=10)
    marker = decode_marker(record.value)
    assert isinstance(marker, Marker)
    assert marker.op_count == 1000


async def test_the_status_route_asks_the_worker_and_follows_a_transaction_to_committed(
    api_client, wal_settings, workers, tmp_path, unique
):
    """End to end: MutateItems through the API, a real worker applies it to SQLite, and the
    API's GET answers from the worker page (WALSTREAM_WORKER_URL): open before its marker,
    committed after; an unknown transaction is 404."""
    ns = f"mutst-{unique}"
    await apply_namespace(wal_settings, _definition(ns))
    kv = tmp_path / "kv.sqlite"
    worker = workers(WALSTREAM_KV_URL=f"sqlite:///{kv}")
    await wait_serving(worker, mutation_topics(ns).markers, within_s=90)
    settings = wal_settings.replace(worker_url=f"http://127.0.0.1:{worker.web_port}")
    api = await api_client(build_api(settings))
    async with WalClient(str(api.make_url("")).rstrip("/")) as wal:
        status, body = await wal.mutation_status(ns, "never-sent")
        assert status == 404, body
        assert "never-sent" in body["message"]
        sent = await wal.mutate(ns, "t-1", 1, "put", "orders", "b", {"n": 2})
        assert sent.ok, sent

        async def state(wanted: str):
            status, body = await wal.mutation_status(ns, "t-1")
            return body if status == 200 and body["status"] == wanted else None

        body = await eventually(lambda: state("open"), 60, f"open\n{worker.log_tail()}")
        assert (body["namespace"], body["txn_id"], body["missing"]) == (ns, "t-1", [0])
        assert (await wal.mutate(ns, "t-1", 0, "put", "items", "a", {"n": 1})).ok
        assert (await wal.complete(ns, "t-1", 2)).ok
        body = await eventually(lambda: state("committed"), 90, f"committed\n{worker.log_tail()}")
        assert body["operations"] == 2
