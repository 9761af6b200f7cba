"""Replay stops on a non-target error with a resume point, and resumes from it (issue 14 item 11).

On 9e4a94b any error other than a TargetError escaped ``replay()`` mid-way: the CLI died with a
traceback and no way to go on but from the start (re-delivering everything before it). Now the
replay stops with ``error`` and a per-partition cursor; ``--resume-from`` goes on from there and
every record is delivered exactly once across the two runs.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from walstream.namespaces.config import parse_namespace
from walstream.records import encode_envelope
from walstream.replay import replay
from walstream.testing import keyless_envelope

from .conftest import apply_namespace, run_cli
from .helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARTITIONS = 4
PER_PARTITION = 10


async def fill_log(settings, ns: str, sink: str, created_at_ms: int) -> list[str]:
    """PER_PARTITION records on each partition of the log; their ids in log order."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all")
    await producer.start()
    written = []
    try:
        for n in range(PARTITIONS * PER_PARTITION):
            record_id = f"r{n:03d}"
            target = {"type": "kafka", "topic": sink}
            env = keyless_envelope(record_id, ns, {"n": n}, target, created_at_ms, f"t{n}")
            await producer.send_and_wait(
                f"wal.{ns}.log", encode_envelope(env), partition=n % PARTITIONS
            )
            written.append(record_id)
    finally:
        await producer.stop()
    return written


class FlakyPool:
    """A target pool whose target raises a non-target error once, at one record; it records
    whether each delivery held a lease (an evicted cluster's producer stays open under one)."""

    def __init__(self, fail_at: str) -> None:
        self.fail_at = fail_at
        self.delivered: list[str] = []
        self.leases = 0
        self.unleased: list[str] = []

    async def target(self, spec, ns=None):
        return self, "flaky"

    @contextlib.asynccontextmanager
    async def lease(self, spec, ns=None):
        self.leases += 1
        try:
            yield self, "flaky"
        finally:
            self.leases -= 1

    async def deliver(self, env) -> None:
        if not self.leases:
            self.unleased.append(env.id)
        if env.id == self.fail_at:
            self.fail_at = ""
            raise RuntimeError("the target's client broke")
        self.delivered.append(env.id)


async def test_a_non_target_error_stops_the_replay_with_a_cursor_it_resumes_from(
    wal_settings, unique
):
    ns_name, sink = f"resume-{unique}", f"sink-{unique}"
    definition = {"name": ns_name, "target": {"type": "kafka", "topic": sink}}
    await apply_namespace(wal_settings, definition)
    ns = parse_namespace(definition)
    start = int(time.time() * 1000)
    written = await fill_log(wal_settings, ns_name, sink, start)
    window: dict[str, Any] = {"from_ms": start - 1_000, "to_ms": start + 60_000}

    pool = FlakyPool(fail_at="r021")  # partition 1, offset 5
    first = await replay(wal_settings.bootstrap_list, ns, pool, **window)  # type: ignore[arg-type]
    assert first.error == "RuntimeError: the target's client broke"
    assert first.resume_from is not None
    assert first.resume_from[1] == 5  # the record that stopped it is tried again
    assert "1:5" in (first.cursor or "")
    before = list(pool.delivered)
    assert "r021" not in before

    second = await replay(
        wal_settings.bootstrap_list,
        ns,
        pool,  # type: ignore[arg-type]
        resume_from=first.resume_from,
        **window,
    )
    assert second.error is None
    assert second.resume_from is None
    assert sorted(pool.delivered) == sorted(written)  # every record once, none twice
    assert first.delivered + second.delivered == len(written)
    assert pool.unleased == []  # every send held a lease: an eviction cannot close its producer


async def test_the_cli_resumes_from_a_cursor(wal_env, wal_settings, unique):
    ns, sink = f"resumecli-{unique}", f"sinkcli-{unique}"
    await apply_namespace(wal_settings, {"name": ns, "target": {"type": "kafka", "topic": sink}})
    start = int(time.time() * 1000)
    await fill_log(wal_settings, ns, sink, start)
    window = ["--from", str(start - 1_000), "--to", str(start + 60_000)]

    bad = run_cli(wal_env, "replay", ns, *window, "--resume-from", "1-5")
    assert bad.returncode == 2
    assert "--resume-from" in bad.stderr

    done = run_cli(wal_env, "replay", ns, *window, "--resume-from", "0:5,2:3")
    assert done.returncode == 0, done.stderr
    expected = (PER_PARTITION - 5) + (PER_PARTITION - 3)  # partitions 1 and 3: finished
    assert f"delivered {expected}," in done.stdout
    records = await read_topic(wal_settings.bootstrap_servers, sink, expect=expected)
    assert len(records) == expected
