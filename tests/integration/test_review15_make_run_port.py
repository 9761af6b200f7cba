"""Review of issue 15 item 3 ("up" only when a write is deliverable): `make run` decides that its
API is ready by asking whatever answers on WALSTREAM_API_HOST:PORT, not its own API process. A
second `make run` (another terminal, a run left over) finds the port taken: its API exits
("address already in use") and is restarted forever, yet the launcher prints "walstream is up"
with a dev token the API on that port refuses (403), and "api (pid N) is ready again" for a
process that is about to exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from walstream.broker import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
UP = "walstream is up"


class _OtherApi(BaseHTTPRequestHandler):
    """What holds the port: another run's API, ready."""

    def do_GET(self) -> None:
        body = b'{"status":"ready"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


def test_a_run_whose_api_port_is_taken_does_not_say_it_is_up(tmp_path):
    api_port, worker_port = free_port(), free_port()
    other = ThreadingHTTPServer(("127.0.0.1", api_port), _OtherApi)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSTREAM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(
        WALSTREAM_API_PORT=str(api_port),
        WALSTREAM_WORKER_WEB_PORT=str(worker_port),
        WALSTREAM_DATA_DIR=str(tmp_path / "data"),
        WALSTREAM_BROKER_SESSION_TIMEOUT_S="2",
        WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S="0.5",
    )
    log = tmp_path / "run.log"
    with log.open("w") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "walstream", "run", "--namespaces", "topology/namespaces"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # until the run's worker is ready (then the old rule says "up" within a tick) or the
        # launcher gave up (exited)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and launcher.poll() is None:
            if _ready(f"http://127.0.0.1:{worker_port}/readyz"):
                time.sleep(5)
                break
            time.sleep(0.5)
        text = log.read_text()
        assert "address already in use" in text, text[-4000:]  # its API could not bind
        assert UP not in text, (
            "the launcher said it is up although its API never served the port:\n" + text[-4000:]
        )
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGINT)
            try:
                launcher.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
        other.shutdown()
        other.server_close()
