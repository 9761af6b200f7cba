"""`make run` (``walstream run``): embedded broker, worker, API, demo namespaces, clean Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from walstream.broker import free_port
from walstream.client import WalClient
from walstream.records import decode_envelope

from .helpers import ROOT, read_topic

pytestmark = pytest.mark.integration


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(180)
def test_run_serves_a_write_readable_from_the_log_and_stops_cleanly(tmp_path):
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "WALSTREAM_BOOTSTRAP_SERVERS"}
    env.update(
        WALSTREAM_API_PORT=str(api_port),
        WALSTREAM_WORKER_WEB_PORT=str(free_port()),
        WALSTREAM_DATA_DIR=str(tmp_path / "data"),
        WALSTREAM_BROKER_SESSION_TIMEOUT_S="2",
        WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S="0.5",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "walstream", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    up = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                up.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert up.wait(120), "".join(lines)
        text = "".join(lines)
        servers = re.search(r"Kafka: (\S+)", text).group(1)
        broker_pid = int(re.search(r"pid (\d+)", text).group(1))
        assert f"http://127.0.0.1:{api_port}" in text
        assert "curl" in text
        token = re.search(r"Dev token \(admin, this run only\): (\S+)", text).group(1)
        assert f"Bearer {token}" in text  # the demo command uses it

        async def write_and_read():
            async with WalClient(f"http://127.0.0.1:{api_port}") as anonymous:
                refused = await anonymous.write("demo", {"nobody": 1})
            assert (refused.durable, refused.status) == ("FALSE", 401)  # auth is on
            async with WalClient(f"http://127.0.0.1:{api_port}", token=token) as wal:
                result = await wal.write("demo", {"hello": "world"}, key="greeting")
            assert result.ok, result
            records = await read_topic(servers, "wal.demo.log", expect=1)
            return result, records

        result, records = asyncio.run(write_and_read())
        assert len(records) == 1
        env_ = decode_envelope(records[0].value)
        assert env_.id == result.id
        assert env_.payload == {"hello": "world"}
        assert env_.target == {"type": "kafka", "topic": "demo.out"}

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        reader.join(5)
        assert "stopped" in "".join(lines)
        assert not _pid_alive(broker_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        # a child left running (after a failure) keeps the pipe open: closing it under the
        # reader thread would block for good and hide the failure
        if proc.stdout is not None and not reader.is_alive():
            proc.stdout.close()
