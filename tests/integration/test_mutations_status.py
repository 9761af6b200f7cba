"""The worker's status page of a multi-partition mutation (issue 18), with two workers on the real
broker: a transaction's status is answered by the worker holding its partition (the default
partitioner's over its txn id), whichever worker is asked; the other forwards, once."""

from __future__ import annotations

import time

import aiohttp
from aiokafka import AIOKafkaProducer

from walstream.core.mutations import Marker, Operation, encode_marker, encode_op_chunk, op_chunks
from walstream.core.placement import key_partition
from walstream.kafka.admin import ensure_topics
from walstream.mutation_pages import FORWARDED_HEADER
from walstream.topology import mutation_topic_specs, mutation_topics

from .conftest import apply_namespace, eventually
from .helpers import worker_assignment

PARTITIONS = 4  # WALSTREAM_DEFAULT_PARTITIONS' default: the table's and the topics'


async def held_partitions(worker, topic: str) -> set[int] | None:
    """The partitions of ``topic`` ``worker`` is assigned once no rebalance is going on (None
    before): those of its table's changelog it holds active (a consumer is assigned every
    changelog partition, the others as standbys)."""
    body = worker_assignment(worker)
    if body is None or body["rebalancing"] or body["in_recovery"]:
        return None
    return {p for t, p in body["assignment"] if t == topic}


async def ask(session, worker, ns: str, txn: str, **headers: str):
    url = f"http://127.0.0.1:{worker.web_port}/walstream/mutations/{ns}/{txn}"
    async with session.get(url, headers=headers) as answer:
        return answer.status, await answer.json(content_type=None)


async def test_a_transactions_status_is_answered_by_its_partitions_worker_when_another_is_asked(
    wal_env, wal_settings, workers, tmp_path, unique
):
    ns = f"mx{unique}"
    topics = mutation_topics(ns)
    await apply_namespace(
        wal_settings,
        {
            "name": ns,
            "max_attempts": 5,
            "backoff": {"base_ms": 50, "multiplier": 2.0, "cap_ms": 1_000, "jitter": 0.0},
            "target": {"type": "kv", "table": "users", "key": "unused"},
            "allowed_targets": {"kv_tables": ["users"]},
            "mutations": {"completion_timeout_s": 600},
        },
    )
    specs = mutation_topic_specs(ns, PARTITIONS, replication_factor=1, min_insync_replicas=1)
    await ensure_topics(wal_settings.bootstrap_list, specs)
    env = {"WALSTREAM_KV_URL": f"sqlite:///{tmp_path / 'kv.sqlite'}"}
    first, second = workers(**env), workers(**env)

    async def split() -> tuple[set[int], set[int]] | None:
        held = (
            await held_partitions(first, topics.mutations),
            await held_partitions(second, topics.mutations),
        )
        a, b = held
        if a and b and not a & b and a | b == set(range(PARTITIONS)):
            return a, b
        return None

    mine, _ = await eventually(split, 90, "both workers to hold partitions", every=0.5)
    txn = next(
        f"tx-{n}" for n in range(1000) if key_partition(f"tx-{n}".encode(), PARTITIONS) in mine
    )

    async with aiohttp.ClientSession() as session:
        # unknown, asked at either worker: 404 (a 503 while the first still recovers its table)
        for worker in (first, second):

            async def settled(worker=worker):
                status, body = await ask(session, worker, ns, txn)
                return (status, body) if status != 503 else None

            status, body = await eventually(settled, 30, "an answer", every=0.2)
            assert status == 404, body
            assert "unknown transaction" in body["error"]
        # the second worker never answers a partition it does not hold from its own table: a
        # question forwarded to it is refused (so its answers below came from the first)
        status, body = await ask(session, second, ns, txn, **{FORWARDED_HEADER: "1"})
        assert status == 503, body
        status, _ = await ask(session, second, ns, "bad:id")
        assert status == 400  # a ':' is in no txn id

        last: dict[int, object] = {}  # each worker's latest answer, for a failure's message
        producer = AIOKafkaProducer(bootstrap_servers=wal_settings.bootstrap_list, acks="all")
        await producer.start()
        try:

            async def put(seq: int) -> None:
                op = Operation(op="put", table="users", id=f"{txn}/{seq}", value=b"v%d" % seq)
                for c in op_chunks(ns, txn, seq, op, 1024):
                    await producer.send_and_wait(
                        topics.mutations, encode_op_chunk(c), key=txn.encode()
                    )

            await put(1)  # seq 0 not yet: open, missing 0

            async def answered(worker, wanted: str):
                status, body = await ask(session, worker, ns, txn)
                last[worker.web_port] = (status, body)
                return body if status == 200 and body["status"] == wanted else None

            body = await eventually(lambda: answered(second, "open"), 60, "open at the second")
            assert (body["received"], body["missing"], body["progress"]) == (1, [0], 0)
            assert await answered(first, "open") == body

            await put(0)
            marker = Marker(ns, txn, 2, int(time.time() * 1000))
            await producer.send_and_wait(topics.markers, encode_marker(marker), key=txn.encode())
        finally:
            await producer.stop()

        try:
            body = await eventually(lambda: answered(second, "committed"), 90, "committed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: last answered {last}\n{second.log_tail()}") from None
        assert body["operations"] == 2
        assert await answered(first, "committed") == body
