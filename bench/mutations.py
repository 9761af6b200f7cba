"""Mutations benchmark (issue 18): committed transactions/s (4 operations each, ``--ops``) through
walstream's own worker into the SQLite kv target, as operations/s against a plain Faust forward
agent on the same embedded broker in the same run, and commit latency from marker to last apply.

Each round starts one walstream worker (``walstream.app``, pinned to a core of its own; the
broker and this driver share the other) whose kv target is a SQLite file in a temporary
directory (on disk: each database transaction is synced). A transaction is a one-shot
MutateItems of ``--ops`` puts (4; ``--value-size`` B values, fresh keys) to tables ``users``
and ``orders`` in turn, the last one (applied last) to ``ledger``. This driver writes records as
the API does, with the core builders (``core.mutations.chunks.items_records``,
``wire.encode_op_chunk`` / ``encode_marker``) through a plain aiokafka producer (acks=all) to a
namespace's mutations and markers topics, keyed by the txn id; the marker once every operation
is acked, its ``at_ms`` the time it is sent. Phases, one worker:

* warm-up: ``WARMUP`` transactions, committed before anything is measured;
* latency: ``--rate`` transactions/s for ``--seconds`` (10 ms ticks). Latency = the time the
  ``ledger`` row (the last seq, applied last) was inserted minus the marker's ``at_ms``. The insert
  time comes from the database: the benchmark creates the kv tables before the worker does (the
  kv target's ``CREATE TABLE IF NOT EXISTS`` then keeps them) with one more column,
  ``applied_ms``, whose DEFAULT is SQLite's ``julianday('now')`` in ms: it is set by the insert
  statement itself (every key is new, so every apply is an insert), at no statement's extra
  cost. Resolution: 1 ms (SQLite's clock); both times are the machine's wall clock. A row is
  visible when the worker's batch transaction commits, a little after ``applied_ms`` (the
  sync); nothing in walstream is timed from inside.
* throughput: ``--txns`` transactions (operations, then markers) written before the worker
  starts to a second namespace's topics, which the worker reads once that namespace is
  published with its ``mutations`` block, after the latency phase: a backlog, as the forward
  agent's. Committed transactions (``ledger`` rows, polled every 50 ms) per second between 5 %
  and 95 % of them, the worker's CPU per operation meanwhile, and how busy each core was.
  ``--live`` feeds them closed-loop instead, at most ``--window`` sent and not yet committed,
  the driver's producer then loading the broker's core while it is measured.

The baseline (bench/apps/forward.py) moves as many records as the throughput phase holds
(operations and markers, 5 per transaction) of their mean size, topic to topic, from a backlog,
measured the same way (5 % to 95 %), once before and once after the worker (the machine's load
may drift; their mean is the baseline). Ratio = operations/s / forward records/s; target >= 0.5.
Every operation of the run is checked at the end: in its table with its value. The round also
prints what the worker wrote to the broker per transaction of the throughput phase, by topic:
its table's changelog, and the delay tiers, where ``timer`` holds markers re-queued for a short
wait (read before their operations: the backlog's two topics are read side by side, so a marker
may come first; it is re-queued with the namespace's backoff, 50 ms doubling) and ``1m`` / ``1h``
each transaction's deadline wake (600 s) and its ``Forget`` (24 h), which stay pending.

The ratio of CPU spent (forward agent per record / worker per operation) is printed too: when
other work slows the broker, the forward agent (one record at a time) waits for it more than the
worker does, and the CPU ratio is nearer what an idle machine's throughput ratio would be.

``--profile wall`` runs py-spy on the worker (``--py-spy PATH``; default: the one on the PATH,
best from a venv of its own; 100 samples/s, each pausing the worker briefly) during the
throughput phase and prints the top functions by samples of every active thread (the kv
target's SQLite thread too); ``--profile gil``: of the thread holding the GIL only (Python's CPU;
SQLite runs without it). ``--profile-out DIR`` keeps the raw samples.

Usage: python bench/mutations.py [--txns 4000] [--rate 100] [--seconds 10] [--rounds 2]
       [--value-size 200] [--ops 4] [--live [--window 300]]
       [--profile wall|gil [--profile-out DIR]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from _faust import PARTITIONS, Rate, forward_round, start_worker, stop, tail, wait_rate
from _load import pin
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from walstream.broker import EmbeddedBroker, free_port
from walstream.core.mutations.chunks import items_records
from walstream.core.mutations.request import MutateItems, Operation
from walstream.core.mutations.wire import Marker, OpChunk, encode_marker, encode_op_chunk
from walstream.kafka.admin import ensure_topics
from walstream.kafka.offsets import probe_end_offsets
from walstream.namespaces.broadcast import NamespacePublisher
from walstream.namespaces.config import parse_namespace
from walstream.settings import Settings
from walstream.topology import mutation_topic_specs, mutation_topics

#: The kv tables; a transaction's last seq, applied last, goes to ``ledger`` (what "committed"
#: counts).
ALL_TABLES = ("ledger", "orders", "users")


def tables_for(ops: int) -> tuple[str, ...]:
    """The table of each seq: ``users``, ``orders`` in turn, the last (seq ops-1) ``ledger``."""
    return (*(("users", "orders")[seq % 2] for seq in range(ops - 1)), "ledger")


CHUNK_BYTES = 256 * 1024
WARMUP = 20
TARGET_RATIO = 0.5
#: ms since the epoch, from SQLite's own clock (ms resolution), when a row is inserted
APPLIED_MS = "(CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def value_of(txn: str, seq: int, size: int) -> bytes:
    return (f"{txn}/{seq}:" * (size // 8 + 1)).encode()[:size]


class Kv:
    """The kv target's SQLite file, its tables made here first (with ``applied_ms``); read on
    connections of this process's own (one per thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        conn = self.connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            for table in ALL_TABLES:
                # the kv target's columns (walstream.targets.kv.kv_statements), and one more
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{table}" (key TEXT PRIMARY KEY, value BLOB, '
                    "deleted INTEGER NOT NULL DEFAULT 0, original_write_time_ms INTEGER NOT NULL, "
                    f"idempotency_token TEXT NOT NULL, applied_ms INTEGER DEFAULT {APPLIED_MS})"
                )
        finally:
            conn.close()

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)


def committed(conn: sqlite3.Connection, prefix: str) -> int:
    """Transactions of ``prefix`` whose last operation (the ``ledger`` row) is applied."""
    row = conn.execute(
        "SELECT count(*) FROM ledger WHERE key >= ? AND key < ?", (prefix, prefix + "\x7f")
    ).fetchone()
    return int(row[0])


def applied_at(conn: sqlite3.Connection, prefix: str) -> dict[str, int]:
    """txn id -> when its ``ledger`` row was inserted (ms), for the txns of ``prefix``."""
    rows = conn.execute(
        "SELECT key, applied_ms FROM ledger WHERE key >= ? AND key < ?",
        (prefix, prefix + "\x7f"),
    )
    return {key.rsplit("/", 1)[0]: int(at) for key, at in rows}


def wrong_rows(
    conn: sqlite3.Connection, txns: list[str], size: int, tables: tuple[str, ...]
) -> int:
    """Operations of ``txns`` not in their table with their value (should be 0)."""
    bad = 0
    for txn in txns:
        for seq, table in enumerate(tables):
            row = conn.execute(
                f'SELECT value, deleted FROM "{table}" WHERE key = ?',  # noqa: S608 - ours
                (f"{txn}/{seq}",),
            ).fetchone()
            bad += row is None or bytes(row[0]) != value_of(txn, seq, size) or row[1] != 0
    return bad


def record_size(ns: str, size: int, tables: tuple[str, ...]) -> float:
    """The mean size of a transaction's records (its operations and its marker)."""
    records, marker = transaction(ns, "t0000000", size, tables)
    sizes = [len(encode_op_chunk(c)) for c in records] + [len(encode_marker(marker))]
    return statistics.mean(sizes)


def transaction(
    ns: str, txn: str, size: int, tables: tuple[str, ...]
) -> tuple[list[OpChunk], Marker]:
    operations = tuple(
        Operation(op="put", table=table, id=f"{txn}/{seq}", value=value_of(txn, seq, size))
        for seq, table in enumerate(tables)
    )
    return items_records(ns, MutateItems(txn_id=txn, operations=operations), CHUNK_BYTES, at_ms=1)


class Feeder:
    """Writes transactions as the API's one-shot MutateItems does (records keyed by the txn id,
    the marker once every operation is acked); remembers each marker's ``at_ms``."""

    def __init__(self, servers: str, ns: str, size: int, tables: tuple[str, ...]) -> None:
        self.servers, self.ns, self.size, self.tables = servers, ns, size, tables
        self.topics = mutation_topics(ns)
        self.marked: dict[str, int] = {}

    async def _one(self, producer: AIOKafkaProducer, txn: str, markers: bool = True) -> Marker:
        records, marker = transaction(self.ns, txn, self.size, self.tables)
        key = txn.encode()
        sends = []
        for chunk in records:
            value = encode_op_chunk(chunk)
            sends.append(await producer.send(self.topics.mutations, value, key=key))
        await asyncio.gather(*sends)
        if markers:
            await self._mark(producer, marker)
        return marker

    async def _mark(self, producer: AIOKafkaProducer, marker: Marker) -> None:
        at = now_ms()
        value = encode_marker(marker._replace(at_ms=at))
        self.marked[marker.txn_id] = at
        await (await producer.send(self.topics.markers, value, key=marker.txn_id.encode()))

    async def _producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(bootstrap_servers=self.servers, acks="all", linger_ms=1)
        await producer.start()
        return producer

    async def paced(self, names: list[str], rate: float) -> None:
        """``names`` at ``rate`` transactions/s (10 ms ticks)."""
        producer = await self._producer()
        try:
            tasks: list[asyncio.Task[Marker]] = []
            began = time.monotonic()
            while len(tasks) < len(names):
                due = min(len(names), int((time.monotonic() - began) * rate) + 1)
                tasks += [
                    asyncio.create_task(self._one(producer, n)) for n in names[len(tasks) : due]
                ]
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)
        finally:
            await producer.stop()

    async def windowed(self, names: list[str], window: int, committed: Callable[[], int]) -> None:
        """``names``, at most ``window`` sent and not ``committed()`` at a time."""
        producer = await self._producer()
        try:
            tasks: list[asyncio.Task[Marker]] = []
            while len(tasks) < len(names):
                room = committed() + window - len(tasks)
                if room > 0:
                    more = names[len(tasks) : len(tasks) + room]
                    tasks += [asyncio.create_task(self._one(producer, n)) for n in more]
                for task in tasks[-window:]:
                    if task.done():
                        task.result()  # a failed write ends the run
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)
        finally:
            await producer.stop()

    async def backlog(self, names: list[str]) -> None:
        """Every transaction's operations, then every marker (nothing reads them yet)."""
        producer = await self._producer()
        try:
            markers = []
            for start in range(0, len(names), 500):
                part = names[start : start + 500]
                markers += await asyncio.gather(*(self._one(producer, n, False) for n in part))
            for start in range(0, len(markers), 500):
                await asyncio.gather(
                    *(self._mark(producer, m) for m in markers[start : start + 500])
                )
        finally:
            await producer.stop()


class Background:
    """A coroutine run on its own loop in a thread (the feeder, while this thread measures)."""

    def __init__(self, make: Callable[[], object]) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(make,), daemon=True)
        self.thread.start()

    def _run(self, make: Callable[[], object]) -> None:
        try:
            asyncio.run(make())  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the feeder failed: {self.error!r}") from self.error

    def join(self, within_s: float) -> None:
        self.thread.join(within_s)
        self.check()
        if self.thread.is_alive():
            raise RuntimeError(f"the feeder is not done within {within_s}s")


def wait_committed(
    conn: sqlite3.Connection,
    prefix: str,
    want: int,
    proc: subprocess.Popen[bytes],
    within_s: float,
) -> None:
    deadline = time.monotonic() + within_s
    while (done := committed(conn, prefix)) < want:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{tail(proc)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{done} of {want} committed in {within_s}s:\n{tail(proc)}")
        time.sleep(0.05)


async def make_topics(servers: str, ns: str) -> None:
    """The namespace's mutations and markers topics (namespace apply creates them too)."""
    specs = mutation_topic_specs(ns, PARTITIONS, replication_factor=1, min_insync_replicas=1)
    await ensure_topics(servers, specs)


async def publish(servers: str, settings: Settings, ns: str) -> None:
    """Publish ``ns`` taking mutations: a running worker subscribes to its topics."""
    publisher = NamespacePublisher(settings)
    await publisher.start()
    try:
        await publisher.apply(
            parse_namespace(
                {
                    "name": ns,
                    "max_attempts": 5,
                    "backoff": {"base_ms": 50, "multiplier": 2.0, "cap_ms": 1_000, "jitter": 0.0},
                    "target": {"type": "kv", "table": "users", "key": "unused"},
                    "allowed_targets": {"kv_tables": list(ALL_TABLES)},
                    "mutations": {"completion_timeout_s": 600},
                }
            )
        )
    finally:
        await publisher.stop()
    await make_topics(servers, ns)


async def topic_records(servers: str, prefix: str) -> dict[str, int]:
    """Records on each topic whose name holds ``prefix`` (end offsets, every partition)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None)
    await consumer.start()
    try:
        topics = [t for t in await consumer.topics() if prefix in t]
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        reported = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    out: dict[str, int] = {}
    for tp, end in (await probe_end_offsets(servers, reported, within_s=5)).items():
        out[tp.topic] = out.get(tp.topic, 0) + end
    return out


def written_per_txn(before: dict[str, int], after: dict[str, int], app: str, txns: int) -> str:
    """What the worker wrote to each of its topics (app id left out) per transaction."""
    out = []
    for topic in sorted(after):
        if n := after[topic] - before.get(topic, 0):
            out.append(f"{topic.removeprefix(app).lstrip('.-')} {n / txns:.2f}")
    return ", ".join(out)


class Profiler:
    """py-spy recording the worker (raw samples, folded), while the throughput phase runs."""

    def __init__(self, binary: str, pid: int, out: Path, mode: str) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--format", "raw", "--rate", "100",
             "--output", str(out), *(["--gil"] if mode == "gil" else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        pin(self.proc.pid, 1)

    def stop(self, keep: Path | None = None) -> str:
        self.proc.send_signal(2)  # SIGINT: py-spy writes its file
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if keep is not None and self.out.exists():
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.out, keep / self.out.name)
        return fold_report(self.out)


_LINE = re.compile(r":\d+\)$")
_OURS = ("walstream/", "faust/", "aiokafka/", "mode/")


def fold_report(path: Path, top: int = 25) -> str:
    """Own time and cumulative time of the hottest functions in a py-spy raw (folded) file."""
    own: dict[str, int] = {}
    cumulative: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return "  (no py-spy output)"
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_LINE.sub(")", f) for f in stack.split(";")]  # per function, not per line
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            cumulative[frame] = cumulative.get(frame, 0) + n
    if not total:
        return "  (no samples)"
    out = [f"  {total} samples; own time:"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"    {100 * n / total:5.1f}%  {frame}")
    out.append("  cumulative (walstream, faust, aiokafka frames):")
    ours = [(f, n) for f, n in cumulative.items() if any(p in f for p in _OURS)]
    for frame, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        out.append(f"    {100 * n / total:5.1f}%  {frame}")
    return "\n".join(out)


class Round(NamedTuple):
    #: committed transactions/s between 5 % and 95 % of the throughput phase
    rate: Rate
    #: marker -> last apply (ms), sorted, every transaction of the latency phase
    latencies: list[float]
    #: operations not in the database as written
    wrong: int
    profile: str
    #: what the worker wrote to the broker per transaction of the throughput phase
    written: str


def mutations_round(servers: str, tag: str, args: argparse.Namespace, tmp: Path) -> Round:
    """One worker: warm-up and latency on one namespace, then throughput on a second one."""
    settings = Settings(bootstrap_servers=servers, control_topic=f"walstream.namespaces.{tag}")
    ns, ns_timed = f"mut-{tag}", f"mutt-{tag}"
    tables = tables_for(args.ops)
    asyncio.run(publish(servers, settings, ns))
    asyncio.run(make_topics(servers, ns_timed))
    kv = Kv(tmp / f"kv-{tag}.sqlite")
    feeder, timed_feeder = (
        Feeder(servers, ns, args.value_size, tables),
        Feeder(servers, ns_timed, args.value_size, tables),
    )
    warm = [f"w{i:05d}" for i in range(WARMUP)]
    paced = [f"l{i:06d}" for i in range(int(args.rate * args.seconds))]
    timed = [f"t{i:07d}" for i in range(args.txns)]
    if not args.live:
        # on topics no worker reads yet: its namespace takes mutations once published, below
        asyncio.run(timed_feeder.backlog(timed))
    env = {
        "WALSTREAM_BOOTSTRAP_SERVERS": servers,
        "WALSTREAM_APP_ID": f"walstream-{tag}",
        "WALSTREAM_CONTROL_TOPIC": settings.control_topic,
        "WALSTREAM_STORE": "memory://",
        "WALSTREAM_DATA_DIR": str(tmp / f"wal-{tag}"),
        "WALSTREAM_KV_URL": f"sqlite:///{kv.path}",
        "WALSTREAM_WORKER_WEB_PORT": str(free_port()),
        "WALSTREAM_BROKER_SESSION_TIMEOUT_S": "2",
        "WALSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
        "WALSTREAM_RESUBSCRIBE_DELAY_S": "0.5",
    }
    proc = start_worker("walstream.app", env, tmp / f"walstream-{tag}.log")
    conn = kv.connect()
    profile = ""
    profiler: Profiler | None = None
    try:
        asyncio.run(feeder.paced(warm, 50))
        wait_committed(conn, "w", len(warm), proc, 180)
        asyncio.run(feeder.paced(paced, args.rate))
        wait_committed(conn, "l", len(paced), proc, 120)
        if args.profile:
            profiler = Profiler(args.py_spy, proc.pid, tmp / f"{tag}.spy", args.profile)
        app = env["WALSTREAM_APP_ID"]
        written_before = asyncio.run(topic_records(servers, app))
        asyncio.run(publish(servers, settings, ns_timed))
        feeding = None
        if args.live:

            async def feed() -> None:
                own = kv.connect()  # the feeder's thread reads on its own connection
                try:
                    await timed_feeder.windowed(timed, args.window, lambda: committed(own, "t"))
                finally:
                    own.close()

            feeding = Background(feed)

        def count() -> int:
            if feeding is not None:
                feeding.check()
            return committed(conn, "t")

        rate = wait_rate(count, len(timed), proc, 600)
        wait_committed(conn, "t", len(timed), proc, 120)
        if feeding is not None:
            feeding.join(60)
        if profiler is not None:
            profile = profiler.stop(args.profile_out)
        written_after = asyncio.run(topic_records(servers, app))
        applied = applied_at(conn, "l")
        latencies = sorted(float(applied[t] - feeder.marked[t]) for t in paced)
        wrong = wrong_rows(conn, warm + paced + timed, args.value_size, tables)
    finally:
        if profiler is not None and profiler.proc.poll() is None:
            profiler.stop()
        stop(proc)
        conn.close()
    written = written_per_txn(written_before, written_after, app, len(timed))
    return Round(rate, latencies, wrong, profile, written)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--txns", type=int, default=4_000, help="throughput phase transactions")
    parser.add_argument("--window", type=int, default=300, help="--live: in flight at most")
    parser.add_argument("--rate", type=float, default=100, help="latency phase transactions/s")
    parser.add_argument("--seconds", type=float, default=10, help="latency phase length")
    parser.add_argument("--value-size", type=int, default=200)
    parser.add_argument("--ops", type=int, default=4, help="operations per transaction")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--live", action="store_true", help="throughput: feed closed-loop, not from a backlog"
    )
    parser.add_argument(
        "--profile",
        choices=("wall", "gil"),
        help="py-spy the throughput phase: every active thread, or the one holding the GIL",
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy", help="its path")
    parser.add_argument("--profile-out", type=Path, help="keep py-spy's raw samples in this dir")
    args = parser.parse_args()
    began = time.monotonic()
    pin(os.getpid(), 1)
    ratios: list[float] = []
    p99s: list[float] = []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        pin(broker.pid or 0, 1)
        servers = broker.bootstrap_servers
        for round_no in range(args.rounds):
            tag = f"r{round_no}-{os.getpid()}"
            ops = args.ops
            records = args.txns * (ops + 1)
            size = record_size(f"mutt-{tag}", args.value_size, tables_for(args.ops))
            # the baseline before and after: the machine's load may drift meanwhile
            before = forward_round(servers, f"{tag}a", records, round(size), Path(tmp))
            got = mutations_round(servers, tag, args, Path(tmp))
            after = forward_round(servers, f"{tag}b", records, round(size), Path(tmp))
            wal, lat = got.rate, got.latencies
            base = (before.records_per_s + after.records_per_s) / 2
            ops_s = wal.records_per_s * ops
            ratio = ops_s / base
            cpu_ratio = (before.cpu_us + after.cpu_us) / 2 / (wal.cpu_us / ops)
            ratios.append(ratio)
            p99s.append(pct(lat, 0.99))
            print(
                f"round {round_no}: forward agent {before.records_per_s:.0f} and "
                f"{after.records_per_s:.0f} records/s before and after ({before.cpu_us:.0f}, "
                f"{after.cpu_us:.0f} us CPU each; {before.cores}; {after.cores}) | mutations "
                f"{wal.records_per_s:.0f} txns/s = {ops_s:.0f} ops/s "
                f"({wal.cpu_us / ops:.0f} us CPU per op; {wal.cores}) | ratio {ratio:.2f}, "
                f"in CPU per record/op {cpu_ratio:.2f} "
                f"({args.txns} txns of {ops} ops, {records} records of {size:.0f} B"
                f"{f', live, window {args.window}' if args.live else ', backlog'}) | the worker "
                f"wrote per transaction: {got.written}",
                flush=True,
            )
            print(
                f"round {round_no}: commit latency (marker sent -> last operation inserted) at "
                f"{args.rate:.0f} txns/s: p50 {pct(lat, 0.5):.0f} ms, p99 {pct(lat, 0.99):.0f} "
                f"ms, max {lat[-1]:.0f} ms ({len(lat)} txns) | operations not in the database "
                f"as written: {got.wrong} | load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            if got.profile:
                print(f"round {round_no}: worker profile (throughput phase):\n{got.profile}")
    ratio = statistics.median(ratios)
    print(
        f"mutations vs a plain Faust forward agent: operations/s ratio {ratio:.2f} (target >= "
        f"{TARGET_RATIO}): {'PASS' if ratio >= TARGET_RATIO else 'MISS'}; commit latency p99, "
        f"worst round {max(p99s):.0f} ms; {args.rounds} rounds, total "
        f"{time.monotonic() - began:.0f}s"
    )


if __name__ == "__main__":
    main()
