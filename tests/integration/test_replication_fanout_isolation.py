"""A region whose Kafka cluster is away holds back only its own copies (issue 17: "a slow or dead
region never delays the others"), real brokers and real memcached servers.

Region c names a Kafka cluster of its own (a second embedded broker), frozen (SIGSTOP) while a
stream of operations flows: region b keeps receiving and applying every operation within a
bound while c's cluster is away, c receives none of them; once c's cluster is back (SIGCONT) c
catches up and ends byte-identical to b, nothing lost, nothing dead-lettered. With one fan-out
copying to every region in one consumer group, a batch waited for c's acks (the producer's
40 s request timeout, then the same batch again), so b received nothing either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from walstream.broker import EmbeddedBroker
from walstream.core.cache_version import CacheOp
from walstream.kafka.admin import ensure_topics
from walstream.kafka.clients import ClientIds
from walstream.records import Envelope, decode_envelope
from walstream.replication.fanout import FanOut
from walstream.replication.region import ApplyOutcome
from walstream.testing.replication import cache_envelope, plain_get
from walstream.topology import default_topics, namespace_topic_specs, region_topic

from .conftest import eventually
from .helpers import committed_offset, read_topic, topic_end_offsets
from .replication_rig import Rig, Stream, model, publish, rotating_op

pytestmark = pytest.mark.integration

#: the stream: operations per second over KEYS keys, each key's kinds rotating set, set,
#: delete, touch
RATE = 100
KEYS = 150
#: region b applies every operation published while c's cluster is frozen within this (its
#: usual lag is well under a second; the old single fan-out delivered nothing for 40 s)
BOUND_S = 10.0
#: checks while c's cluster is frozen: every operation published until then is in b
CHECKS = 2
CHECK_EVERY_S = 5.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def stream_op(ns: str, prefix: str, i: int) -> Envelope:
    return rotating_op(ns, prefix, i, keys=KEYS, value_spread=100, owt_ms=_now_ms())


class Settled:
    """A writer's settled operations (applied, stale or duplicate): token -> when (ms)."""

    def __init__(self) -> None:
        self.at: dict[str, int] = {}

    def __call__(self, op: CacheOp, outcome: ApplyOutcome, now_ms: int) -> None:
        self.at.setdefault(op.version.idempotency_token, now_ms)


async def holds(rig: Rig, region: str, want: dict[bytes, bytes | None]) -> bool:
    keys = sorted(want)
    try:
        return await rig.read(region, keys) == [want[k] for k in keys]
    except Exception:  # noqa: BLE001 - not there yet
        return False


@pytest.mark.timeout(300)
async def test_a_region_whose_kafka_cluster_is_frozen_holds_back_only_its_own_copies(
    broker, own_broker, memcached_servers, unique
) -> None:
    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    rig = Rig(broker, f"i{unique}", servers, clusters={"c": own_broker.bootstrap_servers})
    settled = {r: Settled() for r in ("b", "c")}
    stream: Stream | None = None
    frozen = False
    try:
        await rig.start()
        for region, sink in settled.items():
            rig.writers[region].lag_sink = sink
        # every stage holds its partitions and applies before c's cluster goes away
        first = cache_envelope("set", f"{unique}:first", b"1", ns=rig.ns, ttl=0, owt_ms=_now_ms())
        await rig.write([first], local=False)
        for region in ("b", "c"):
            await eventually(
                lambda r=region: holds(rig, r, {f"{unique}:first".encode(): b"1"}),
                90,
                f"{region} to apply the first operation",
            )
        stream = Stream(
            rig, lambda i: stream_op(rig.ns, unique, i), RATE, gather_at=0, pause_s=0.02
        )
        stream.start()
        await eventually(lambda: stream.acked >= RATE, 30, "a second of the stream")

        assert own_broker.pid is not None
        os.kill(own_broker.pid, signal.SIGSTOP)  # region c's cluster: away, connections hang
        frozen = True
        frozen_ms = _now_ms()
        lags: list[float] = []
        published: list[Envelope] = []
        for check in range(CHECKS):
            await asyncio.sleep(CHECK_EVERY_S)
            published = list(stream.envs[: stream.acked])
            tokens = {env.idempotency_token for env in published}
            began = time.monotonic()
            await eventually(
                lambda t=tokens: t <= settled["b"].at.keys(),
                BOUND_S,
                f"b to apply every operation published in {(check + 1) * CHECK_EVERY_S:.0f} s of "
                f"c's cluster frozen ({len(tokens - settled['b'].at.keys())} of {len(tokens)} "
                "missing)",
            )
            lags.append(time.monotonic() - began)
        # b applied the operations of the freeze (those of the last check); c, on its frozen
        # cluster, none of them
        during = [env for env in published if env.created_at_ms > frozen_ms]
        assert len(during) >= CHECKS * CHECK_EVERY_S * RATE * 0.5
        assert not {env.idempotency_token for env in during} & settled["c"].at.keys()
        freeze_s = (_now_ms() - frozen_ms) / 1000

        os.kill(own_broker.pid, signal.SIGCONT)  # c's cluster is back, its memory intact
        frozen = False
        thawed = time.monotonic()
        await asyncio.sleep(2.0)  # c catches up under the stream
        await stream.stop()
        envs = stream.envs
        tokens = {env.idempotency_token for env in envs}
        await eventually(
            lambda: tokens <= settled["c"].at.keys(),
            120,
            f"c to apply every operation ({len(tokens - settled['c'].at.keys())} missing)",
        )
        catch_up_s = time.monotonic() - thawed
        assert tokens <= settled["b"].at.keys()
        want = model([first, *envs])
        for region in ("b", "c"):
            await eventually(lambda r=region: holds(rig, r, want), 30, f"{region} to match")
        # c byte-identical to b (the items: walstream's version header and the value)
        keys = sorted(want)
        items = {r: await asyncio.to_thread(plain_get, servers[r], keys) for r in ("b", "c")}
        assert items["c"] == items["b"]
        assert len(items["b"]) >= sum(1 for value in want.values() if value is not None)
        for region in ("b", "c"):
            assert rig.writers[region].outcomes["dlq"] == 0
        print(  # noqa: T201 - the figures of the report
            f"c's cluster frozen {freeze_s:.1f} s under {RATE} ops/s: b applied the "
            f"{len(during)} ops of the freeze, its checks waited {[round(x, 2) for x in lags]} "
            f"s; c caught up {catch_up_s:.1f} s after the thaw, {len(envs)} ops in all"
        )
    finally:
        if frozen and own_broker.pid is not None:
            os.kill(own_broker.pid, signal.SIGCONT)
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.stop()
        await rig.stop()


async def test_a_region_s_own_fanout_group_starts_where_the_shared_fanout_stands(
    broker, own_broker, memcached_servers, unique
) -> None:
    """Region c on a cluster of its own gets a fan-out group of its own: new (an upgrade, when
    one group ``walstream.<ns>.fanout`` copied to every region; or c added later), it starts
    where that shared group stands, not at the log's beginning (a log kept longer than the
    tombstones would bring deleted values back). It is placed at its fan-out's first start
    even when c's cluster is away then: what the shared fan-out copies meanwhile still reaches
    c once its cluster is back."""
    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    c_cluster = own_broker.bootstrap_servers
    rig = Rig(broker, f"u{unique}", servers, clusters={"c": c_cluster})
    assert rig.replication is not None
    await ensure_topics(
        broker,
        namespace_topic_specs(
            default_topics(rig.ns), 2, replication_factor=1, min_insync_replicas=1
        ),
    )
    group = ClientIds.fanout_group(rig.ns, "c")

    async def commits(of: str) -> dict[int, int | None]:
        ends = await topic_end_offsets(broker, rig.log)
        return {p: await committed_offset(broker, of, rig.log, p) for p in ends}

    def fanout_to_c() -> FanOut:
        assert rig.replication is not None
        return FanOut(
            rig.settings,
            namespace=rig.ns,
            log_topic=rig.log,
            replication=rig.replication,
            region="c",
        )

    copied = [stream_op(rig.ns, unique, i) for i in range(30)]
    await publish(broker, rig.log, copied)
    # the shared fan-out group copied those (before: to every region too) and committed
    shared_at = await _commit_shared_at_the_end(broker, rig.ns, rig.log)
    assert sum(shared_at.values()) == len(copied)

    own_broker.stop(timeout=1.0)  # c's cluster away at its fan-out's first start
    away = fanout_to_c()
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the client raises
        await away.start()
    with contextlib.suppress(Exception):
        await away.stop()
    assert await commits(group) == shared_at  # placed all the same

    after = [stream_op(rig.ns, unique, i) for i in range(30, 40)]
    await publish(broker, rig.log, after)
    # the shared fan-out copies those to a and b meanwhile
    await _commit_shared_at_the_end(broker, rig.ns, rig.log)
    back = EmbeddedBroker(port=own_broker.port).start()  # c's cluster back (empty: memory)
    fanout = fanout_to_c()
    try:
        await fanout.start()

        async def all_committed() -> bool:
            log_ends = await topic_end_offsets(broker, rig.log)
            return await commits(group) == log_ends

        await eventually(all_committed, 60, "the fan-out to c to commit the whole log")
        copies = await topic_end_offsets(c_cluster, region_topic(rig.ns, "c"))
        assert (fanout.copies, sum(copies.values())) == (len(after), len(after))
        records = await read_topic(c_cluster, region_topic(rig.ns, "c"), expect=len(after))
        got = {decode_envelope(r.value).idempotency_token for r in records}
        assert got == {env.idempotency_token for env in after}
    finally:
        await fanout.stop()
        await rig.stop()
        back.stop(timeout=1.0)


async def _commit_shared_at_the_end(broker: str, ns: str, log: str) -> dict[int, int]:
    """Commit the shared fan-out group at the log's end (as if it had copied every record)."""
    ends = await topic_end_offsets(broker, log)
    shared = AIOKafkaConsumer(bootstrap_servers=broker, group_id=ClientIds.fanout_group(ns))
    await shared.start()
    try:
        tps = [TopicPartition(log, p) for p in ends]
        shared.assign(tps)
        await shared.commit({tp: ends[tp.partition] for tp in tps})
    finally:
        await shared.stop()
    return ends
