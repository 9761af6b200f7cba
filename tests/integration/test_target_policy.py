"""A namespace's allowed_targets on the real broker: a record produced straight into the log
(past the API) that names an origin or cluster the namespace does not allow is dead-lettered
with a reason naming the policy, and the worker never connects to what it names."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer

from walstream.dlq import read_dlq
from walstream.records import Envelope, Lifecycle, encode_envelope

from .conftest import apply_namespace, eventually, wait_serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_a_record_naming_a_target_outside_the_policy_is_dead_lettered_unconnected(
    wal_settings, workers, recorder, wal_client, unique
):
    ns = f"policy-{unique}"
    accepted: list[str] = []

    async def count(reader, writer):
        accepted.append("connection")
        writer.close()

    forbidden = await asyncio.start_server(count, "127.0.0.1", 0)
    port = forbidden.sockets[0].getsockname()[1]
    try:
        await apply_namespace(
            wal_settings,
            {
                "name": ns,
                "max_attempts": 5,
                "backoff": {"base_ms": 200, "multiplier": 1.0, "cap_ms": 200, "jitter": 0.0},
                "target": {"type": "http", "url": recorder.url},
            },
        )
        worker = workers()
        await wait_serving(worker, f"wal.{ns}.log")
        now = int(time.time() * 1000)
        crafted = {
            "bad-http": {"type": "http", "url": f"http://127.0.0.1:{port}/steal"},
            "bad-kafka": {"type": "kafka", "topic": "x", "bootstrap_servers": f"127.0.0.1:{port}"},
        }
        producer = AIOKafkaProducer(bootstrap_servers=wal_settings.bootstrap_list)
        await producer.start()
        try:
            for record_id, target in crafted.items():
                env = Envelope(
                    record_id,
                    ns,
                    "k",
                    {"n": 0},
                    "json",
                    target,
                    Lifecycle(now, now, 0),
                    record_id,
                    now,
                )
                await producer.send_and_wait(f"wal.{ns}.log", encode_envelope(env), key=b"k")
        finally:
            await producer.stop()
        for target in crafted.values():  # the API refuses them outright
            refused = await wal_client.write(ns, {"n": 2}, target=target)
            assert refused.durable == "FALSE"
            assert "allowed_targets" in refused.message
        good = await wal_client.write(ns, {"n": 1}, key="k")
        assert good.ok

        async def dead():
            view = await read_dlq(wal_settings.bootstrap_list, f"wal.{ns}.dlq")
            return view.open if set(crafted) <= set(view.open) else None

        entries = await eventually(dead, 60, "the crafted records in the DLQ")
        for record_id in crafted:
            assert entries[record_id].error_class == "target_not_allowed"
            assert "allowed_targets" in entries[record_id].reason
            assert entries[record_id].attempts == 1  # refused once, not retried
        await eventually(recorder.successes, 30, "the good record")
        assert {r.headers["X-Wal-Id"] for r in recorder.successes()} == {good.id}
        assert accepted == []  # nothing ever connected to the forbidden port
    finally:
        forbidden.close()
        await forbidden.wait_closed()
