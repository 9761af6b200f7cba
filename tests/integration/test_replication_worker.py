"""The replication stages in walstream's processes (issue 17): a worker runs a replicated
namespace's fan-out and region writers (not the Faust delivery agents), and
``walstream worker --region r`` runs region r's writers alone, continuing from the committed
offsets after a SIGKILL."""

from __future__ import annotations

import asyncio

import pytest

from walstream.core.cache_ops import cache_op
from walstream.kafka.clients import ClientIds
from walstream.records import Envelope
from walstream.replication import RegionCache
from walstream.testing.records import namespace_definition
from walstream.testing.replication import cache_envelope
from walstream.topology import region_topic

from .conftest import apply_namespace, eventually, run_cli, wait_serving
from .helpers import committed_offset, worker_assignment
from .replication_rig import (
    TOMB_TTL,
    RegionProcess,
    region_fanout,
    replicated_definition,
    sets_and_deletes,
)
from .replication_rig import publish as rig_publish

pytestmark = pytest.mark.integration


async def publish(broker: str, log: str, envs: list[Envelope], cache_a: RegionCache | None) -> None:
    """As the replicating client: apply in region a (None: not, a raw write), then publish."""
    if cache_a is not None:
        await cache_a.apply_many([cache_op(env) for env in envs])
    await rig_publish(broker, log, envs, linger_ms=5)


async def same(caches: dict[str, RegionCache], region: str, keys: list[bytes]) -> bool:
    try:
        for key in keys:
            if await caches[region].get(key) != await caches["a"].get(key):
                return False
    except Exception:  # noqa: BLE001 - a region's server may be away
        return False
    return True


@pytest.fixture
async def caches(memcached_servers):
    made = {
        r: RegionCache([s.address], tombstone_ttl_s=TOMB_TTL)
        for r, s in zip("abc", memcached_servers, strict=True)
    }
    yield made
    for cache in made.values():
        await cache.close()


async def test_a_worker_runs_the_fanout_and_writers_not_the_delivery_agents(
    workers, wal_env, wal_settings, broker, memcached_servers, caches, unique
) -> None:
    ns = f"w{unique}"
    await apply_namespace(
        wal_settings,
        replicated_definition(
            ns, {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
        ),
    )
    plain = f"p{unique}"
    await apply_namespace(wal_settings, namespace_definition(plain))
    worker = workers()
    envs = sets_and_deletes(ns, unique, 600, 100)
    poison = cache_envelope("set", f"{unique} space", b"x", ns=ns, token="poison")
    await publish(broker, f"wal.{ns}.log", envs, caches["a"])
    await publish(broker, f"wal.{ns}.log", [poison], None)
    keys = sorted({str(e.target["key"]).encode() for e in envs})
    for region in ("b", "c"):
        await eventually(
            lambda r=region: same(caches, r, keys), 90, f"{region} to match a\n{worker.log_tail()}"
        )

    def status() -> str | None:
        done = run_cli(wal_env, "replication", "status", ns)
        assert done.returncode == 0, done.stderr
        # region a is the origin of every operation: its topic gets none; b and c one poison
        lines = {line.split()[0]: line.split()[1:3] for line in done.stdout.splitlines()[1:]}
        return done.stdout if lines == {"a": ["0", "0"], "b": ["0", "1"], "c": ["0", "1"]} else None

    await eventually(lambda: asyncio.to_thread(status), 60, "replication status to settle")
    # the agents serve the plain namespace's log, never the replicated one's
    await wait_serving(worker, f"wal.{plain}.log", within_s=90)
    body = worker_assignment(worker)
    assert body is not None
    assert not [t for t, _ in body["assignment"] if t in (f"wal.{ns}.log", f"wal.{ns}.retry")]


async def test_a_region_writer_killed_mid_stream_is_continued_by_a_new_one(
    wal_env, wal_settings, broker, memcached_servers, caches, unique, tmp_path
) -> None:
    ns = f"k{unique}"
    definition_ = replicated_definition(
        ns, {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    )
    await apply_namespace(wal_settings, definition_)
    from walstream.namespaces.config import parse_namespace

    config = parse_namespace(definition_)
    fanout = region_fanout(wal_settings, config, "c")
    first = RegionProcess(wal_env, "c", tmp_path / "region-c-1.log")
    second: RegionProcess | None = None
    await fanout.start()
    try:
        envs = sets_and_deletes(ns, unique, 4_000, 500)
        await publish(broker, config.topics.log, envs[:2_000], caches["a"])
        group = ClientIds.region_group(ns, "c")
        topic = region_topic(ns, "c")

        async def some_committed() -> bool:
            for partition in range(wal_settings.default_partitions):
                if ((await committed_offset(broker, group, topic, partition)) or 0) > 0:
                    return True
            return False

        await eventually(some_committed, 60, f"region c to commit\n{first.log_tail()}")
        publishing = asyncio.ensure_future(
            publish(broker, config.topics.log, envs[2_000:], caches["a"])
        )
        first.kill()  # mid-stream: no final commit
        await publishing
        second = RegionProcess(wal_env, "c", tmp_path / "region-c-2.log")
        keys = sorted({str(e.target["key"]).encode() for e in envs})
        await eventually(lambda: same(caches, "c", keys), 120, f"c to match a\n{second.log_tail()}")
    finally:
        first.kill()
        if second is not None:
            second.kill()
        await fanout.stop()
