"""`make run`: the embedded broker (unless a cluster is set), a worker and the API, supervised.

Children run in their own sessions so Ctrl-C reaches only this launcher. A worker or API that
exits is started again after a backoff (walstream.core.supervise) while the broker keeps
running, so what it holds survives the crash. Only Ctrl-C (SIGINT or SIGTERM to the launcher) or
the broker's exit stops everything, in order API, worker, broker, by PID.

Table state belongs to a broker. The embedded broker keeps its log in memory and starts empty
every run, so a worker's table files from an earlier run describe changelogs that no longer
exist (Faust refuses them at its first recovery: "persisted offset ... higher than" the
changelog's end). Under the embedded broker the worker's data dir is therefore one of this run,
``<WALSTREAM_DATA_DIR>/embedded-broker/run-<launcher pid>``: removed when the run ends, and
folders of runs whose launcher is gone are removed at start. The kv target's database stays
where it was (``<WALSTREAM_DATA_DIR>/kv.sqlite``): it is a target's data, not the broker's. With
WALSTREAM_BOOTSTRAP_SERVERS set (a real cluster) nothing is moved or removed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from walstream.broker import EmbeddedBroker, die_with_parent, free_port, port_taken
from walstream.core.auth import hash_token, new_token
from walstream.core.supervise import RestartPolicy
from walstream.settings import Settings

__all__ = ["EMBEDDED_DATA_SUBDIR", "dev_token", "embedded_run_dir", "ready_as", "run_stack"]

#: The data dir's folder for table state of embedded-broker runs (one folder per run).
EMBEDDED_DATA_SUBDIR = "embedded-broker"
#: How often the launcher looks at its children and readiness.
_TICK_S = 0.2


def _say(message: str, *, error: bool = False) -> None:
    print(f"walstream run: {message}", file=sys.stderr if error else sys.stdout, flush=True)


@dataclass
class _Child:
    """A supervised walstream process (``python -m walstream <args>``)."""

    name: str
    args: list[str]
    ready_url: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    exits_in_a_row: int = 0
    restart_at: float | None = None
    #: Started again after an exit and not ready yet (said once it is).
    restarted: bool = False

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "walstream", *self.args],
            env=env,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops us in order
            preexec_fn=die_with_parent,  # a launcher killed outright leaves no orphans
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        _say(f"{self.name} started, pid {self.proc.pid}")

    def supervise(self, env: dict[str, str], policy: RestartPolicy) -> None:
        """Note an exit (and when to start again); start again once that time has come."""
        now = time.monotonic()
        if self.proc is not None:
            code = self.proc.poll()
            if code is None:
                return
            restart = policy.after_exit(self.exits_in_a_row, now - self.started_at)
            self.exits_in_a_row = restart.exits_in_a_row
            self.restart_at = now + restart.delay_s
            _say(
                f"{self.name} (pid {self.proc.pid}) exited with code {code}; "
                f"restarting in {restart.delay_s:.1f} s (exit {restart.exits_in_a_row} in a row)",
                error=True,
            )
            self.proc = None
        elif self.restart_at is not None and now >= self.restart_at:
            self.start(env)
            self.restarted = True

    def ready(self) -> bool:
        """Running, and its own /readyz says ready."""
        return self.proc is not None and ready_as(self.ready_url, self.proc.pid)

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ready_as(url: str, pid: int) -> bool:
    """``url`` answers ready, and the process answering is ``pid`` (its /readyz names its pid):
    another process on the port (another run's API) is not this run's child."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback URL
            if response.status != 200:
                return False
            body = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("pid") == pid


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def embedded_run_dir(data_dir: Path, launcher_pid: int) -> Path:
    """This run's data dir under the embedded broker; removes those of runs that are gone
    (their broker, and so the changelogs their tables were recovered from, went with them)."""
    root = data_dir / EMBEDDED_DATA_SUBDIR
    if root.is_dir():
        for folder in root.iterdir():
            prefix, _, pid = folder.name.partition("-")
            if prefix != "run" or not pid.isdigit() or int(pid) == launcher_pid:
                continue
            if not _pid_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
    run_dir = root / f"run-{launcher_pid}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a reused pid's leftovers
    run_dir.mkdir(parents=True)
    return run_dir


def taken_ports(settings: Settings, env: dict[str, str]) -> list[str]:
    """What the run would listen on and someone listens on already (a second `make run`, a run
    left over), as messages naming the port and the setting that moves it."""
    wanted = [("the API", "WALSTREAM_API_PORT", settings.api_host, settings.api_port)]
    if "WALSTREAM_WORKER_WEB_PORT" in env:  # else the launcher picks a free one
        port = int(env["WALSTREAM_WORKER_WEB_PORT"])
        host = settings.worker_web_host
        wanted.append(("the worker's web server", "WALSTREAM_WORKER_WEB_PORT", host, port))
    return [
        f"port {port} on {host or '*'} ({what}, {setting}) is taken: address already in use "
        f"(another `make run`?); stop it or set {setting} to a free port"
        for what, setting, host, port in wanted
        if port_taken(host, port)
    ]


def dev_token(settings: Settings, env: dict[str, str]) -> str | None:
    """A fresh admin token for this run, configured in ``env`` for the API (as its hash); None
    when auth is off or tokens are configured already (then the user has theirs)."""
    if not settings.auth or settings.tokens or settings.auth_file:
        return None
    token = new_token()
    env["WALSTREAM_TOKENS"] = f"{hash_token(token)}:admin::dev"
    return token


def _banner(servers: str, base: str, token: str | None) -> str:
    auth = f"       -H 'authorization: Bearer {token}' \\\n" if token else ""
    return (
        f"\nwalstream is up. Kafka: {servers}\nAPI: {base}  (OpenAPI: {base}/v1/openapi.json)\n"
        + (f"Dev token (admin, this run only): {token}\n" if token else "")
        + "Try:\n"
        f"  curl -s -X POST {base}/v1/namespaces/demo/log \\\n"
        "       -H 'content-type: application/json' \\\n"
        f"{auth}"
        '       -d \'{"payload": {"hello": "world"}, "lifecycle": {"delay_ms": 0}}\'\n'
        "Ctrl-C stops everything.\n"
    )


def run_stack(
    settings: Settings, namespace_dir: Path, *, policy: RestartPolicy | None = None
) -> int:
    """Run everything until Ctrl-C (0) or the broker's exit (1); return the exit code.

    "walstream is up" is printed once this run's API is ready and its worker has joined its
    group, recovered its tables and its delay stage owns the tier partitions (its /readyz),
    i.e. owns its partitions; each /readyz must name the child's pid (not another process on
    the port). A port the run needs that is taken already ends the run at once (1)."""
    policy = policy or RestartPolicy()
    broker: EmbeddedBroker | None = None
    children: list[_Child] = []
    run_dir: Path | None = None
    stop_requested = False
    stop_timeout = 15.0  # per child, before a SIGKILL

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        env = dict(os.environ)
        # Before anything starts: an API that cannot bind exits and is restarted for ever.
        taken = taken_ports(settings, env)
        for message in taken:
            _say(message, error=True)
        if taken:
            return 1
        if not settings.bootstrap_servers:
            data_dir = Path(settings.data_dir)
            run_dir = embedded_run_dir(data_dir, os.getpid())
            env["WALSTREAM_DATA_DIR"] = str(run_dir)
            if not settings.kv_url:  # the kv target's default database stays where it was
                env["WALSTREAM_KV_URL"] = f"sqlite:///{data_dir / 'kv.sqlite'}"
            broker = EmbeddedBroker().start()
            env["WALSTREAM_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            print(f"embedded broker (Tansu) at {broker.bootstrap_servers}, pid {broker.pid}")
            print(f"table state of this run: {run_dir} (removed when it stops)", flush=True)
        servers = env["WALSTREAM_BOOTSTRAP_SERVERS"]
        env.setdefault("WALSTREAM_WORKER_WEB_PORT", str(free_port()))
        token = dev_token(settings, env)
        applied = subprocess.run(
            [sys.executable, "-m", "walstream", "ns", "apply", str(namespace_dir)],
            env=env,
            check=False,
        )
        if applied.returncode != 0:
            _say("could not apply the demo namespaces", error=True)
            return 1
        base = f"http://{settings.api_host}:{settings.api_port}"
        worker_host = settings.worker_web_host
        if worker_host in {"0.0.0.0", "::", ""}:  # bind-all: ask on loopback
            worker_host = "127.0.0.1"
        worker_url = f"http://{worker_host}:{env['WALSTREAM_WORKER_WEB_PORT']}/readyz"
        children = [
            _Child("worker", ["worker", "-l", "info"], worker_url),
            _Child("api", ["-l", "info", "api"], f"{base}/readyz"),
        ]
        for child in children:
            child.start(env)
        up = False
        started = note_at = time.monotonic()
        while not stop_requested:
            code = broker.exit_code() if broker is not None else None
            if code is not None:
                _say(f"the embedded broker exited with code {code}; stopping", error=True)
                # the log went with it (memory): nothing left to finish or commit
                stop_timeout = 2.0
                return 1
            for child in children:
                child.supervise(env, policy)
            if not up:
                waiting = [c.name for c in children if not c.ready()]
                if not waiting:
                    up = True
                    for child in children:
                        child.restarted = False
                    print(_banner(servers, base, token), flush=True)
                elif time.monotonic() - note_at >= settings.run_waiting_note_s:
                    note_at = time.monotonic()
                    _say(f"still waiting for: {', '.join(waiting)} ({note_at - started:.0f} s)")
            else:
                for child in children:
                    if child.restarted and child.proc is not None and child.ready():
                        child.restarted = False
                        _say(f"{child.name} (pid {child.proc.pid}) is ready again")
            time.sleep(_TICK_S)
        return 0
    finally:
        for child in reversed(children):  # API, then worker
            child.stop(stop_timeout)
        if broker is not None:
            broker.stop()
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        print("stopped", flush=True)
