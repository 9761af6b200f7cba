"""`make run`: the embedded broker (unless a cluster is configured), a worker and the API.

Children are started in their own sessions so Ctrl-C reaches only this launcher, which then stops
them in order (API, worker, broker) by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from walstream.broker import EmbeddedBroker, free_port
from walstream.core.auth import hash_token, new_token
from walstream.settings import Settings

__all__ = ["run_stack"]


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "walstream", *args], env=env, start_new_session=True
    )


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback URL
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def dev_token(settings: Settings, env: dict[str, str]) -> str | None:
    """A fresh admin token for this run, configured in ``env`` for the API (as its hash); None
    when auth is off or tokens are configured already (then the user has theirs)."""
    if not settings.auth or settings.tokens or settings.auth_file:
        return None
    token = new_token()
    env["WALSTREAM_TOKENS"] = f"{hash_token(token)}:admin::dev"
    return token


def run_stack(settings: Settings, namespace_dir: Path) -> int:
    """Run everything until Ctrl-C (or a child dies); return the exit code."""
    broker: EmbeddedBroker | None = None
    children: list[subprocess.Popen[bytes]] = []
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        env = dict(os.environ)
        if not settings.bootstrap_servers:
            broker = EmbeddedBroker().start()
            env["WALSTREAM_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            print(f"embedded broker (Tansu) at {broker.bootstrap_servers}, pid {broker.pid}")
        servers = env["WALSTREAM_BOOTSTRAP_SERVERS"]
        env.setdefault("WALSTREAM_WORKER_WEB_PORT", str(free_port()))
        token = dev_token(settings, env)
        applied = subprocess.run(
            [sys.executable, "-m", "walstream", "ns", "apply", str(namespace_dir)],
            env=env,
            check=False,
        )
        if applied.returncode != 0:
            print("could not apply the demo namespaces", file=sys.stderr)
            return 1
        children.append(_spawn(["worker", "-l", "info"], env))
        children.append(_spawn(["-l", "info", "api"], env))
        base = f"http://{settings.api_host}:{settings.api_port}"
        if not _wait_ready(f"{base}/readyz", children, timeout=60):
            print("the API did not become ready; see the log above", file=sys.stderr)
            return 1
        auth = f"       -H 'authorization: Bearer {token}' \\\n" if token else ""
        print(
            f"\nwalstream is up. Kafka: {servers}\nAPI: {base}  (OpenAPI: {base}/v1/openapi.json)\n"
            + (f"Dev token (admin, this run only): {token}\n" if token else "")
            + "Try:\n"
            f"  curl -s -X POST {base}/v1/namespaces/demo/log \\\n"
            "       -H 'content-type: application/json' \\\n"
            f"{auth}"
            '       -d \'{"payload": {"hello": "world"}, "lifecycle": {"delay_ms": 0}}\'\n'
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stop_requested:
            if any(p.poll() is not None for p in children):
                print("a walstream process exited; stopping", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for proc in reversed(children):
            _stop(proc)
        if broker is not None:
            broker.stop()
        print("stopped", flush=True)
