"""Issue 17's acceptance points 1-3 end to end: a real broker, real memcached servers (Debian's),
a real worker subprocess running the fan-out and the region writers, the replicating client and
the real API (WriteToLog).

1. 10,000 mixed set/delete/touch operations issued in region a through ReplicatingCache and
   1,000 through WriteToLog: every key of regions a, b and c holds the same bytes (read with a
   plain memcached client and through the walstream client), those of the last version.
   WriteToLog only logs an operation: its fan-out skips the origin region, so a service using
   it writes its own region's memcached itself. The test does so for region a with a
   RegionCache (the same LWW apply, the same version), after WriteToLog answered TRUE, as the
   replicating client orders its local apply.
2. The same keys written concurrently in regions a and b, versions colliding on write time:
   every region converges to the highest version.
3. Operations reordered on the log (older after newer): the newer state stays.

The expected state of a key is a model of last-write-wins: the set or delete with the highest
version (original write time, then idempotency token) among the key's operations; a touch
changes only a TTL (none of these items expires during a test), never the bytes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import pytest

from walstream.api.app import build_api
from walstream.core.cache_ring import server_for
from walstream.core.cache_version import (
    CacheOp,
    Kind,
    OpKind,
    StoredItem,
    decode,
    encode,
    expires_at_ms,
)
from walstream.core.lww import Version
from walstream.namespaces.config import NamespaceConfig, parse_namespace
from walstream.records import Envelope
from walstream.replication import ApplyOutcome, RegionCache, ReplicatingCache
from walstream.testing.records import namespace_definition
from walstream.testing.replication import cache_envelope, plain_get, plain_ttls

from .conftest import apply_namespace, eventually, run_cli
from .helpers import worker_metric
from .replication_rig import publish

pytestmark = pytest.mark.integration

TOMB_TTL = 3_600
LONG_TTL = 86_400
OPS_TOTAL = "walstream_replication_operations_total"
T = TypeVar("T")
logger = logging.getLogger(__name__)


def definition(ns: str, servers: dict[str, list[str]]) -> dict[str, Any]:
    return namespace_definition(
        ns,
        max_payload_bytes=1 << 20,
        replication={
            "regions": {r: {"memcached": s} for r, s in servers.items()},
            "max_lag_s": 600,
            "tombstone_ttl_s": TOMB_TTL,
        },
    )


async def replicated(settings: Any, ns: str, servers: dict[str, list[str]]) -> NamespaceConfig:
    body = definition(ns, servers)
    await apply_namespace(settings, body)
    return parse_namespace(body)


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a test, with the version it was logged with."""

    kind: OpKind
    key: str
    version: Version
    value: bytes = b""
    ttl: int = 0


def _winners(ops: Iterable[Op]) -> dict[str, tuple[Op | None, Op | None]]:
    """Per key: its highest-versioned set or delete, and its highest touch when newer than it."""
    best: dict[str, Op] = {}
    touched: dict[str, Op] = {}
    for op in ops:
        into = touched if op.kind is OpKind.TOUCH else best
        held = into.get(op.key)
        if held is None or op.version > held.version:
            into[op.key] = op
    out: dict[str, tuple[Op | None, Op | None]] = {}
    for key in best.keys() | touched.keys():
        won, touch = best.get(key), touched.get(key)
        if touch is not None and won is not None and touch.version <= won.version:
            touch = None
        out[key] = (won, touch)
    return out


def model(ops: Iterable[Op]) -> dict[bytes, bytes | None]:
    """Last-write-wins: per key, the stored bytes of its highest-versioned set or delete, with
    the highest touch newer than it recorded (its version, and the value's expiry from it); a
    key only touched holds the touch's marker."""
    out: dict[bytes, bytes | None] = {}
    for key, (won, touch) in _winners(ops).items():
        by = touch or won
        assert by is not None
        expires = expires_at_ms(by.version.original_write_time_ms, by.ttl)
        recorded = touch.version if touch is not None else None
        if won is None:
            item = StoredItem(
                version=Version(0, ""), kind=Kind.TOUCHED, expires_at_ms=expires, touch=recorded
            )
        elif won.kind is OpKind.SET:
            item = StoredItem(
                version=won.version,
                kind=Kind.VALUE,
                value=won.value,
                expires_at_ms=expires,
                touch=recorded,
            )
        else:
            item = StoredItem(
                version=won.version,
                kind=Kind.TOMBSTONE,
                expires_at_ms=expires if touch is not None else 0,
                touch=recorded,
            )
        out[key.encode()] = encode(item)
    return out


def ttl_model(ops: list[Op], keys: list[bytes]) -> dict[bytes, str]:
    """Per key, the kind of expiry its item has after its operations: none (ttl 0), long
    (LONG_TTL, from the set or the newest touch after it), tomb (a tombstone's, or a touch's
    marker on a key holding nothing)."""
    winners = _winners(ops)
    out = {}
    for key in keys:
        held = winners.get(key.decode())
        if held is not None:
            won, touch = held
            by = touch or won
            assert by is not None
            if won is None or won.kind is OpKind.DELETE:
                out[key] = "tomb"
            else:
                out[key] = "none" if by.ttl == 0 else "long"
    return out


def region_ttls(servers: Sequence[str], keys: list[bytes]) -> dict[bytes, str]:
    """The kind of expiry of every key a region holds (see :func:`ttl_model`)."""
    out = {}
    for server in servers:
        for key, ttl in plain_ttls(server, keys).items():
            out[key] = "none" if ttl == -1 else ("tomb" if ttl <= TOMB_TTL else "long")
    return out


def region_items(servers: Sequence[str], keys: list[bytes]) -> dict[bytes, bytes]:
    """Every key's bytes in a region, read with a plain client from the server each key hashes
    to; a key found on any other server of the region fails (the spreading is stable)."""
    found: dict[bytes, bytes] = {}
    for server in servers:
        for key, raw in plain_get(server, keys).items():
            assert server_for(key, servers) == server, f"{key!r} on {server}, not its server"
            found[key] = raw
    return found


def expected_items(want: dict[bytes, bytes | None]) -> dict[bytes, bytes]:
    return {key: raw for key, raw in want.items() if raw is not None}


async def converge(
    regions: dict[str, list[str]],
    want: dict[bytes, bytes | None],
    within_s: float,
    log: Callable[[], str],
) -> None:
    keys = sorted(want)
    goal = expected_items(want)

    def done() -> bool:
        return all(region_items(s, keys) == goal for s in regions.values())

    try:
        await eventually(
            lambda: asyncio.to_thread(done), within_s, "every region to converge", every=0.5
        )
    except AssertionError:
        differ = []
        for region, servers in regions.items():
            held = region_items(servers, keys)
            wrong = [k for k in keys if held.get(k) != goal.get(k)]
            differ.append(f"region {region}: {len(wrong)} keys differ, e.g. {wrong[:3]}")
            differ += [
                f"  {k!r}: holds {_item(held.get(k))}, want {_item(goal.get(k))}" for k in wrong[:3]
            ]
            differ += [f"  {server} evictions: {evictions(server)}" for server in servers]
        raise AssertionError("\n".join([*differ, log()])) from None


def _item(raw: bytes | None) -> str:
    if raw is None:
        return "nothing"
    item = decode(raw)
    if isinstance(item, StoredItem):
        return f"{item.kind.name} {item.version} ({len(item.value)} B)"
    return repr(item)[:100]


def evictions(server: str) -> str:
    """The server's ``evictions`` stat (an evicted key would never converge)."""
    host, port = server.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            data += sock.recv(65536)
    for line in data.decode().splitlines():
        if line.startswith("STAT evictions "):
            return line.split()[2]
    return "?"


async def client_reads(
    ns: NamespaceConfig, broker: str, region: str, keys: list[bytes]
) -> dict[bytes, bytes | None]:
    """Every key read through the walstream client of ``region`` (a tombstone is a miss)."""
    async with ReplicatingCache(ns, region, bootstrap_servers=broker) as cache:
        out: dict[bytes, bytes | None] = {}
        for start in range(0, len(keys), 200):
            chunk = keys[start : start + 200]
            values = await asyncio.gather(*(cache.get(key.decode()) for key in chunk))
            out.update(zip(chunk, values, strict=True))
        return out


def plain_values(ops: Iterable[Op]) -> dict[bytes, bytes | None]:
    """What the walstream client's get returns per key under the model: the winning set's
    value, None for a delete or nothing."""
    best: dict[str, Op] = {}
    keys: set[str] = set()
    for op in ops:
        keys.add(op.key)
        if op.kind is not OpKind.TOUCH and (
            op.key not in best or op.version > best[op.key].version
        ):
            best[op.key] = op
    return {
        key.encode(): (best[key].value if key in best and best[key].kind is OpKind.SET else None)
        for key in keys
    }


async def in_chunks(calls: Sequence[Callable[[], Awaitable[Any]]], size: int) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(calls), size):
        out += await asyncio.gather(*(call() for call in calls[start : start + size]))
    return out


def waves(ops: Sequence[T], key: Callable[[T], str]) -> list[list[T]]:
    """``ops`` in waves holding each key at most once, each key's ops in order: a wave's calls
    run concurrently, a key's next op only after its previous one answered."""
    per_key: dict[str, list[T]] = {}
    for op in ops:
        per_key.setdefault(key(op), []).append(op)
    depth = max(len(v) for v in per_key.values())
    return [[v[w] for v in per_key.values() if len(v) > w] for w in range(depth)]


def random_value(rng: random.Random) -> bytes:
    """Binary values of varied sizes, some holding protocol bytes a parser could trip on."""
    size = rng.choice(
        [0, rng.randrange(1, 64), rng.randrange(64, 2_048), rng.randrange(2_048, 40_000)]
    )
    value = rng.randbytes(size)
    if rng.random() < 0.1:
        value += b"\r\nEND\r\nVALUE x 0 5\r\n"
    return value


def operations_total(worker: Any, ns: str, region: str, outcome: str) -> float:
    return worker_metric(worker, OPS_TOTAL, namespace=ns, region=region, outcome=outcome) or 0.0


# ---------------------------------------------------------------------------------------------
# 1. 10,000 operations through the client and 1,000 through WriteToLog, in region a


@pytest.mark.timeout(300)
async def test_three_regions_end_byte_identical_after_11000_mixed_operations(
    broker, memcached_servers, own_memcached, workers, wal_env, wal_settings, api_client, unique
) -> None:
    started = time.monotonic()
    ns_name = f"acc{unique}"
    # region c spreads its keys over two servers
    regions = {
        "a": [memcached_servers[0].address],
        "b": [memcached_servers[1].address],
        "c": [memcached_servers[2].address, own_memcached().address],
    }
    ns = await replicated(wal_settings, ns_name, regions)
    worker = workers()
    rng = random.Random(17)
    keys = [f"{unique}:k{i}" for i in range(1_950)]
    keys += [f"{unique}:ключ{i}" for i in range(40)]  # UTF-8 keys
    keys += [f"{unique}:" + "x" * (250 - len(unique) - 4) + f"{i:03d}" for i in range(10)]
    assert all(len(k.encode()) <= 250 for k in keys)

    def draw(key: str) -> tuple[str, OpKind, bytes, int, bool]:
        """An operation of ``key``; or (the last flag) a late retry of the key's first set or
        delete, with that call's version, as a caller retries an UNKNOWN answer."""
        kind = rng.choices([OpKind.SET, OpKind.DELETE, OpKind.TOUCH], [6, 2, 2])[0]
        value = random_value(rng) if kind is OpKind.SET else b""
        return key, kind, value, rng.choice([0, LONG_TTL]), rng.random() < 0.05

    client_plan = [draw(rng.choice(keys)) for _ in range(10_000)]
    # WriteToLog: 1,000 operations, half on keys only it writes, half on the client's keys
    http_keys = [f"{unique}:h{i}" for i in range(200)] + rng.sample(keys, 200)
    http_plan = [draw(rng.choice(http_keys)) for _ in range(1_000)]
    done: list[Op] = []

    async with ReplicatingCache(ns, "a", bootstrap_servers=broker) as cache:
        first: dict[str, Op] = {}  # each key's first set or delete

        def client_call(
            key: str, kind: OpKind, value: bytes, ttl: int, retry: bool
        ) -> Callable[[], Awaitable[Any]]:
            async def call() -> Any:
                op = first.get(key) if retry else None
                kind_, value_ = (op.kind, op.value) if op is not None else (kind, value)
                # a retry: older than what the key holds, LWW skips it
                owt = op.version.original_write_time_ms if op is not None else None
                token = op.version.idempotency_token if op is not None else None
                if kind_ is OpKind.SET:
                    result = await cache.set(
                        key, value_, ttl, original_write_time_ms=owt, idempotency_token=token
                    )
                elif kind_ is OpKind.DELETE:
                    result = await cache.delete(
                        key, original_write_time_ms=owt, idempotency_token=token
                    )
                else:
                    result = await cache.touch(
                        key, ttl, original_write_time_ms=owt, idempotency_token=token
                    )
                done.append(Op(kind_, key, result.version, value_, ttl))
                if kind_ is not OpKind.TOUCH:
                    first.setdefault(key, done[-1])
                return result

            return call

        async def through_client() -> list[Any]:
            results: list[Any] = []
            for wave in waves(client_plan, lambda op: op[0]):
                results += await in_chunks([client_call(*op) for op in wave], 400)
            return results

        http = await api_client(build_api(wal_settings))
        # the other region-a writer: a service writing its own memcached, and WriteToLog
        region_a = RegionCache(regions["a"], tombstone_ttl_s=TOMB_TTL)

        async def http_call(
            n: int, key: str, kind: OpKind, value: bytes, ttl: int, _retry: bool
        ) -> Any:
            version = Version(int(time.time() * 1000), f"http-{unique}-{n}")
            target: dict[str, Any] = {"type": "memcached", "op": kind.value, "key": key}
            if kind is not OpKind.DELETE:
                target["ttl"] = ttl
            target["origin_region"] = "a"
            body = {
                "payload": base64.b64encode(value).decode() if kind is OpKind.SET else None,
                "payload_encoding": "base64" if kind is OpKind.SET else "json",
                "target": target,
                "idempotency_token": version.idempotency_token,
                "lifecycle": {"original_write_time": version.original_write_time_ms},
            }
            response = await http.post(f"/v1/namespaces/{ns_name}/log", json=body)
            answer = (response.status, await response.json())
            if response.status != 200:
                return answer, None
            local = await region_a.apply(
                CacheOp(kind=kind, key=key.encode(), version=version, value=value, ttl_s=ttl)
            )
            done.append(Op(kind, key, version, value, ttl))
            return answer, local

        async def known() -> bool:  # the API learns the namespace from the control topic
            response = await http.get(f"/v1/namespaces/{ns_name}")
            return response.status == 200

        await eventually(known, 30, "the API to know the namespace", every=0.2)

        async def through_http() -> list[Any]:
            numbered = list(enumerate(http_plan))
            results: list[Any] = []
            for wave in waves(numbered, lambda item: item[1][0]):
                calls = [partial(http_call, n, *op) for n, op in wave]
                results += await in_chunks(calls, 50)
            return results

        try:
            results, http_results = await asyncio.gather(through_client(), through_http())
        finally:
            await region_a.close()
        published_s = time.monotonic() - started

    # every call was durable and applied (or skipped by LWW) in region a
    assert len(results) == 10_000
    assert {r.durable for r in results} == {"TRUE"}
    local: dict[ApplyOutcome, int] = {}
    for r in results:
        local[r.local.outcome] = local.get(r.local.outcome, 0) + 1
    assert set(local) <= {
        ApplyOutcome.APPLIED,
        ApplyOutcome.STALE,
        ApplyOutcome.DUPLICATE,
        ApplyOutcome.ABSENT,
    }, local
    assert local[ApplyOutcome.STALE] > 200, local  # the late retries
    assert len(http_results) == 1_000
    assert [a for a, _ in http_results if a[0] != 200 or a[1]["durable"] != "TRUE"] == []
    assert {loc.outcome for _, loc in http_results} <= {
        ApplyOutcome.APPLIED,
        ApplyOutcome.STALE,
        ApplyOutcome.ABSENT,
    }
    assert len(done) == 11_000

    want = model(done)
    assert set(want) == {plan[0].encode() for plan in client_plan + http_plan}
    values = sum(1 for k, v in want.items() if v is not None and v[2] == Kind.VALUE.value)
    tombs = sum(1 for v in want.values() if v is not None and v[2] == Kind.TOMBSTONE.value)
    assert values > 1_000, values
    assert tombs > 100, tombs
    await converge(regions, want, 120, worker.log_tail)
    converged_s = time.monotonic() - started

    # byte-identical: a plain client's bytes of every key, in every region, are the model's
    sorted_keys = sorted(want)
    held = {r: await asyncio.to_thread(region_items, s, sorted_keys) for r, s in regions.items()}
    assert held["a"] == held["b"] == held["c"] == expected_items(want)
    # region c's two servers each hold a fair share
    on_c = [plain_get(server, sorted_keys) for server in regions["c"]]
    assert sum(len(x) for x in on_c) == len(expected_items(want))
    assert min(len(x) for x in on_c) > len(expected_items(want)) // 4
    # through the walstream client: the exact values set, a tombstone a miss
    plain = plain_values(done)
    for region in regions:
        assert await client_reads(ns, broker, region, sorted_keys) == plain
    assert any(v for v in plain.values() if v and b"\r\nEND\r\n" in v)
    # touches replicate: the keys WriteToLog did not touch (each key's operations one after
    # the other, in version order but for late retries) hold the TTL of the last set or touch
    # that applied, in every region
    alone = sorted({op.key.encode() for op in done} - {k.encode() for k in http_keys})
    expires = {r: await asyncio.to_thread(region_ttls, s, alone) for r, s in regions.items()}
    assert expires["a"] == expires["b"] == expires["c"] == ttl_model(done, alone)
    kinds = {k: list(expires["a"].values()).count(k) for k in ("none", "long", "tomb")}
    assert min(kinds.values()) > 100, kinds

    # the writers of b and c settled all 11,000 operations (region a, their origin, none)
    for region in ("b", "c"):
        settled = sum(
            operations_total(worker, ns_name, region, o)
            for o in ("applied", "stale", "duplicate", "absent")
        )
        assert settled >= 11_000, (region, settled)
        assert operations_total(worker, ns_name, region, "dlq") == 0
    assert worker_metric(worker, OPS_TOTAL, namespace=ns_name, region="a", outcome="applied") in (
        None,
        0.0,
    )
    status = await asyncio.to_thread(run_cli, wal_env, "replication", "status", ns_name)
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in status.stdout.splitlines()[1:]}
    assert rows == {"a": ["0", "0"], "b": ["0", "0"], "c": ["0", "0"]}, status.stdout
    logger.warning(
        "acceptance 1: %d keys (%d values, %d tombstones), published in %.1fs, "
        "converged at %.1fs, local outcomes %s",
        len(want),
        values,
        tombs,
        published_s,
        converged_s,
        local,
    )


# ---------------------------------------------------------------------------------------------
# 2. the same keys written concurrently in regions a and b


@pytest.mark.timeout(240)
async def test_concurrent_writes_in_two_regions_converge_to_the_highest_version(
    broker, memcached_servers, workers, wal_settings, unique
) -> None:
    ns_name = f"two{unique}"
    regions = {r: [s.address] for r, s in zip("abc", memcached_servers, strict=True)}
    ns = await replicated(wal_settings, ns_name, regions)
    worker = workers()
    rng = random.Random(2)
    base = int(time.time() * 1000)
    keys = [f"{unique}:{i}" for i in range(500)]
    plans: dict[str, list[list[Op]]] = {"a": [], "b": []}
    for key in keys:
        for region in ("a", "b"):
            ops = []
            for j in range(3):
                kind = rng.choices([OpKind.SET, OpKind.DELETE, OpKind.TOUCH], [6, 3, 1])[0]
                # write times from a window of 4 ms: versions collide on time across regions,
                # the token (random, so either region can win) decides
                version = Version(
                    base + rng.randrange(4), f"{rng.randrange(16**6):06x}-{region}{j}"
                )
                value = b"%s|%s|" % (region.encode(), key.encode()) + rng.randbytes(
                    rng.randrange(40)
                )
                ops.append(Op(kind, key, version, value if kind is OpKind.SET else b""))
            plans[region].append(ops)

    async def run(cache: ReplicatingCache, ops: list[Op]) -> list[Any]:
        results = []
        for op in ops:
            v = op.version
            if op.kind is OpKind.SET:
                call = cache.set(
                    op.key,
                    op.value,
                    0,
                    original_write_time_ms=v.original_write_time_ms,
                    idempotency_token=v.idempotency_token,
                )
            elif op.kind is OpKind.DELETE:
                call = cache.delete(
                    op.key,
                    original_write_time_ms=v.original_write_time_ms,
                    idempotency_token=v.idempotency_token,
                )
            else:
                call = cache.touch(
                    op.key,
                    0,
                    original_write_time_ms=v.original_write_time_ms,
                    idempotency_token=v.idempotency_token,
                )
            result = await call
            results.append(result)
        return results

    async with (
        ReplicatingCache(ns, "a", bootstrap_servers=broker) as in_a,
        ReplicatingCache(ns, "b", bootstrap_servers=broker) as in_b,
    ):
        # per key, a's and b's operations run at the same time (interleaved on the log)
        calls: list[Callable[[], Awaitable[Any]]] = []
        for ops_a, ops_b in zip(plans["a"], plans["b"], strict=True):
            calls += [partial(run, in_a, ops_a), partial(run, in_b, ops_b)]
        results = [r for rs in await in_chunks(calls, 200) for r in rs]
    assert len(results) == 3_000
    assert {r.durable for r in results} == {"TRUE"}
    # each call applied in its own region (a failed local apply is never replicated there)
    failed = [r.local for r in results if r.local.outcome is ApplyOutcome.TRANSIENT]
    assert failed == [], failed[:5]

    every = [op for region in plans.values() for ops in region for op in ops]
    want = model(every)
    assert len(want) == 500
    # the setup does what it claims: many keys' winner ties on time with the other region's op
    ties = {"a": 0, "b": 0}
    for n in range(len(keys)):
        mine = [op for op in plans["a"][n] + plans["b"][n] if op.kind is not OpKind.TOUCH]
        if not mine:
            continue
        top = max(mine, key=lambda op: op.version)
        winner = top.version.idempotency_token[-2]
        rival = "b" if winner == "a" else "a"
        if any(
            op.version.original_write_time_ms == top.version.original_write_time_ms
            for op in (plans[rival][n])
            if op.kind is not OpKind.TOUCH
        ):
            ties[winner] += 1
    assert ties["a"] > 50, ties
    assert ties["b"] > 50, ties
    await converge(regions, want, 120, worker.log_tail)
    sorted_keys = sorted(want)
    held = {r: await asyncio.to_thread(region_items, s, sorted_keys) for r, s in regions.items()}
    assert held["a"] == held["b"] == held["c"] == expected_items(want)
    plain = plain_values(every)
    for region in regions:
        assert await client_reads(ns, broker, region, sorted_keys) == plain
    for region in regions:
        assert operations_total(worker, ns_name, region, "dlq") == 0
    logger.warning("acceptance 2: %d keys, time ties won: %s", len(want), ties)


# ---------------------------------------------------------------------------------------------
# 3. forced reordering: older operations logged after newer ones


async def produce(broker: str, log: str, envs: list[Envelope]) -> None:
    """Onto the log in this order (one key: one partition), as one batch."""
    await publish(broker, log, envs, linger_ms=20)


@pytest.mark.timeout(180)
async def test_an_older_operation_logged_after_a_newer_one_never_wins(
    broker, memcached_servers, workers, wal_settings, unique
) -> None:
    ns_name = f"ord{unique}"
    regions = {r: [s.address] for r, s in zip("abc", memcached_servers, strict=True)}
    ns = await replicated(wal_settings, ns_name, regions)
    worker = workers()
    t = int(time.time() * 1000)

    def env(op: str, key: str, value: bytes | None, owt: int, token: str) -> Envelope:
        ttl = None if op == "delete" else 0
        return cache_envelope(
            op, f"{unique}:{key}", value, ns=ns_name, ttl=ttl, owt_ms=owt, token=token
        )

    def raw(kind: Kind, owt: int, token: str, value: bytes = b"") -> bytes:
        return encode(StoredItem(version=Version(owt, token), kind=kind, value=value))

    def cases(suffix: str) -> dict[str, tuple[Envelope, Envelope, bytes]]:
        """(newer, older, the state that must stay) per case, on keys ending in ``suffix``."""
        return {
            "set-after-set": (
                env("set", f"s1{suffix}", b"new", t + 2, f"n1{suffix}"),
                env("set", f"s1{suffix}", b"old", t + 1, f"o1{suffix}"),
                raw(Kind.VALUE, t + 2, f"n1{suffix}", b"new"),
            ),
            "set-after-delete": (
                env("delete", f"s2{suffix}", None, t + 2, f"n2{suffix}"),
                env("set", f"s2{suffix}", b"old", t + 1, f"o2{suffix}"),
                raw(Kind.TOMBSTONE, t + 2, f"n2{suffix}"),
            ),
            "delete-after-set": (
                env("set", f"s3{suffix}", b"new", t + 2, f"n3{suffix}"),
                env("delete", f"s3{suffix}", None, t + 1, f"o3{suffix}"),
                raw(Kind.VALUE, t + 2, f"n3{suffix}", b"new"),
            ),
            # the same write time: the token decides ("n" > "m")
            "tie-after-set": (
                env("set", f"s4{suffix}", b"new", t + 2, f"n4{suffix}"),
                env("set", f"s4{suffix}", b"old", t + 2, f"m4{suffix}"),
                raw(Kind.VALUE, t + 2, f"n4{suffix}", b"new"),
            ),
        }

    def states(made: dict[str, tuple[Envelope, Envelope, bytes]]) -> dict[bytes, bytes | None]:
        return {str(newer.target["key"]).encode(): state for newer, _, state in made.values()}

    targets = {r: s for r, s in regions.items() if r != "a"}  # a is the origin: not written

    async def settled(region: str, count: int) -> bool:
        """Whether the region's writer has settled ``count`` operations, whatever they did."""
        outcomes = ("applied", "stale", "duplicate", "absent", "dlq")
        return sum(operations_total(worker, ns_name, region, o) for o in outcomes) >= count

    # the older ones in later batches than the newer: the version the key holds decides
    apart = cases("")
    want = states(apart)
    keys = sorted(want)
    await produce(broker, ns.topics.log, [newer for newer, _, _ in apart.values()])
    await converge(targets, want, 90, worker.log_tail)
    await produce(broker, ns.topics.log, [older for _, older, _ in apart.values()])
    for region in targets:
        await eventually(lambda r=region: settled(r, 8), 90, f"{region} to settle the older ops")
    for region, servers in targets.items():
        assert region_items(servers, keys) == expected_items(want)
        assert operations_total(worker, ns_name, region, "stale") == 4
        assert operations_total(worker, ns_name, region, "applied") == 4
    assert region_items(regions["a"], keys) == {}

    # newer and older back to back, produced as one batch (the writer most likely gets both in
    # one batch: the fold over the batch decides; if not, the version the key holds does)
    together = cases("b")
    want_b = states(together)
    both = [e for newer, older, _ in together.values() for e in (newer, older)]
    await produce(broker, ns.topics.log, both)
    for region in targets:
        await eventually(lambda r=region: settled(r, 16), 90, f"{region} to settle the batch")
    for region, servers in targets.items():
        assert region_items(servers, sorted(want_b)) == expected_items(want_b)
        assert region_items(servers, keys) == expected_items(want)
        assert operations_total(worker, ns_name, region, "stale") == 8
        assert operations_total(worker, ns_name, region, "applied") == 8
        assert operations_total(worker, ns_name, region, "dlq") == 0
    for region in targets:
        async with ReplicatingCache(ns, region, bootstrap_servers=broker) as cache:
            for made in (apart, together):
                got = [await cache.get(str(n.target["key"])) for n, _, _ in made.values()]
                assert got == [b"new", None, b"new", b"new"]
