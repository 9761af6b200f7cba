"""One redrive per namespace across API processes (issue 14 item 11), on the real broker.

On 9e4a94b the 409 rule lived in one process's memory: two API processes (or a fresh one) both
started a redrive of the same DLQ. Now a redrive claims the DLQ on its topic first; of two
concurrent first redrives exactly one starts, the other gets 409, a fresh process too, and the
claim is released when the redrive ends.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer

from walstream.api.app import build_api
from walstream.core.dlq import CLAIM_KEY, CLAIM_PARTITION, claim_headers
from walstream.settings import Settings
from walstream.testing import send_dead_letter as dead_letter

from .conftest import apply_namespace, eventually, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ENTRIES = 20


async def test_concurrent_first_redrives_in_two_processes_start_exactly_one(
    api_client, wal_env, unique
):
    settings = Settings.from_env({**wal_env, "WALSTREAM_AUTH": "false"})  # auth: not tested here
    ns = f"claim-{unique}"
    await apply_namespace(settings, {"name": ns, "target": {"type": "kafka", "topic": "o"}})
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all")
    await producer.start()
    try:
        for n in range(ENTRIES):
            await dead_letter(producer, ns, f"r{n:02d}", n % 4, 1_000 + n)
    finally:
        await producer.stop()

    first = await api_client(build_api(settings))
    second = await api_client(build_api(settings))  # another API process
    url = f"/v1/namespaces/{ns}/dlq:redrive"
    body = {"rate": 2}  # 20 entries: ~10 s, long enough to overlap
    answers = await asyncio.gather(first.post(url, json=body), second.post(url, json=body))
    statuses = sorted(a.status for a in answers)
    assert statuses == [202, 409], [await a.text() for a in answers]
    winner, loser = (first, second) if answers[0].status == 202 else (second, first)
    assert (
        "already running" in (await next(a for a in answers if a.status == 409).json())["message"]
    )

    fresh = await api_client(build_api(settings))  # a process started meanwhile
    assert (await fresh.post(url, json=body)).status == 409
    cli = run_cli(wal_env, "dlq", "redrive", ns)  # the CLI claims the DLQ too
    assert cli.returncode == 1, cli.stdout
    assert "already running" in cli.stderr

    async def done() -> bool:
        return (await (await winner.get(url)).json())["state"] == "done"

    await eventually(done, 60, "the winning redrive to finish")
    assert (await (await winner.get(url)).json())["redriven"] == ENTRIES
    # released: the next redrive starts in any process (nothing is left to redrive)
    again = await loser.post(url, json={})
    assert again.status == 202, await again.text()
    assert (await again.json())["total"] == 0


async def test_a_dead_processs_claim_holds_only_for_its_lease(api_client, wal_env, unique):
    settings = Settings.from_env({**wal_env, "WALSTREAM_AUTH": "false"})
    ns = f"lease-{unique}"
    await apply_namespace(settings, {"name": ns, "target": {"type": "kafka", "topic": "o"}})
    topic = f"wal.{ns}.dlq"
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all")
    await producer.start()
    now = int(time.time() * 1000)
    client = await api_client(build_api(settings))
    url = f"/v1/namespaces/{ns}/dlq:redrive"
    try:
        await dead_letter(producer, ns, "r0", 0, 1_000)
        # a claim renewed just now by a process that then died: held
        await producer.send_and_wait(
            topic,
            b"",
            key=CLAIM_KEY,
            partition=CLAIM_PARTITION,
            headers=claim_headers("dead-now", now, 30_000),
        )
        assert (await client.post(url, json={})).status == 409
        # the same claim, last renewed more than a lease ago (written again: a renewal record
        # carries the time; here the fold keeps the latest, so use another claim id)
        ns2 = f"lease2-{unique}"
        await apply_namespace(settings, {"name": ns2, "target": {"type": "kafka", "topic": "o"}})
        await dead_letter(producer, ns2, "r0", 0, 1_000)
        await producer.send_and_wait(
            f"wal.{ns2}.dlq",
            b"",
            key=CLAIM_KEY,
            partition=CLAIM_PARTITION,
            headers=claim_headers("dead-long-ago", now - 31_000, 30_000),
        )
        # applied after the API started: its registry learns ns2 from the control topic
        deadline = time.monotonic() + 30
        while (await client.get(f"/v1/namespaces/{ns2}")).status != 200:
            assert time.monotonic() < deadline, f"the API never saw namespace {ns2}"
            await asyncio.sleep(0.1)
        started = await client.post(f"/v1/namespaces/{ns2}/dlq:redrive", json={})
        assert started.status == 202, await started.text()
        assert (await started.json())["total"] == 1

        async def done() -> bool:
            status = await client.get(f"/v1/namespaces/{ns2}/dlq:redrive")
            return (await status.json())["state"] == "done"

        await eventually(done, 60, "the redrive to finish")
    finally:
        await producer.stop()
