"""Issue 17 review: ways a replicated operation is lost, regresses or wedges a region, each forced
against the real broker and real memcached (Debian's 1.6.18)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from walstream.broker import free_port
from walstream.core.cache_version import CacheOp, OpKind
from walstream.core.lww import Version
from walstream.errors import TargetUnavailableError
from walstream.replication import ApplyOutcome, MetaConnection, RegionCache
from walstream.testing.servers import RawServer

# ---------------------------------------------------------------------------------------------
# a region's memcached behind a slow link (another region's servers, across a WAN)


class SlowLink:
    """A TCP proxy to ``upstream`` passing at most ``rate`` bytes/s each way (in small slices,
    so bytes flow steadily: a slow link, never a silent one)."""

    def __init__(self, upstream: str, *, rate: int, slice_bytes: int = 16 * 1024) -> None:
        self.host, _, port = upstream.rpartition(":")
        self.port = int(port)
        self.rate = rate
        self.slice_bytes = slice_bytes

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(self.slice_bytes):
                writer.write(data)
                await writer.drain()
                await asyncio.sleep(len(data) / self.rate)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except asyncio.CancelledError:
            pass  # the proxy closes with the test: its connections end
        finally:
            up_writer.close()


def _set(key: bytes, time_ms: int, value: bytes) -> CacheOp:
    return CacheOp(kind=OpKind.SET, key=key, version=Version(time_ms, f"t{time_ms}"), value=value)


@pytest.mark.timeout(60)
async def test_a_batch_taking_longer_than_the_deadline_over_a_slow_link_still_applies(
    own_memcached, unique
) -> None:
    server = own_memcached()
    keys = [f"{unique}:slow{i}".encode() for i in range(32)]
    value = bytes(range(256)) * 256  # 64 KiB each: 2 MiB a batch
    # the keys hold older values (a backlog updating existing items): every read carries them
    async with RegionCache([server.address], tombstone_ttl_s=60) as direct:
        results = await direct.apply_many([_set(k, 1, b"old" + value) for k in keys])
        assert {r.outcome for r in results} == {ApplyOutcome.APPLIED}
    link = SlowLink(server.address, rate=2 * 1024 * 1024)  # 2 MiB/s: ~1 s each way, each try
    async with (
        RawServer(link.handle) as port,
        RegionCache([f"127.0.0.1:{port}"], tombstone_ttl_s=60, timeout_s=0.5) as slow,
    ):
        ops = [_set(k, 2, value) for k in keys]
        outcomes = []
        for _ in range(3):  # as a region writer tries its batch again
            started = time.monotonic()
            results = await slow.apply_many(ops)
            outcomes.append(({r.outcome for r in results}, round(time.monotonic() - started, 2)))
            if {r.outcome for r in results} == {ApplyOutcome.APPLIED}:
                break
        assert {r.outcome for r in results} == {ApplyOutcome.APPLIED}, outcomes
    async with RegionCache([server.address], tombstone_ttl_s=60) as direct:
        assert [await direct.get(k) for k in keys] == [value] * len(keys)


@pytest.mark.timeout(60)
async def test_a_frozen_server_still_fails_a_large_batch_after_its_silence(
    own_memcached, unique
) -> None:
    """A hung server fails a batch after timeout_s of silence, however large the batch (its
    bytes fill the socket buffers, then nothing moves), and the writer is free again at once."""
    server = own_memcached()
    value = b"v" * 256 * 1024
    commands = [
        b"ms %s:frozen%d %d T0\r\n%s\r\n" % (unique.encode(), i, len(value), value)
        for i in range(64)  # 16 MiB: more than the loopback socket buffers hold
    ]
    connection = MetaConnection(server.address, timeout_s=0.5)
    try:
        assert [r.status for r in await connection.execute(commands[:1])] == [b"HD"]
        os.kill(server.pid, signal.SIGSTOP)
        # the server comes back after 8 s whatever happens: a writer stuck until then fails
        thaw = asyncio.get_running_loop().call_later(8, os.kill, server.pid, signal.SIGCONT)
        try:
            started = time.monotonic()
            with pytest.raises(TargetUnavailableError, match="no answer"):
                await connection.execute(commands)
            took = time.monotonic() - started
        finally:
            thaw.cancel()
            os.kill(server.pid, signal.SIGCONT)
        assert took < 5, took
    finally:
        await connection.close()


# ---------------------------------------------------------------------------------------------
# one client's own calls, one after the other: the later must win everywhere


class _Descending:
    """An RNG whose draws fall: ids made in one millisecond sort in the reverse of their order."""

    def __init__(self) -> None:
        self.next = 2**74 - 1

    def getrandbits(self, _bits: int) -> int:
        self.next -= 2**40
        return self.next


def _two_regions(name: str, a: str, b: str) -> dict:
    return {
        "name": name,
        "max_payload_bytes": 65536,
        "replication": {"regions": {"a": {"memcached": [a]}, "b": {"memcached": [b]}}},
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("clock_step_ms", [0, -5], ids=["same millisecond", "clock stepped back"])
async def test_a_delete_after_a_set_by_the_same_client_wins(
    broker, memcached_servers, unique, monkeypatch, clock_step_ms
) -> None:
    from walstream.core import ids
    from walstream.namespaces.config import parse_namespace
    from walstream.replication import ReplicatingCache

    monkeypatch.setattr(ids, "_rng", _Descending())
    now = [1_900_000_000_000]

    def clock() -> int:
        now[0] += clock_step_ms
        return now[0]

    a, b = (server.address for server in memcached_servers[:2])
    ns = parse_namespace(_two_regions(f"rv-{unique}", a, b))
    key = f"{unique}:mine"
    async with ReplicatingCache(ns, "a", bootstrap_servers=broker, clock=clock) as cache:
        put = await cache.set(key, b"value")
        gone = await cache.delete(key)
        assert (put.durable, gone.durable) == ("TRUE", "TRUE")
        assert gone.version > put.version  # what every region's LWW decides by
        assert gone.local is not None
        assert gone.local.outcome is ApplyOutcome.APPLIED
        assert await cache.get(key) is None


# ---------------------------------------------------------------------------------------------
# an operation the client got TRUE for, in its own region


@pytest.mark.timeout(90)
async def test_an_operation_logged_whose_local_apply_failed_still_reaches_its_region(
    broker, memcached_servers, own_memcached, unique
) -> None:
    from walstream.namespaces.config import parse_namespace
    from walstream.replication import ReplicatingCache

    from .replication_rig import Rig, replicated_definition, until

    local = own_memcached()  # region a's: the test freezes it
    servers = {"a": local.address, "b": memcached_servers[1].address}
    servers["c"] = memcached_servers[2].address
    rig = Rig(broker, f"rv{unique}", servers)
    ns = parse_namespace(replicated_definition(rig.ns, servers))
    key = f"{unique}:k"
    try:
        await rig.start(regions=("a", "b", "c"))  # a writer for every region, a's too
        async with ReplicatingCache(
            ns, "a", bootstrap_servers=broker, memcached_timeout_s=0.3
        ) as cache:
            first = await cache.set(key, b"first")
            assert first.durable == "TRUE"
            os.kill(local.pid, signal.SIGSTOP)
            try:
                second = await cache.set(key, b"second")
            finally:
                os.kill(local.pid, signal.SIGCONT)
            assert second.durable == "TRUE"  # the log holds it: it reaches every region
            assert second.local is not None
            assert second.local.outcome is ApplyOutcome.TRANSIENT
            # logged again as an origin repair, which the fan-out copies to region a only
            assert second.repair == "TRUE"

        async def others_hold_it() -> bool:
            return await rig.read("b", [key.encode()]) + await rig.read("c", [key.encode()]) == [
                b"second",
                b"second",
            ]

        await until(others_hold_it, 45, "regions b and c to hold the second value")
        # region a's writer has had the time b's and c's took, and as long again

        async def a_holds_it() -> bool:
            return await rig.read("a", [key.encode()]) == [b"second"]

        await until(a_holds_it, 10, "region a (the origin) to hold the second value")
    finally:
        await rig.stop()


# ---------------------------------------------------------------------------------------------
# a region whose memcached server is an IPv6 address (the namespace config takes [v6]:port)


@contextlib.contextmanager
def _memcached(host: str, *options: str) -> Iterator[str]:
    """A real memcached on ``host`` with ``options``: its ``host:port`` as a region's config
    names it (stopped by its PID)."""
    port = free_port()
    argv = [shutil.which("memcached") or "memcached", "-l", host, "-p", str(port), "-U", "0"]
    argv += ["-m", "16", "-t", "1", *options] + (["-u", "root"] if os.geteuid() == 0 else [])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, f"memcached on {host} exited"
                assert time.monotonic() < deadline, f"memcached on {host} did not answer"
                time.sleep(0.05)
        yield f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def ipv6_memcached() -> Iterator[str]:
    """A real memcached listening on ``[::1]``."""
    with _memcached("::1") as address:
        yield address


@pytest.mark.timeout(30)
async def test_a_region_on_an_ipv6_memcached_server_applies(ipv6_memcached, unique) -> None:
    from walstream.namespaces.replication import parse_replication

    replication = parse_replication(
        {"regions": {"a": {"memcached": [ipv6_memcached]}, "b": {"memcached": ["127.0.0.1:1"]}}}
    )
    assert replication is not None
    region = replication.region("a")
    assert region is not None
    servers = [str(server) for server in region.memcached]  # as the writer and the client do
    key = f"{unique}:v6".encode()
    async with RegionCache(servers, tombstone_ttl_s=60, timeout_s=2.0) as cache:
        [result] = await cache.apply_many([_set(key, 1, b"value")])
        assert result.outcome is ApplyOutcome.APPLIED, result
        assert await cache.get(key) == b"value"


# ---------------------------------------------------------------------------------------------
# a newer value that expired leaves no version behind


@pytest.mark.timeout(30)
async def test_an_older_set_arriving_after_a_newer_one_expired_is_stale(
    memcached_servers, unique
) -> None:
    from .replication_rig import until

    key = f"{unique}:expired".encode()
    # versions of now: a value's expiry counts from its original write time
    t = time.time_ns() // 1_000_000
    newer = CacheOp(kind=OpKind.SET, key=key, version=Version(t, "b"), value=b"newer", ttl_s=1)
    older = CacheOp(kind=OpKind.SET, key=key, version=Version(t - 1_000, "a"), value=b"older")
    async with RegionCache([memcached_servers[0].address], tombstone_ttl_s=60) as region:
        # the other order, as a region that got both in time: the older is stale
        assert [r.outcome for r in await region.apply_many([newer, older])] == [
            ApplyOutcome.APPLIED,
            ApplyOutcome.STALE,
        ]

        async def expired() -> bool:
            return await region.get(key) is None

        await until(expired, 10, "the newer value's 1 s TTL to expire")
        # a region whose writer lags by more than the TTL gets the older set now
        [late] = await region.apply_many([older])
        assert late.outcome is ApplyOutcome.STALE, late
        assert await region.get(key) is None


# ---------------------------------------------------------------------------------------------
# a region's memcached started without CAS (-C: 8 bytes less per item)


@pytest.mark.timeout(30)
async def test_a_server_without_cas_is_refused_for_what_it_is(unique) -> None:
    key = f"{unique}:nocas".encode()
    with _memcached("127.0.0.1", "-C") as address:
        async with RegionCache([address], tombstone_ttl_s=60) as region:
            results = [await region.apply(_set(key, t, b"v%d" % t)) for t in (1, 2)]
    # no half-working region (new keys stored, existing ones never updated): every write is
    # refused, naming the cause
    assert [r.outcome for r in results] == [ApplyOutcome.TRANSIENT] * 2, results
    assert all("CAS" in r.reason for r in results), results


# ---------------------------------------------------------------------------------------------
# a value no memcached of the region can hold, set through the client


@pytest.mark.timeout(60)
async def test_the_client_refuses_a_value_over_its_regions_item_size(
    broker, own_memcached, memcached_servers, unique
) -> None:
    from walstream.errors import BadRequestError
    from walstream.namespaces.config import parse_namespace
    from walstream.replication import ReplicatingCache

    local = own_memcached(item_size_max="1m")
    definition = _two_regions(f"rv-{unique}", local.address, memcached_servers[1].address)
    definition["max_payload_bytes"] = 4 * 1024 * 1024  # the namespace takes it
    ns = parse_namespace(definition)
    key = f"{unique}:big"
    async with ReplicatingCache(ns, "a", bootstrap_servers=broker) as cache:
        assert (await cache.set(key, b"small")).durable == "TRUE"
        with pytest.raises(BadRequestError, match="item size"):
            await cache.set(key, b"x" * (1024 * 1024))
        assert await cache.get(key) == b"small"


# ---------------------------------------------------------------------------------------------
# a value memcached holds (its item size 1 MiB) but the client's producer refuses


@pytest.mark.timeout(60)
async def test_the_client_refuses_a_value_over_the_logs_record_limit_by_name(
    broker, memcached_servers, unique
) -> None:
    # a set's record carries its value in base64 (4/3): a 900 KiB value, which memcached's
    # 1 MiB item size holds, is over WriteToLog's record limit (934,464 bytes by default). It
    # got the producer's refusal (FALSE) before; now the limit is named and nothing is written.
    from walstream.errors import PayloadTooLargeError
    from walstream.namespaces.config import parse_namespace
    from walstream.replication import ReplicatingCache

    a, b = (server.address for server in memcached_servers[:2])
    ns = parse_namespace(_two_regions(f"rv-{unique}", a, b) | {"max_payload_bytes": 1024**2})
    key = f"{unique}:900k"
    value = bytes(range(256)) * (900 * 1024 // 256)
    async with ReplicatingCache(ns, "a", bootstrap_servers=broker) as cache:
        with pytest.raises(PayloadTooLargeError, match="over the log's limit of 934464"):
            await cache.set(key, value)
        assert await cache.get(key) is None  # nothing applied locally
        fits = value[: 600 * 1024]  # 800 KiB in base64: under the limit
        result = await cache.set(key, fits)
        assert (result.durable, result.error) == ("TRUE", None)
        assert await cache.get(key) == fits


# ---------------------------------------------------------------------------------------------
# a region topic with more partitions than its DLQ


@pytest.mark.timeout(60)
async def test_a_poison_operation_on_a_partition_its_dlq_lacks_is_dead_lettered(
    broker, memcached_servers, unique
) -> None:
    from aiokafka import AIOKafkaProducer, TopicPartition

    from walstream.kafka.admin import ensure_topics
    from walstream.records import encode_envelope
    from walstream.testing.replication import cache_envelope
    from walstream.topology import TopicSpec, region_topic

    from .replication_rig import Rig, until

    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    rig = Rig(broker, f"rv{unique}", servers)  # its topics: 2 partitions
    topic = region_topic(rig.ns, "b")
    await ensure_topics(
        broker, [TopicSpec(name=topic, partitions=4, replication_factor=1, min_insync_replicas=1)]
    )
    writer = rig.writer("b")
    await writer.start()
    try:
        poison = cache_envelope("set", "k" * 300, b"v", ns=rig.ns, token=f"{unique}-p")
        good = cache_envelope("set", f"{unique}:after", b"good", ns=rig.ns, token=f"{unique}-g")
        async with AIOKafkaProducer(bootstrap_servers=broker, acks="all") as producer:
            for env in (poison, good):  # both on partition 3, which the DLQ does not have
                key = str(env.target["key"]).encode()
                await producer.send_and_wait(topic, encode_envelope(env), key=key, partition=3)

        async def settled() -> bool:
            # the poison one dead-lettered, the one behind it applied, the batch committed
            return (
                writer.outcomes["dlq"] == 1
                and await rig.read("b", [f"{unique}:after".encode()]) == [b"good"]
                and writer.ledger.committable(TopicPartition(topic, 3)) == 2
            )

        await until(settled, 20, "the poison operation dead-lettered, the next one applied")
    finally:
        await writer.stop()
        await rig.stop()
