"""Integration fixtures: a walstream deployment of its own per test (app id, control topic, delay
tiers), worker subprocesses, the HTTP recorder target, and the API in-process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from walstream.api.app import build_api
from walstream.broker import free_port
from walstream.client import WalClient
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.settings import Settings

from .helpers import ROOT, WorkerProcess, worker_assignment
from .http_recorder import HttpRecorder
from .replication_rig import Rig


@pytest.fixture
def wal_env(broker, unique, tmp_path):
    """Environment of one test's walstream deployment."""
    return {
        "WALSTREAM_BOOTSTRAP_SERVERS": broker,
        "WALSTREAM_APP_ID": f"walstream-{unique}",
        "WALSTREAM_CONTROL_TOPIC": f"walstream.namespaces.{unique}",
        "WALSTREAM_STORE": "memory://",
        "WALSTREAM_DATA_DIR": str(tmp_path / "data"),
        "WALSTREAM_BROKER_SESSION_TIMEOUT_S": "2",
        "WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
        "WALSTREAM_RESUBSCRIBE_DELAY_S": "0.5",
        "WALSTREAM_REGISTRY_READY_TIMEOUT_S": "10",
        "WALSTREAM_AUTH": "false",  # auth has its own tests (test_auth_broker.py)
    }


@pytest.fixture
def wal_settings(wal_env):
    return Settings.from_env(wal_env)


@pytest.fixture
def recorder():
    recorder = HttpRecorder().start()
    yield recorder
    recorder.stop()


@pytest.fixture
def workers(wal_env, tmp_path):
    """``start(**env)`` runs a walstream worker (``faust -A walstream.app worker``)."""
    started: list[WorkerProcess] = []

    def start(**extra: str) -> WorkerProcess:
        port = free_port()
        env = {**wal_env, "WALSTREAM_WORKER_WEB_PORT": str(port), **extra}
        worker = WorkerProcess("walstream.app", env, tmp_path / f"worker-{len(started)}.log")
        worker.web_port = port
        started.append(worker.start())
        return worker

    yield start
    # The test is over: nothing needs a graceful stop (its final commit, Faust's 1 s shutdown
    # pause, up to WALSTREAM_DELIVER_REVOKE_WAIT_S for a record in flight). SIGKILL saves
    # 1-6 s per worker; tests that are about a stop call worker.stop() themselves.
    for worker in started:
        worker.kill()


async def apply_namespace(settings: Settings, definition: dict) -> None:
    publisher = NamespacePublisher(settings)
    await publisher.start()
    try:
        await publisher.apply(parse_namespace(definition))
    finally:
        await publisher.stop()


async def eventually(predicate, within_s: float, what: str, every: float = 0.1):
    """Poll a (sync or async) predicate until it returns something truthy."""
    deadline = time.monotonic() + within_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(every)


async def wait_serving(worker: WorkerProcess, topic: str, within_s: float = 30.0) -> None:
    """Until the worker owns partitions of ``topic`` (subscribed, rebalanced, recovered)."""

    def owns() -> bool:
        body = worker_assignment(worker)
        if body is None:
            return False
        return any(t == topic for t, _ in body["assignment"]) and not body["rebalancing"]

    await eventually(owns, within_s, f"worker to serve {topic}\n{worker.log_tail()}")


async def write_in_order(
    wal_client: WalClient, ns: str, key: str, payloads: list[Any]
) -> list[str]:
    """Write ``payloads`` under ``key``, one at a time, in order (the first until the API knows
    ``ns``); their ids."""

    async def first_write_ok():
        result = await wal_client.write(ns, payloads[0], key=key)
        return result if result.ok else None

    ids = [(await eventually(first_write_ok, 30, "the API to know the namespace", every=0.5)).id]
    for payload in payloads[1:]:
        result = await wal_client.write(ns, payload, key=key)
        assert result.ok, result
        ids.append(result.id)
    return ids


@pytest.fixture
async def wal_client(api_client, wal_settings):
    """A WalClient on the real API (in-process) of this test's deployment."""
    client = await api_client(build_api(wal_settings))
    async with WalClient(str(client.make_url(""))) as wal:
        yield wal


def run_cli(env: dict, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "walstream", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
async def rig(broker, memcached_servers, unique) -> AsyncIterator[Rig]:
    """Three regions a, b, c on the session's memcached servers (replication_rig.Rig)."""
    rig = Rig(
        broker, f"c{unique}", {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    )
    try:
        yield rig
    finally:
        await rig.stop()
