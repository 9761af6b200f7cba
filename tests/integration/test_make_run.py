"""`make run` (``walstream run``): embedded broker, worker, API, demo namespaces, clean Ctrl-C;
a second run on the same data dir, a worker crash the launcher restarts, "up" once the worker
owns its partitions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from walstream.broker import free_port
from walstream.client import WalClient, mutation_operation
from walstream.core.delay import TIERS_MS
from walstream.dev import EMBEDDED_DATA_SUBDIR, ready_as
from walstream.records import decode_envelope

from .helpers import ROOT, get_json, read_topic, wait_until
from .http_recorder import HttpRecorder

pytestmark = pytest.mark.integration

#: Generous: every start runs a broker, `ns apply`, a Faust worker and the API on a loaded machine.
START_S = 150.0
UP = "walstream is up"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _is_ours(pid: int) -> bool:
    """The pid still runs one of walstream's processes (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"walstream" in cmdline or b"tansu" in cmdline


def _run_env(data_dir: Path) -> dict[str, str]:
    # No WALSTREAM_* from outside (a configured cluster, the tests' memory store): `make run` as
    # a newcomer runs it, with the default RocksDB table store.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSTREAM_")}
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # when the suite itself runs under make
        env.pop(name, None)
    # this checkout's code, as `python -m` from ROOT would run it, even when the venv's
    # `walstream` script was installed (editable) from another checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(
        WALSTREAM_API_PORT=str(free_port()),
        WALSTREAM_WORKER_WEB_PORT=str(free_port()),
        WALSTREAM_DATA_DIR=str(data_dir),
        WALSTREAM_BROKER_SESSION_TIMEOUT_S="2",
        WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S="0.5",
        WALSTREAM_AUTH="false",  # auth under `make run`: the first test
    )
    return env


class Launcher:
    """One `make run` (or ``walstream run``) in its own session, its output collected.

    ``interrupt`` is a Ctrl-C (SIGINT to the session's process group: make and the launcher;
    the launcher's children run in sessions of their own). ``kill_all`` kills by PID whatever
    the output named (broker, worker and API starts) and the launcher's group, even when the
    launcher itself is gone."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.env = env
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    @classmethod
    def make_run(cls, env: dict[str, str], namespaces: Path) -> Launcher:
        venv = Path(sys.executable).parent.parent
        # -o: never rebuild the venv from a test (the stamp may be older than pyproject.toml)
        return cls(
            [
                "make",
                "-s",
                "-o",
                f"{venv}/.installed",
                "run",
                f"VENV={venv}",
                f"NAMESPACES={namespaces}",
            ],
            env,
        )

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line)

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = START_S, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in the output from character ``after`` on."""

        def found() -> re.Match[str] | bool:
            match = re.compile(pattern).search(self.text, after)
            # the launcher gone (its output read to the end): no need to wait any longer
            return match or (self.proc.poll() is not None and not self._reader.is_alive())

        match = self.wait_until(found, timeout, pattern)
        if match is True:
            raise AssertionError(
                f"the launcher exited ({self.proc.returncode}) before printing {pattern!r}"
                f"\n--- output ---\n{self.text[-6000:]}"
            )
        return match

    def wait_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """helpers.wait_until, failing with the end of the launcher's output."""
        try:
            return wait_until(predicate, timeout, what, every=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- output ---\n{self.text[-6000:]}") from None

    def pids(self) -> set[int]:
        return {int(p) for p in re.findall(r"\bpid (\d+)", self.text)}

    def worker_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"worker started, pid (\d+)", self.text)]

    def api_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"api started, pid (\d+)", self.text)]

    def broker_pid(self) -> int:
        found = re.search(r"embedded broker \(Tansu\) at \S+, pid (\d+)", self.text)
        assert found is not None
        return int(found.group(1))

    def interrupt(self, timeout: float = 90.0) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        for pid in self.pids():
            if _pid_alive(pid) and _is_ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._reader.join(10)
        # a child left running keeps the pipe open: closing it under the reader would block
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()


@pytest.fixture
def launchers():
    started: list[Launcher] = []

    def track(launcher: Launcher) -> Launcher:
        started.append(launcher)
        return launcher

    yield track
    for launcher in started:
        launcher.kill_all()


@pytest.fixture
def http_namespace(tmp_path):
    """A namespaces folder holding ``hooks``: delivered to the recorder, retried for ever, fast."""
    recorder = HttpRecorder().start()
    folder = tmp_path / "namespaces"
    folder.mkdir()
    (folder / "hooks.toml").write_text(
        'name = "hooks"\nmax_attempts = 1000\n'
        "[backoff]\nbase_ms = 100\nmultiplier = 2.0\ncap_ms = 1000\njitter = 0.0\n"
        f'[target]\ntype = "http"\nurl = "{recorder.url}"\n'
    )
    yield folder, recorder
    recorder.stop()


def _write(env: dict[str, str], payload: dict, namespace: str = "hooks", **options: Any) -> str:
    async def write() -> str:
        async with WalClient(f"http://127.0.0.1:{env['WALSTREAM_API_PORT']}") as wal:
            result = await wal.write(namespace, payload, **options)
        assert result.durable == "TRUE", result
        assert result.id is not None
        return result.id

    return asyncio.run(write())


def _deliveries(recorder: HttpRecorder, record_id: str, *, ok: bool) -> list:
    return [
        r
        for r in (recorder.successes() if ok else recorder.all())
        if {k.lower(): v for k, v in r.headers.items()}.get("x-wal-id") == record_id
    ]


def _owns_partitions(env: dict[str, str], topic: str) -> None:
    """The worker owns ``topic``'s partitions and is neither rebalancing nor recovering."""
    body = get_json(f"http://127.0.0.1:{env['WALSTREAM_WORKER_WEB_PORT']}/walstream/assignment")
    owned = sorted(p for t, p in body["assignment"] if t == topic)
    assert owned == [0, 1, 2, 3], body
    assert (body["rebalancing"], body["in_recovery"]) == (False, False), body


@pytest.mark.timeout(600)
def test_a_second_make_run_on_the_same_data_dir_starts_and_delivers(
    tmp_path, http_namespace, launchers
):
    """The embedded broker starts empty every run: the table state of the first run (an
    attempt count written and removed: persisted changelog offset 1) must not stop the second
    (Faust refused it: ConsistencyError, `make run` exited 1)."""
    namespaces, recorder = http_namespace
    data_dir = tmp_path / "data"
    env = _run_env(data_dir)
    for run in (1, 2):
        launcher = launchers(Launcher.make_run(env, namespaces))
        launcher.wait_for(UP)
        _owns_partitions(env, "wal.hooks.log")  # "up" once the worker owns its partitions
        if run == 1:
            recorder.fail_next(1)  # one failed attempt: the attempts table is written
        record_id = _write(env, {"run": run})
        launcher.wait_until(
            lambda record_id=record_id: _deliveries(recorder, record_id, ok=True),
            60,
            f"the write of run {run} delivered",
        )
        if run == 1:
            assert len(_deliveries(recorder, record_id, ok=False)) >= 2  # failed, then delivered
        pids = launcher.pids()
        assert len(pids) == 3  # broker, worker, API
        launcher.interrupt()
        assert "stopped" in launcher.text
        assert not any(_pid_alive(pid) for pid in pids), launcher.text
        # the run's table state went with its broker; the data dir itself stays
        assert list((data_dir / EMBEDDED_DATA_SUBDIR).iterdir()) == []


@pytest.mark.timeout(400)
def test_make_run_restarts_a_killed_worker_and_delivers_what_was_written_before(
    tmp_path, http_namespace, launchers
):
    """SIGKILL of the worker: the launcher logs it and starts the worker again; the broker (the
    log, in memory) and the API keep running, and the record written before the kill (failing
    at the target until then) is delivered by the new worker. A killed API is started again
    too; the broker's exit stops everything."""
    namespaces, recorder = http_namespace
    env = _run_env(tmp_path / "data")
    launcher = launchers(Launcher.make_run(env, namespaces))
    launcher.wait_for(UP)
    broker_pid, api_pids = launcher.broker_pid(), launcher.api_pids()
    (worker_pid,) = launcher.worker_pids()

    recorder.fail_always(503)
    record_id = _write(env, {"before": "the kill"})
    launcher.wait_until(lambda: _deliveries(recorder, record_id, ok=False), 60, "an attempt")
    mark = len(launcher.text)
    os.kill(worker_pid, signal.SIGKILL)
    killed_at = time.time()
    recorder.fail_always(None)

    exited = launcher.wait_for(
        rf"worker \(pid {worker_pid}\) exited with code -9; restarting in ([\d.]+) s", after=mark
    )
    assert float(exited.group(1)) > 0  # a backoff, logged
    restarted = launcher.wait_for(r"worker started, pid (\d+)", after=exited.end())
    assert int(restarted.group(1)) != worker_pid
    delivered = launcher.wait_until(
        lambda: _deliveries(recorder, record_id, ok=True), 120, "the record delivered after"
    )
    assert all(r.at > killed_at for r in delivered)
    launcher.wait_for(r"worker \(pid \d+\) is ready again", after=restarted.end())
    # nothing else was stopped or started: the broker kept the log, the API kept serving
    assert _pid_alive(broker_pid)
    assert launcher.api_pids() == api_pids
    assert launcher.proc.poll() is None

    # the API too: killed, started again, serving the next write
    (api_pid,) = api_pids
    mark = len(launcher.text)
    os.kill(api_pid, signal.SIGKILL)
    launcher.wait_for(rf"api \(pid {api_pid}\) exited with code -9; restarting in", after=mark)
    api_again = launcher.wait_for(r"api \(pid (\d+)\) is ready again", after=mark)
    after_id = _write(env, {"after": "the api kill"})
    launcher.wait_until(lambda: _deliveries(recorder, after_id, ok=True), 60, "the next write")

    # the broker's exit stops everything (the log is gone with it)
    os.kill(broker_pid, signal.SIGKILL)
    assert launcher.proc.wait(90) != 0
    launcher.wait_until(lambda: "stopped" in launcher.text, 10, "stopped")
    assert "the embedded broker exited with code -9; stopping" in launcher.text
    worker_again = int(restarted.group(1))
    assert not any(_pid_alive(pid) for pid in (worker_again, int(api_again.group(1))))


#: A MutateItems on the demo namespace ``kv`` (topology/namespaces/kv.toml).
DEMO_MUTATE_ITEMS = [
    mutation_operation("put", "profiles", "alice", {"name": "Alice", "cart": "c-1"}),
    mutation_operation("put", "carts", "c-1", {"items": ["book"]}),
    mutation_operation("delete", "orders", "o-0"),
]


def test_the_readme_quick_start_sends_the_mutate_items_tested_here():
    """The README's dev-stack MutateItems (a curl body) is the one the make-run test commits."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"\$API/v1/namespaces/kv/mutations .*?-d '(\{.*?\})'\n", readme, re.S)
    assert found is not None, "the README's quick-start MutateItems on kv"
    assert json.loads(found.group(1)) == {"txn_id": "order-1", "operations": DEMO_MUTATE_ITEMS}


def _mutate_items_commits_on_the_demo_kv_namespace(
    launcher: Launcher, api_port: int, token: str, data_dir: Path
) -> None:
    """The demo namespace ``kv`` takes a MutateItems as `make run` starts it: durable TRUE, its
    status (the API asks the worker) reaches committed, and the rows are in the run's kv
    database (<WALSTREAM_DATA_DIR>/kv.sqlite). A retried MutateItems is TRUE again."""

    async def mutate() -> dict[str, Any]:
        async with WalClient(f"http://127.0.0.1:{api_port}", token=token) as wal:
            result = await wal.mutate_items("kv", "order-1", DEMO_MUTATE_ITEMS)
            assert (result.durable, result.status) == ("TRUE", 200), result
            deadline = time.monotonic() + 90
            while True:
                status, body = await wal.mutation_status("kv", "order-1")
                if status == 200 and body["status"] == "committed":
                    break
                # 404 until the worker read the marker, 503 while its table recovers
                assert status in (200, 404, 503), (status, body)
                assert time.monotonic() < deadline, ("not committed within 90 s", status, body)
                assert status != 200 or body["status"] in ("open", "committing"), body
                await asyncio.sleep(0.2)
            again = await wal.mutate_items("kv", "order-1", DEMO_MUTATE_ITEMS)
            assert again.durable == "TRUE", again
            return body

    try:
        body = asyncio.run(mutate())
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- output ---\n{launcher.text[-6000:]}") from None
    assert body["operations"] == len(DEMO_MUTATE_ITEMS), body
    with contextlib.closing(sqlite3.connect(data_dir / "kv.sqlite")) as db:
        rows = {
            (table, key): (value, deleted)
            for table in ("profiles", "carts", "orders")
            for key, value, deleted in db.execute(
                f"SELECT key, value, deleted FROM {table}"  # noqa: S608 - the tables above
            )
        }
    assert rows == {
        ("profiles", "alice"): (b'{"name":"Alice","cart":"c-1"}', 0),
        ("carts", "c-1"): (b'{"items":["book"]}', 0),
        ("orders", "o-0"): (None, 1),  # a delete leaves its tombstone
    }


@pytest.mark.timeout(300)
def test_run_serves_a_write_readable_from_the_log_and_stops_cleanly(tmp_path, launchers):
    """The demo namespaces as `walstream run` applies them: a write to ``demo`` lands on its
    log; a MutateItems on ``kv`` commits (as the README's quick-start shows)."""
    env = _run_env(tmp_path / "data")
    env.pop("WALSTREAM_AUTH")  # auth on, with the dev token the launcher prints
    api_port = int(env["WALSTREAM_API_PORT"])
    launcher = launchers(Launcher([sys.executable, "-m", "walstream", "run"], env))
    launcher.wait_for("Ctrl-C stops everything")
    text = launcher.text
    found = re.search(r"Kafka: (\S+)", text)
    assert found is not None
    servers = found.group(1)
    broker_pid = launcher.broker_pid()
    assert f"http://127.0.0.1:{api_port}" in text
    assert "curl" in text
    found = re.search(r"Dev token \(admin, this run only\): (\S+)", text)
    assert found is not None
    token = found.group(1)
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

    _mutate_items_commits_on_the_demo_kv_namespace(launcher, api_port, token, tmp_path / "data")

    pids = launcher.pids()
    assert launcher.interrupt() == 0
    assert "stopped" in launcher.text
    assert not _pid_alive(broker_pid)
    assert not any(_pid_alive(pid) for pid in pids)


@pytest.mark.timeout(300)
def test_make_run_on_a_configured_cluster_leaves_the_data_dir_as_it_is(
    tmp_path, broker, unique, http_namespace, launchers
):
    """The per-run table folder is for the embedded broker only: with bootstrap servers set,
    the worker keeps its tables in the data dir itself and nothing there is removed."""
    namespaces, recorder = http_namespace
    renamed = namespaces / "hooks.toml"
    renamed.write_text(renamed.read_text().replace('name = "hooks"', f'name = "hooks{unique}"'))
    data_dir = tmp_path / "data"
    kept = [data_dir / "notes.txt", data_dir / EMBEDDED_DATA_SUBDIR / "run-1" / "table.sst"]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    env = _run_env(data_dir)
    env.update(
        WALSTREAM_BOOTSTRAP_SERVERS=broker,
        WALSTREAM_APP_ID=f"walstream-{unique}",
        WALSTREAM_CONTROL_TOPIC=f"walstream.namespaces.{unique}",
    )
    launcher = launchers(Launcher.make_run(env, namespaces))
    launcher.wait_for(UP)
    assert "embedded broker" not in launcher.text
    record_id = _write(env, {"cluster": True}, namespace=f"hooks{unique}")
    launcher.wait_until(lambda: _deliveries(recorder, record_id, ok=True), 60, "the delivery")
    launcher.interrupt()
    assert "stopped" in launcher.text
    assert all(path.read_text() == "mine" for path in kept)
    assert any((data_dir / "v1" / "tables").glob("attempts-*"))  # the worker's, in place


class _ReadyElsewhere(BaseHTTPRequestHandler):
    """What holds a port: another process (another run's API), ready, naming its own pid."""

    pid = 1

    def do_GET(self) -> None:
        body = json.dumps({"status": "ready", "pid": self.pid}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ready_elsewhere():
    """A ready /readyz on a port of its own, answered by a process that is not the run's."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ReadyElsewhere)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_readiness_is_credited_only_to_the_process_named(ready_elsewhere):
    """The launcher asks a child's /readyz and credits it only when the answer names the
    child's pid: whatever else answers on the port (another run's API) is not the child."""
    url = f"http://127.0.0.1:{ready_elsewhere.server_address[1]}/readyz"
    assert ready_as(url, _ReadyElsewhere.pid)
    assert not ready_as(url, os.getpid())  # ready, but not the process asked about
    assert not ready_as(f"http://127.0.0.1:{free_port()}/readyz", os.getpid())  # nobody there


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("setting", "what"),
    [("WALSTREAM_API_PORT", "the API"), ("WALSTREAM_WORKER_WEB_PORT", "the worker's web server")],
)
def test_a_run_whose_port_is_taken_stops_at_once_naming_it(tmp_path, launchers, setting, what):
    """A second `make run` (or one left over) holds the ports: the run says which port is
    taken and exits 1 before it starts anything (its API would exit "address already in use"
    and be restarted for ever, its worker likewise)."""
    env = _run_env(tmp_path / "data")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(env[setting])))
        holder.listen()
        launcher = launchers(Launcher([sys.executable, "-m", "walstream", "run"], env))
        launcher.wait_until(lambda: launcher.proc.poll() is not None, 90, "the launcher's exit")
    launcher._reader.join(10)
    text = launcher.text
    assert launcher.proc.returncode == 1, text
    port = env[setting]
    assert f"port {port} on 127.0.0.1 ({what}, {setting}) is taken: address already in use" in text
    # nothing was started (no broker, worker or API to stop), and it never said "up"
    assert launcher.pids() == set(), text
    assert UP not in text


@pytest.mark.timeout(400)
def test_a_run_is_not_up_while_another_process_serves_its_api_port(
    tmp_path, launchers, ready_elsewhere
):
    """The port taken after the launcher looked (the start check skipped here): its API exits
    ("address already in use") and is restarted, its worker gets ready, and what answers on the
    API port is ready too, but is not the run's API: the launcher keeps waiting for the API
    (its note names only the API, so the worker was judged ready meanwhile) and never says up."""
    env = _run_env(tmp_path / "data")
    env["WALSTREAM_API_PORT"] = str(ready_elsewhere.server_address[1])
    env["WALSTREAM_RUN_WAITING_NOTE_S"] = "3"  # its note every 3 s, not 30 (the test waits for one)
    script = (
        "import walstream.dev as dev\n"
        "dev.taken_ports = lambda settings, env: []\n"
        "from walstream.cli import cli\n"
        "cli(['run'])\n"
    )
    launcher = launchers(Launcher([sys.executable, "-c", script], env))
    launcher.wait_for(r"still waiting for: api \(")  # the worker counted ready, the API not
    text = launcher.text
    assert "address already in use" in text
    assert re.search(r"api \(pid \d+\) exited with code", text), text[-4000:]
    assert UP not in text
    assert "is ready again" not in text
    assert launcher.interrupt() == 0
    assert "stopped" in launcher.text


def _answers_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.timeout(240)
def test_a_run_whose_api_port_is_taken_does_not_say_it_is_up(tmp_path, ready_elsewhere):
    """Issue 15 item 3 ("up" only when a write is deliverable): a second `make run` (another
    terminal, a run left over) finds its API port served by another run's API, ready. Its API
    cannot bind ("address already in use"), and the launcher must not say "walstream is up" with
    a dev token the API on that port refuses, as it did when it asked whatever answered there."""
    env = _run_env(tmp_path / "data")
    env.pop("WALSTREAM_AUTH")  # auth on, with the dev token the launcher prints
    env["WALSTREAM_API_PORT"] = str(ready_elsewhere.server_address[1])
    worker_port = env["WALSTREAM_WORKER_WEB_PORT"]
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
            if _answers_ready(f"http://127.0.0.1:{worker_port}/readyz"):
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


@pytest.mark.timeout(400)
def test_up_means_the_delay_stage_reads_its_tiers(tmp_path, http_namespace, launchers):
    """The worker's /readyz (and so "walstream is up") waits for the delay stage, a consumer
    group of its own that joined seconds after the agents': a delayed write made at "up" waited
    for that join (1.5 s delay: ~1.4 s late). Deterministic part: the first ready answer of the
    worker's /readyz already has the stage owning every tier partition (one worker: all of
    them). Then a write with a 1.5 s delay made right at "up" arrives at most 1 s late: the
    stage reads the tiers already, so what is left is a read, a hand-over and a delivery (the
    README's p99 lateness is 50 ms unloaded; 1 s leaves room for a loaded machine and is below
    the join wait this removes)."""
    namespaces, recorder = http_namespace
    env = _run_env(tmp_path / "data")
    readyz = f"http://127.0.0.1:{env['WALSTREAM_WORKER_WEB_PORT']}/readyz"
    launcher = launchers(Launcher.make_run(env, namespaces))

    def first_ready() -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(readyz, timeout=2) as response:
                body: dict[str, Any] = json.loads(response.read())
                return body
        except OSError:  # not serving yet, or 503 (not ready)
            return None

    ready = launcher.wait_until(first_ready, START_S, "the worker's first ready /readyz")
    tier_topics = 1 + len(TIERS_MS)  # the timer tier and the delay tiers
    assert ready["delay_partitions"] == tier_topics * 4, ready  # 4: the default partitions
    (worker_pid,) = launcher.worker_pids()
    assert ready["pid"] == worker_pid

    launcher.wait_for(UP)
    written_at = time.time()
    record_id = _write(env, {"delayed": True}, delay_ms=1500)
    (delivered, *_) = launcher.wait_until(
        lambda: _deliveries(recorder, record_id, ok=True), 60, "the delayed write delivered"
    )
    late_s = delivered.at - (written_at + 1.5)  # due no earlier than written_at + 1.5 s
    logging.getLogger(__name__).info("delayed write made at up: %.0f ms late", late_s * 1000)
    assert -0.1 <= late_s <= 1.0, late_s  # not early (the API's clock: written after written_at)
    launcher.interrupt()


def test_make_run_with_an_installed_venv_only_runs_this_checkouts_code(tmp_path):
    """`make run` in a clean clone (CI, or a second checkout sharing a venv): with the venv's
    stamp newer than pyproject.toml, make does nothing but the run, and runs it as
    ``python -m walstream`` from the checkout, so the code run is the checkout's even when the
    venv's ``walstream`` script was installed (editable) from elsewhere."""
    venv = tmp_path / "venv"
    venv.mkdir()
    stamp = venv / ".installed"
    stamp.touch()
    later = (ROOT / "pyproject.toml").stat().st_mtime + 3600  # installed after the last edit
    os.utime(stamp, (later, later))
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    planned = subprocess.run(
        ["make", "-n", "run", f"VENV={venv}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    commands = planned.stdout.splitlines()
    assert commands == [f"{venv}/bin/python -m walstream run --namespaces topology/namespaces"]
