"""A region away, a region writer killed mid-batch, poison operations (issue 17 acceptance, real
broker and real memcached servers):

* region c's memcached stopped for 30 s under a steady stream: region b's lag does not notice
  (p99 during the outage within 2x its p99 before), c's writer waits paused (its backlog grows,
  no busy retry loop), then catches up with nothing lost and nothing in its DLQ;
* a ``walstream worker --region c`` SIGKILLed while a batch is half applied (one of the
  region's two servers frozen): a new one continues from the committed offsets;
* a key over 250 bytes and a value over the server's item size go to the region DLQ with their
  reason, and the stream goes on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import signal
import time

import pytest
from aiokafka import AIOKafkaProducer

from walstream.core.cache_version import CacheOp
from walstream.core.dlq import DlqEntry
from walstream.kafka.admin import ensure_topics
from walstream.kafka.clients import ClientIds
from walstream.namespaces.config import parse_namespace
from walstream.records import Envelope, decode_envelope, encode_envelope
from walstream.replication import RegionCache
from walstream.replication.memcached import MetaConnection
from walstream.replication.region import ApplyOutcome
from walstream.testing.records import namespace_definition
from walstream.testing.replication import cache_envelope
from walstream.topology import (
    default_topics,
    namespace_topic_specs,
    region_topic,
)

from .conftest import apply_namespace, eventually
from .helpers import committed_offset, read_topic, topic_end_offsets
from .replication_rig import (
    TOMB_TTL,
    RegionProcess,
    Rig,
    Stream,
    model,
    publish,
    region_dlq_entries,
    region_fanout,
    rotating_op,
    sets_and_deletes,
)

pytestmark = pytest.mark.integration

#: the steady stream: operations per second over KEYS keys (a key's turn comes every KEYS / RATE
#: = 2 s, its kind rotating set, set, delete, touch: every key is set and deleted in the outage)
RATE = 200
PARTITIONS = 8
KEYS = 400
WARM_S = 3.0
PRE_S = 30.0  # as long as the outage: p99s of windows of one length
OUTAGE_S = 30.0
#: b's p99 during the outage is held within 2x its p99 before, a p99 under this counting as
#: this: on the 2-core machine the suite shares, one second of scheduling delay sets a 30 s
#: window's p99 (runs without any outage effect read pre/during p99s of 36/107, 128/300 and
#: 446/434 ms, the process's loop stalled up to 100 ms while its CPU use fell). What the bound is
#: for still fails it: c's writer retrying in a busy loop read 111/454 ms, a fan-out or loop
#: blocked on c seconds.
P99_FLOOR_MS = 150
AFTER_S = 5.0


def stream_op(ns: str, prefix: str, i: int, owt_ms: int) -> Envelope:
    """Operation ``i`` of the stream (replication_rig.rotating_op over KEYS keys)."""
    return rotating_op(ns, prefix, i, keys=KEYS, value_spread=200, owt_ms=owt_ms)


class LoopWatch:
    """The event loop's stalls (a 10 ms sleep's oversleep) and this process's CPU, per second:
    tells a stall of the stages' loop (our code, or the machine's other load) from a wait."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, int, float]] = []  # (wall ms, oversleep ms, cpu s)
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            late = int((time.monotonic() - before - 0.01) * 1000)
            self.samples.append((_now_ms(), late, time.process_time()))

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def worst(self, since_ms: int, until_ms: int) -> int:
        return max((late for t, late, _ in self.samples if since_ms <= t < until_ms), default=0)

    def cpu(self, since_ms: int, until_ms: int) -> float:
        cpu = [c for t, _, c in self.samples if since_ms <= t < until_ms]
        return (cpu[-1] - cpu[0]) / max(1, until_ms - since_ms) * 1000 if cpu else 0.0


class Lags:
    """A writer's settled operations: token -> (original write time, settle time), ms."""

    def __init__(self) -> None:
        self.settled: dict[str, tuple[int, int]] = {}

    def __call__(self, op: CacheOp, outcome: ApplyOutcome, now_ms: int) -> None:
        version = op.version
        self.settled.setdefault(version.idempotency_token, (version.original_write_time_ms, now_ms))

    def lags_ms(self, since_ms: int, until_ms: int) -> list[int]:
        return sorted(
            done - owt for owt, done in self.settled.values() if since_ms <= owt < until_ms
        )


def p99(samples: list[int]) -> int:
    return samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def _now_ms() -> int:
    return int(time.time() * 1000)


async def raw_items(address: str, keys: list[bytes]) -> list[bytes | None]:
    """Each key's item as the server holds it (the bytes walstream wrote: version and value)."""
    connection = MetaConnection(address, timeout_s=10.0)
    try:
        replies = await connection.execute([b"mg %s v\r\n" % key for key in keys])
    finally:
        await connection.close()
    return [reply.value if reply.status == b"VA" else None for reply in replies]


async def reads(cache: RegionCache, keys: list[bytes]) -> list[bytes | None] | None:
    try:
        return [await cache.get(key) for key in keys]
    except Exception:  # noqa: BLE001 - the region's server may be away
        return None


@pytest.mark.timeout(360)  # a 30 s outage after 33 s of stream, then the catch-up
async def test_region_c_away_for_30s_b_keeps_its_lag_and_c_catches_up_losing_nothing(
    broker, memcached_servers, own_memcached, unique
) -> None:
    away = own_memcached()
    servers = {"a": memcached_servers[0].address, "b": memcached_servers[1].address}
    rig = Rig(broker, f"u{unique}", {**servers, "c": away.address})
    # the embedded broker's latency grows with a partition's length (a plain producer and
    # consumer at 900 records/s: p99 14 ms in the first 5 s, ~200 ms after 45 s): spread over
    # more partitions, the trend stays well under what an outage's effect would be measured by
    rig.settings = dataclasses.replace(rig.settings, default_partitions=PARTITIONS)
    stream: Stream | None = None
    watch: LoopWatch | None = None
    try:
        await ensure_topics(
            broker,
            namespace_topic_specs(
                default_topics(rig.ns), PARTITIONS, replication_factor=1, min_insync_replicas=1
            ),
        )
        await rig.start()
        lags = {r: Lags() for r in ("b", "c")}
        for region, sink in lags.items():
            rig.writers[region].lag_sink = sink
        # both writers hold their partitions and apply before the clock starts
        first = cache_envelope("set", f"{unique}:first", b"1", ns=rig.ns, ttl=0, owt_ms=_now_ms())
        await rig.write([first], local=False)
        for region in ("b", "c"):
            await eventually(
                lambda r=region: _holds(rig.caches[r], {f"{unique}:first".encode(): b"1"}),
                90,
                f"{region} to apply the first operation",
            )

        watch = LoopWatch()
        # each operation stamped with its publish time as original write time (so a writer's
        # apply time minus it is the op's lag)
        stream = Stream(
            rig,
            lambda i: stream_op(rig.ns, unique, i, _now_ms()),
            RATE,
            gather_at=200,
            pause_s=0.005,
        )
        stream.start()
        started_ms = _now_ms()
        await asyncio.sleep(WARM_S + PRE_S)

        c_writer, b_writer = rig.writers["c"], rig.writers["b"]
        gauge = "walstream_replication_backlog_records"
        c_labels = {"namespace": rig.ns, "region": "c"}
        # in a thread: stopping (and starting) waits for the process, and the stages run on
        # this loop (a blocked loop is lag of every region, not of the outage)
        await asyncio.to_thread(away.stop)
        stopped_ms = _now_ms()
        failed_at_stop, handled_at_stop = c_writer.failed_applies, c_writer.handled
        await asyncio.sleep(OUTAGE_S / 3)
        backlog_early = rig.registry.get_sample_value(gauge, c_labels) or 0
        await asyncio.sleep(OUTAGE_S * 2 / 3)
        backlog_late = rig.registry.get_sample_value(gauge, c_labels) or 0
        failed_in_outage = c_writer.failed_applies - failed_at_stop
        handled_in_outage = c_writer.handled - handled_at_stop
        await asyncio.to_thread(away.start)
        restarted_ms = _now_ms()
        before_restart = {
            env.idempotency_token
            for env in stream.envs
            if env.lifecycle.original_write_time_ms < restarted_ms
        }

        def caught_up() -> bool:
            return before_restart <= lags["c"].settled.keys()

        await eventually(caught_up, 120, "c to settle every operation published before its restart")
        catch_up_s = (_now_ms() - restarted_ms) / 1000
        await asyncio.sleep(AFTER_S)
        await stream.stop()
        envs = stream.envs

        # region b: its lag during c's outage within 2x its lag before
        pre = lags["b"].lags_ms(started_ms + int(WARM_S * 1000), stopped_ms)
        during = lags["b"].lags_ms(stopped_ms, restarted_ms)
        published_during = sum(
            1 for env in envs if stopped_ms <= env.lifecycle.original_write_time_ms < restarted_ms
        )
        figures = (
            f"b lag p50/p99 before {pre[len(pre) // 2]}/{p99(pre)} ms ({len(pre)} ops), "
            f"during c's outage {during[len(during) // 2]}/{p99(during)} ms ({len(during)} ops); "
            f"c: {failed_in_outage} failed applies in {OUTAGE_S:.0f} s, backlog "
            f"{backlog_early:.0f} -> {backlog_late:.0f}, caught up {catch_up_s:.1f} s after its "
            f"restart; cpu of the stages' process "
            f"{watch.cpu(started_ms + int(WARM_S * 1000), stopped_ms):.2f} -> "
            f"{watch.cpu(stopped_ms, restarted_ms):.2f} cores"
        )
        await watch.stop()
        timeline = [
            (
                p99(window) if (window := lags["b"].lags_ms(t, t + 5_000)) else None,
                watch.worst(t, t + 5_000),
                round(watch.cpu(t, t + 5_000), 2),
            )
            for t in range(started_ms, restarted_ms, 5_000)
        ]
        print(figures, "; per 5 s (b's p99 ms, worst loop stall ms, cpu):", timeline)  # noqa: T201 - the issue's figures
        assert len(during) == published_during > OUTAGE_S * RATE * 0.8, figures
        assert p99(during) <= 2 * max(p99(pre), P99_FLOOR_MS), figures
        assert b_writer.failed_applies == 0

        # region c waited paused: its backlog grew, it read nothing, and it retried rarely
        assert backlog_late >= backlog_early + RATE * OUTAGE_S / 3, figures
        assert handled_in_outage == 0, figures
        assert 1 <= failed_in_outage <= OUTAGE_S, figures
        # no busy loop: this process (the stages) works less while c applies nothing
        cpu_before = watch.cpu(started_ms + int(WARM_S * 1000), stopped_ms)
        cpu_during = watch.cpu(stopped_ms, restarted_ms)
        assert cpu_during <= 1.3 * cpu_before, (cpu_before, cpu_during, figures)

        # nothing lost, nothing older over newer, nothing dead-lettered
        want = model(envs)
        keys = sorted(want)

        async def converged() -> bool:
            return all([await reads(rig.caches[r], keys) == [want[k] for k in keys] for r in "bc"])

        await eventually(converged, 120, "b and c to hold the stream's final state")
        assert await raw_items(away.address, keys) == await raw_items(servers["b"], keys)
        assert c_writer.outcomes["dlq"] == b_writer.outcomes["dlq"] == 0
        await _drained(rig)
    finally:
        if watch is not None:
            await watch.stop()
        if stream is not None:
            await stream.stop()
        await rig.stop()


async def _drained(rig: Rig) -> None:
    gauge = "walstream_replication_backlog_records"
    labels = {"namespace": rig.ns, "region": "c"}

    def zero() -> bool:
        return rig.registry.get_sample_value(gauge, labels) == 0

    await eventually(zero, 30, "c's backlog gauge to drain")


# -- a region writer killed mid-batch ---------------------------------------------------------


@pytest.mark.timeout(240)
async def test_a_region_writer_killed_mid_batch_is_continued_from_the_committed_offsets(
    wal_env, wal_settings, broker, memcached_servers, own_memcached, unique, tmp_path
) -> None:
    ns = f"m{unique}"
    live, frozen = own_memcached(), own_memcached()
    definition = namespace_definition(
        ns,
        replication={
            "regions": {
                "a": {"memcached": [memcached_servers[0].address]},
                "b": {"memcached": [memcached_servers[1].address]},
                "c": {"memcached": [live.address, frozen.address]},
            },
            "max_lag_s": 600,
            "tombstone_ttl_s": TOMB_TTL,
        },
    )
    await apply_namespace(wal_settings, definition)
    config = parse_namespace(definition)
    fanout = region_fanout(wal_settings, config, "c")
    region_c = RegionCache([live.address, frozen.address], tombstone_ttl_s=TOMB_TTL)
    on_live = RegionCache([live.address], tombstone_ttl_s=TOMB_TTL)
    first = RegionProcess(wal_env, "c", tmp_path / "region-c-1.log")
    second: RegionProcess | None = None
    group, topic = ClientIds.region_group(ns, "c"), region_topic(ns, "c")
    partitions = wal_settings.default_partitions
    frozen_pids: list[int] = []
    await fanout.start()
    try:
        envs = sets_and_deletes(ns, unique, 300, 200)
        await publish(broker, config.topics.log, envs, linger_ms=5)
        await eventually(
            lambda: _holds(region_c, model(envs)), 90, f"c to apply round 1\n{first.log_tail()}"
        )
        await eventually(
            lambda: _committed_all(broker, group, topic, 300, partitions), 60, "c to commit round 1"
        )
        # round 2 waits in the topic while the writer is frozen, so the writer reads it as one
        # batch (keys of both servers) once thawed, with one of the region's servers frozen
        _freeze(first.proc.pid, frozen_pids)
        more = sets_and_deletes(ns, unique, 1_500, 200, start=300)
        await publish(broker, config.topics.log, more, linger_ms=5)
        envs += more
        await eventually(
            lambda: _copied(broker, topic, len(envs)), 60, "the fan-out to copy round 2"
        )
        _freeze(frozen.pid, frozen_pids)
        _thaw(first.proc.pid, frozen_pids)

        # the batch is half applied: a live server's key holds a round-2 value whose copy is
        # past its partition's committed offset
        by_value = {base64.b64decode(str(e.payload)): e for e in more if e.target["op"] == "set"}
        live_keys = [k for k in sorted(model(envs)) if region_c.server_for(k) == live.address]

        async def applied_in_round_2() -> list[Envelope]:
            values = [await on_live.get(key) for key in live_keys]
            return [by_value[v] for v in values if v in by_value]

        applied = await eventually(
            applied_in_round_2, 90, f"c to apply its live server's keys\n{first.log_tail()}"
        )
        copies = await read_topic(broker, topic, expect=len(envs))
        position = {decode_envelope(r.value).id: (r.partition, r.offset) for r in copies}
        committed = {
            p: await committed_offset(broker, group, topic, p) or 0 for p in range(partitions)
        }
        uncommitted = [e for e in applied if position[e.id][1] >= committed[position[e.id][0]]]
        assert uncommitted, (committed, [position[e.id] for e in applied])
        first.kill()  # mid-batch: part of it applied, none of it committed
        _thaw(frozen.pid, frozen_pids)
        second = RegionProcess(wal_env, "c", tmp_path / "region-c-2.log")
        want = model(envs)
        await eventually(
            lambda: _holds(region_c, want), 120, f"c to match the model\n{second.log_tail()}"
        )
    finally:
        for pid in frozen_pids:
            os.kill(pid, signal.SIGCONT)
        first.kill()
        if second is not None:
            second.kill()
        await fanout.stop()
        await region_c.close()
        await on_live.close()


def _freeze(pid: int | None, frozen: list[int]) -> None:
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    frozen.append(pid)


def _thaw(pid: int | None, frozen: list[int]) -> None:
    assert pid is not None
    os.kill(pid, signal.SIGCONT)
    frozen.remove(pid)


async def _committed_all(broker: str, group: str, topic: str, n: int, partitions: int) -> bool:
    committed = [await committed_offset(broker, group, topic, p) or 0 for p in range(partitions)]
    return sum(committed) >= n


async def _copied(broker: str, topic: str, n: int) -> bool:
    ends = await topic_end_offsets(broker, topic)
    return sum(ends.values()) >= n


async def _holds(cache: RegionCache, want: dict[bytes, bytes | None]) -> bool:
    keys = sorted(want)
    return await reads(cache, keys) == [want[k] for k in keys]


# -- poison operations --------------------------------------------------------------------------


async def test_a_long_key_and_a_value_over_the_item_size_go_to_the_region_dlq(
    rig: Rig, unique: str
) -> None:
    await rig.start(("b",))
    long_key = f"{unique}:" + "k" * 250
    too_large = os.urandom(1024 * 1024 + 1)  # over memcached's default item size (1 MiB)
    bad_key = cache_envelope("set", long_key, b"x", ns=rig.ns, ttl=0, token="long")
    bad_value = cache_envelope("set", f"{unique}:big", too_large, ns=rig.ns, ttl=0, token="big")
    after = cache_envelope("set", f"{unique}:after", b"fine", ns=rig.ns, ttl=0, token="after")
    async with AIOKafkaProducer(
        bootstrap_servers=rig.broker, acks="all", max_request_size=4 * 1024 * 1024
    ) as producer:
        # one record key: one partition, so the good operation waits behind both poison ones
        # in the log and in the region's topic (a stage wedged on either would never apply it)
        for env in (bad_key, bad_value, after):
            await producer.send_and_wait(rig.log, encode_envelope(env), key=b"poison")
    await eventually(
        lambda: _holds(rig.caches["b"], {f"{unique}:after".encode(): b"fine"}),
        90,
        "the operation after the poison ones",
    )
    entries = await region_dlq_entries(rig.broker, rig.ns, "b", expect=2)
    assert all(isinstance(entry, DlqEntry) for entry in entries)
    got = {(e.id, e.reason) for e in entries if isinstance(e, DlqEntry)}
    assert got == {("id-long", "key_too_long"), ("id-big", "value_too_large")}
    values = {e.id: e.value for e in entries if isinstance(e, DlqEntry)}
    assert values == {"id-long": encode_envelope(bad_key), "id-big": encode_envelope(bad_value)}
    assert rig.writers["b"].outcomes["dlq"] == 2
    assert await rig.caches["b"].get(f"{unique}:big".encode()) is None
