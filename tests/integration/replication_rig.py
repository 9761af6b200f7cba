"""A replicated namespace of three regions on the real broker and real memcached servers, with
its fan-out and region writers run in the test's process, and a ``walstream worker --region``
subprocess, a replicated namespace's definition and a worker's /readyz: shared by the
replication tests."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from walstream.core.cache_ops import cache_op
from walstream.core.dlq import Claim, DlqEntry, Marker, parse_dlq_record
from walstream.kafka.admin import ensure_topics
from walstream.metrics import WalMetrics
from walstream.namespaces.config import NamespaceConfig
from walstream.namespaces.replication import parse_replication
from walstream.records import Envelope, encode_envelope
from walstream.replication import RegionCache
from walstream.replication.fanout import FanOut, fanouts
from walstream.replication.writer import RegionWriter
from walstream.settings import Settings
from walstream.testing.records import namespace_definition
from walstream.testing.replication import cache_envelope
from walstream.topology import default_topics, namespace_topic_specs, region_dlq_topic

from .helpers import ROOT, read_topic

TOMB_TTL = 3_600


async def until(predicate: Callable[[], Any], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {within_s}s waiting for {what}")


def _cluster(servers: str | None) -> dict[str, str]:
    return {"bootstrap_servers": servers} if servers is not None else {}


def replicated_definition(
    ns: str, servers: dict[str, str], clusters: dict[str, str] | None = None
) -> dict[str, Any]:
    """A namespace replicating to each region of ``servers`` (region: its memcached server),
    a region of ``clusters`` on the Kafka cluster it names."""
    regions = {
        r: {"memcached": [s], **_cluster((clusters or {}).get(r))} for r, s in servers.items()
    }
    return namespace_definition(
        ns, replication={"regions": regions, "max_lag_s": 600, "tombstone_ttl_s": TOMB_TTL}
    )


def readyz(port: int) -> tuple[int, dict[str, Any]] | None:
    """The worker's /readyz (status, body); None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None


def sets_and_deletes(ns: str, prefix: str, n: int, keys: int, *, start: int = 0) -> list[Envelope]:
    """Operations ``start`` to ``start + n`` over ``keys`` keys ``<prefix>:<k>``, written now: a
    delete every seventh (the 4th, 11th, ...), otherwise a set of a value of its own (no TTL)."""
    base = int(time.time() * 1000)
    out = []
    for i in range(start, start + n):
        key = f"{prefix}:{i % keys}"
        token = f"{prefix}-{i}"
        if i % 7 == 3:
            out.append(cache_envelope("delete", key, ns=ns, owt_ms=base + i, token=token))
        else:
            value = b"%d-" % i + os.urandom(i % 50)
            out.append(
                cache_envelope("set", key, value, ns=ns, ttl=0, owt_ms=base + i, token=token)
            )
    return out


async def send_all(producer: AIOKafkaProducer, topic: str, envs: list[Envelope]) -> None:
    """``envs`` onto ``topic`` in this order, each keyed by its memcached key (one key: one
    partition), as the replicating client logs them; returns once every one is acked."""
    sends = [
        await producer.send(topic, encode_envelope(env), key=str(env.target["key"]).encode())
        for env in envs
    ]
    await asyncio.gather(*sends)


async def publish(broker: str, topic: str, envs: list[Envelope], *, linger_ms: int = 0) -> None:
    """``send_all`` with a producer of its own (acks=all)."""
    async with AIOKafkaProducer(
        bootstrap_servers=broker, acks="all", linger_ms=linger_ms
    ) as producer:
        await send_all(producer, topic, envs)


def rotating_op(
    ns: str, prefix: str, i: int, *, keys: int, value_spread: int, owt_ms: int
) -> Envelope:
    """Operation ``i`` of a stream over ``keys`` keys: key ``i % keys``; a key's kinds rotate
    set, set, delete, touch over its rounds, so each key sees each kind; a set's value is ``i:``
    and ``i % value_spread`` random bytes."""
    key = f"{prefix}:{i % keys}"
    kind = ("set", "set", "delete", "touch")[(i // keys + i) % 4]
    value = b"%d:" % i + os.urandom(i % value_spread) if kind == "set" else None
    ttl = 0 if kind != "delete" else None
    return cache_envelope(kind, key, value, ns=ns, ttl=ttl, owt_ms=owt_ms, token=f"{prefix}-{i}")


def model(envs: list[Envelope]) -> dict[bytes, bytes | None]:
    """What each key reads after ``envs`` in log order: a set's value, None after a delete,
    unchanged by a touch."""
    state: dict[bytes, bytes | None] = {}
    for env in envs:
        key = str(env.target["key"]).encode()
        op = env.target["op"]
        if op == "set":
            state[key] = base64.b64decode(str(env.payload))
        elif op == "delete":
            state[key] = None
        else:
            state.setdefault(key, None)
    return state


class Stream:
    """Publishes ``make_op(0)``, ``make_op(1)``, ... to the rig's log at ``rate`` per second
    (acks=all), waiting for the acks once ``gather_at`` sends are pending, and ``pause_s``
    between rounds."""

    def __init__(
        self,
        rig: Rig,
        make_op: Callable[[int], Envelope],
        rate: int,
        *,
        gather_at: int,
        pause_s: float,
    ) -> None:
        self.rig = rig
        self.make_op = make_op
        self.rate = rate
        self.gather_at = gather_at
        self.pause_s = pause_s
        self.envs: list[Envelope] = []
        #: the envs whose publish was acknowledged
        self.acked = 0
        self.stopped = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self.stopped = True
        if self.task is not None:
            await self.task

    async def _run(self) -> None:
        producer = self.rig.producer
        assert producer is not None
        start = time.monotonic()
        sends: list[Any] = []
        while not self.stopped:
            due = int((time.monotonic() - start) * self.rate)
            while len(self.envs) < due:
                env = self.make_op(len(self.envs))
                self.envs.append(env)
                key = str(env.target["key"]).encode()
                sends.append(await producer.send(self.rig.log, encode_envelope(env), key=key))
            if len(sends) >= self.gather_at:
                await asyncio.gather(*sends)
                sends = []
                self.acked = len(self.envs)
            await asyncio.sleep(self.pause_s)
        await asyncio.gather(*sends)
        self.acked = len(self.envs)


def region_fanout(settings: Settings, config: NamespaceConfig, region: str) -> FanOut:
    """The fan-out of ``config``'s log to ``region`` alone (its region writer is the one under
    test, run elsewhere)."""
    assert config.replication is not None
    return FanOut(
        settings,
        namespace=config.name,
        log_topic=config.topics.log,
        replication=config.replication,
        region=region,
    )


async def region_dlq_entries(
    broker: str, ns: str, region: str, *, expect: int
) -> list[DlqEntry | Marker | Claim | None]:
    """The ``expect`` records of ``region``'s DLQ of ``ns``, parsed."""
    records = await read_topic(broker, region_dlq_topic(ns, region), expect=expect)
    return [
        parse_dlq_record(r.key, r.value, r.headers, partition=r.partition, offset=r.offset)
        for r in records
    ]


class RegionProcess:
    """``walstream worker --region <r>`` in a subprocess, stopped by PID."""

    def __init__(self, env: dict[str, str], region: str, log_path: Path) -> None:
        log = log_path.open("ab")
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "walstream", "worker", "--region", region],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


class Rig:
    """A replicated namespace of three regions a, b, c, its log, fan-out and writers."""

    def __init__(
        self,
        broker: str,
        ns: str,
        servers: dict[str, str],
        replicate: str = "value",
        clusters: dict[str, str] | None = None,
    ) -> None:
        self.ns = ns
        self.broker = broker
        self.log = default_topics(ns).log
        self.settings = Settings(
            bootstrap_servers=broker,
            auth=False,
            replication_factor=1,
            min_insync_replicas=1,
            default_partitions=2,
        )
        self.replication = parse_replication(
            {
                "regions": {
                    r: {"memcached": [s], **_cluster((clusters or {}).get(r))}
                    for r, s in servers.items()
                },
                "max_lag_s": 600,
                "tombstone_ttl_s": TOMB_TTL,
                "replicate": replicate,
            }
        )
        assert self.replication is not None
        self.caches = {r: RegionCache([s], tombstone_ttl_s=TOMB_TTL) for r, s in servers.items()}
        self.writers: dict[str, RegionWriter] = {}
        self.registry = CollectorRegistry()
        self.metrics = WalMetrics.create(self.registry)
        #: the fan-outs (None: to the regions on the deployment's cluster), as a worker runs them
        self.fanouts: dict[str | None, FanOut] = {}
        self.producer: AIOKafkaProducer | None = None

    def writer(self, region: str) -> RegionWriter:
        region_cfg = self.replication.region(region)  # type: ignore[union-attr]
        assert region_cfg is not None
        return RegionWriter(
            self.settings,
            namespace=self.ns,
            region=region_cfg,
            replication=self.replication,  # type: ignore[arg-type]
            cache_timeout_s=0.5,
            metrics=self.metrics,
        )

    async def start(self, regions: tuple[str, ...] = ("b", "c")) -> None:
        await ensure_topics(
            self.broker,
            namespace_topic_specs(
                default_topics(self.ns), 2, replication_factor=1, min_insync_replicas=1
            ),
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=self.broker, acks="all")
        await self.producer.start()
        for fanout in fanouts(
            self.settings,
            namespace=self.ns,
            log_topic=self.log,
            replication=self.replication,  # type: ignore[arg-type]
        ):
            self.fanouts[fanout.region] = fanout
            await fanout.start()
        for region in regions:
            self.writers[region] = self.writer(region)
            await self.writers[region].start()

    async def stop(self) -> None:
        for writer in self.writers.values():
            await writer.stop()
        for fanout in self.fanouts.values():
            await fanout.stop()
        if self.producer is not None:
            await self.producer.stop()
        for cache in self.caches.values():
            await cache.close()

    async def write(self, envs: list[Envelope], *, local: bool = True) -> None:
        """As the replicating client does: apply in region a, publish to the log."""
        if local:
            await self.caches["a"].apply_many([cache_op(env) for env in envs])
        assert self.producer is not None
        await send_all(self.producer, self.log, envs)

    async def read(self, region: str, keys: list[bytes]) -> list[bytes | None]:
        return [await self.caches[region].get(key) for key in keys]
