"""A real memcached server on a loopback port (Debian's ``memcached``), for tests and benchmarks.

Started as a subprocess and stopped by its PID; ``stop()`` then ``start()`` again keeps the
port, so a test can take a region's server down and bring it back (empty, as a restarted
memcached is).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from walstream.broker import free_port

__all__ = ["MemcachedProcess"]


class MemcachedProcess:
    """One memcached server: ``memcached -l 127.0.0.1 -p PORT -U 0 -m MB -t 1``."""

    def __init__(
        self, *, port: int | None = None, memory_mb: int = 64, item_size_max: str | None = None
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.memory_mb = memory_mb
        self.item_size_max = item_size_max
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port``, as a region's server list names it."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> MemcachedProcess:
        """Start the server and wait until it answers ``version``.

        Raises:
            RuntimeError: no memcached binary, or it exited or did not answer in time.
        """
        binary = shutil.which("memcached")
        if binary is None:
            raise RuntimeError("memcached not found: make system-deps (apt-get install memcached)")
        argv = [binary, "-l", self.host, "-p", str(self.port), "-U", "0"]
        argv += ["-m", str(self.memory_mb), "-t", "1"]
        if self.item_size_max:
            argv += ["-I", self.item_size_max]
        if os.geteuid() == 0:
            argv += ["-u", "root"]  # memcached refuses to run as root without -u
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, the system's memcached
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"memcached exited ({self._proc.returncode}): {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"memcached on {self.address} did not answer in {timeout}s")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                sock.sendall(b"version\r\n")
                return sock.recv(64).startswith(b"VERSION ")
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); its items are gone."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
