"""SIGTERM stops the API with a request still in flight: in-flight requests get
WALSTREAM_WRITE_TIMEOUT_S (and a second) to be answered, then are cancelled; aiohttp's own
default waited 60 s for each, so a request stuck on the broker held the API's shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from walstream.broker import free_port

from .conftest import apply_namespace, eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

#: far below aiohttp's 60 s, far above the 1 s (+ 1 s) the API is given
STOPS_WITHIN_S = 30


async def _healthy(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return (await reader.read()).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_sigterm_cancels_a_request_in_flight_and_the_api_exits(wal_env, wal_settings, unique):
    ns = f"stop-{unique}"
    await apply_namespace(wal_settings, {"name": ns, "target": {"type": "kafka", "topic": "o"}})
    port = free_port()
    env = {
        **os.environ,
        **wal_env,
        "WALSTREAM_API_PORT": str(port),
        "WALSTREAM_WRITE_TIMEOUT_S": "1",
        "WALSTREAM_BODY_READ_TIMEOUT_S": "120",  # the request below would wait that long
    }
    api = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "walstream",
        "api",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually(lambda: _healthy(port), 60, "the API to serve", every=0.2)
        # a write in flight: its body never comes (the API waits up to 120 s for it)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /v1/namespaces/{ns}/log HTTP/1.1\r\nHost: x\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        try:
            # the head is read: nothing comes back until the body is in (or the API stops)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 1.0)
            api.send_signal(signal.SIGTERM)
            started = time.monotonic()
            try:
                code = await asyncio.wait_for(api.wait(), STOPS_WITHIN_S)
            except TimeoutError:
                pytest.fail(f"the API did not exit within {STOPS_WITHIN_S} s of SIGTERM")
            stopped_in = time.monotonic() - started
            assert code == 0, code
            assert stopped_in >= 2.0  # the request was in flight: it got its 1 + 1 s
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        if api.returncode is None:
            api.kill()
            await api.wait()
