"""Last-write-wins on real memcached servers (Debian's 1.6.18, issue 17): exact bytes, forced
reordering, CAS races, poison operations, outages, and what a plain memcached client sees."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import struct
import time

import pytest

from walstream.core.cache_version import (
    FORMAT_VERSION,
    HEADER_BYTES,
    ITEM_OVERHEAD_BYTES,
    MAGIC,
    CacheOp,
    Kind,
    OpKind,
    PoisonReason,
    StoredItem,
    decode,
    encode,
)
from walstream.core.lww import Version
from walstream.errors import TargetUnavailableError
from walstream.replication import ApplyOutcome, MetaConnection, RegionCache
from walstream.testing.replication import plain_exchange

pytestmark = pytest.mark.integration

TOMB_TTL = 3_600
#: seconds an absolute expiry may read off as memcached's TTL: its clock ticks once a second,
#: late when the machine is loaded, and this test's own steps take time
SKEW = 10
APPLIED = ApplyOutcome.APPLIED
STALE = ApplyOutcome.STALE


def set_op(key, time_ms, value=None, ttl=0, token=None):
    token = token or f"tok-{time_ms}"
    value = f"value-{time_ms}".encode() if value is None else value
    return CacheOp(
        kind=OpKind.SET, key=key, version=Version(time_ms, token), value=value, ttl_s=ttl
    )


def del_op(key, time_ms, token=None):
    token = token or f"tok-{time_ms}"
    return CacheOp(kind=OpKind.DELETE, key=key, version=Version(time_ms, token))


def touch_op(key, time_ms, ttl):
    return CacheOp(
        kind=OpKind.TOUCH, key=key, version=Version(time_ms, f"tok-{time_ms}"), ttl_s=ttl
    )


def raw_get(address: str, key: bytes) -> tuple[int, bytes]:
    """(flags, bytes) of ``get key`` with the classic text protocol (a hit)."""
    reply = plain_exchange(address, b"get %s\r\n" % key, b"END\r\n")
    assert reply != b"END\r\n", f"miss: {key!r}"
    head, _, rest = reply.partition(b"\r\n")
    _, _, flags, size = head.split()
    return int(flags), rest[: int(size)]


def raw_ttl(address: str, key: bytes) -> int:
    reply = plain_exchange(address, b"mg %s t\r\n" % key, b"\r\n")
    [flag] = [f for f in reply.split() if f.startswith(b"t")]
    return int(flag[1:])


def stat(address: str, name: str) -> int:
    reply = plain_exchange(address, b"stats\r\n", b"END\r\n")
    for line in reply.split(b"\r\n"):
        words = line.split()
        if words[:2] == [b"STAT", name.encode()]:
            return int(words[2])
    raise AssertionError(f"no stat {name}")


@pytest.fixture
async def region(memcached_servers):
    """One region of three servers (keys spread over them)."""
    async with RegionCache([s.address for s in memcached_servers], tombstone_ttl_s=TOMB_TTL) as c:
        yield c


@pytest.fixture
def key(unique):
    return lambda name: f"{unique}:{name}".encode()


async def test_exact_bytes_round_trip(region, key):
    values = {
        key("binary"): bytes(range(256)) * 3,
        key("crlf"): b"\r\nEND\r\nVALUE x 0 1\r\n",
        key("empty"): b"",
        key("header-like"): bytes([0xC1, 1, 0]) + b"not a header",
        key("utf8-é"): "é".encode(),
    }
    ops = [set_op(k, 10, value=v) for k, v in values.items()]
    assert [r.outcome for r in await region.apply_many(ops)] == [APPLIED] * len(ops)
    for k, v in values.items():
        assert await region.get(k) == v
    assert await region.get(key("never-set")) is None


async def test_the_largest_value_the_server_holds_round_trips_and_one_byte_more_is_poison(
    region, key, memcached_servers
):
    k = key("largest")
    item_size_max = 1024 * 1024  # memcached's default -I, as the fixture starts it
    token = "tok-1"
    largest = item_size_max - ITEM_OVERHEAD_BYTES - len(k) - HEADER_BYTES - len(token)
    value = os.urandom(largest)
    assert (await region.apply(set_op(k, 1, value=value, token=token))).outcome is APPLIED
    assert await region.get(k) == value
    over = await region.apply(set_op(k, 2, value=value + b"x", token="tok-2"))
    assert over.outcome is ApplyOutcome.POISON
    assert over.poison is PoisonReason.VALUE_TOO_LARGE
    assert await region.get(k) == value


async def test_an_older_set_after_a_newer_set_leaves_the_newer_value(region, key):
    k = key("set-set")
    assert (await region.apply(set_op(k, 20, b"newer"))).outcome is APPLIED
    assert (await region.apply(set_op(k, 10, b"older"))).outcome is STALE
    assert await region.get(k) == b"newer"


async def test_an_older_set_after_a_newer_delete_stays_deleted(region, key):
    k = key("del-set")
    assert (await region.apply(set_op(k, 10, b"first"))).outcome is APPLIED
    assert (await region.apply(del_op(k, 30))).outcome is APPLIED
    assert (await region.apply(set_op(k, 20, b"late"))).outcome is STALE
    assert await region.get(k) is None
    # the tombstone is an item of its own, kept for the tombstone TTL
    address = region.server_for(k)
    _, raw = raw_get(address, k)
    assert raw == encode(StoredItem(version=Version(30, "tok-30"), kind=Kind.TOMBSTONE))
    assert TOMB_TTL - 5 <= raw_ttl(address, k) <= TOMB_TTL


async def test_a_delete_of_a_key_never_set_still_stops_an_older_set(region, key):
    k = key("del-first")
    assert (await region.apply(del_op(k, 30))).outcome is APPLIED
    assert (await region.apply(set_op(k, 20, b"late"))).outcome is STALE
    assert await region.get(k) is None
    assert (await region.apply(set_op(k, 40, b"later"))).outcome is APPLIED
    assert await region.get(k) == b"later"


async def test_an_older_delete_after_a_newer_set_leaves_the_value(region, key):
    k = key("set-del")
    assert (await region.apply(set_op(k, 20, b"kept"))).outcome is APPLIED
    assert (await region.apply(del_op(k, 10))).outcome is STALE
    assert await region.get(k) == b"kept"


async def test_a_redelivered_operation_is_a_duplicate(region, key):
    k = key("dup")
    op = set_op(k, 20, b"once")
    assert (await region.apply(op)).outcome is APPLIED
    assert (await region.apply(op)).outcome is ApplyOutcome.DUPLICATE


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_set_ttl_and_touch_count_from_the_original_write_time(region, key):
    k = key("touch")
    address = region.server_for(k)
    t = now_ms()
    # memcached keeps the item TOMB_TTL past its expiry (a versioned marker once expired)
    assert (await region.apply(set_op(k, t, b"v", ttl=100))).outcome is APPLIED
    assert 100 + TOMB_TTL - SKEW <= raw_ttl(address, k) <= 100 + TOMB_TTL + SKEW
    assert (await region.apply(touch_op(k, t + 20, ttl=5_000))).outcome is APPLIED
    assert 5_000 + TOMB_TTL - SKEW <= raw_ttl(address, k) <= 5_000 + TOMB_TTL + SKEW
    assert await region.get(k) == b"v"
    # an older touch changes nothing; the value's version is still the set's
    assert (await region.apply(touch_op(k, t + 5, ttl=50))).outcome is STALE
    assert raw_ttl(address, k) > 5_000
    # a set older than the touch but newer than the value wins, and keeps the touch's expiry
    assert (await region.apply(set_op(k, t + 15, b"between", ttl=1))).outcome is APPLIED
    assert await region.get(k) == b"between"
    assert raw_ttl(address, k) > 5_000
    # a touch with no TTL: never
    assert (await region.apply(touch_op(k, t + 30, ttl=0))).outcome is APPLIED
    assert raw_ttl(address, k) == -1
    # a touch of nothing is absent, but recorded (for the set it touched, arriving later)
    nothing = key("touch-nothing")
    assert (await region.apply(touch_op(nothing, t + 20, ttl=5))).outcome is ApplyOutcome.ABSENT
    assert await region.get(nothing) is None
    marker = decode(raw_get(region.server_for(nothing), nothing)[1])
    assert isinstance(marker, StoredItem)
    assert marker.kind is Kind.TOUCHED
    assert (await region.apply(set_op(nothing, t + 10, b"late", ttl=0))).outcome is APPLIED
    assert await region.get(nothing) == b"late"
    ttl = raw_ttl(region.server_for(nothing), nothing)
    assert 5 + TOMB_TTL - SKEW <= ttl <= 5 + TOMB_TTL + SKEW


async def test_a_value_expires_at_its_write_time_plus_its_ttl_whenever_it_is_applied(region, key):
    t = now_ms()
    # written 50 s ago with a 60 s TTL (a region lagging): 10 s left, as in every region
    lagging = key("lagging")
    assert (await region.apply(set_op(lagging, t - 50_000, b"v", ttl=60))).outcome is APPLIED
    ttl = raw_ttl(region.server_for(lagging), lagging)
    assert 10 + TOMB_TTL - SKEW <= ttl <= 10 + TOMB_TTL + SKEW  # not 60: from its write time
    assert await region.get(lagging) == b"v"
    # expired before it arrived: a miss, but its version stays for an older set arriving later
    late = key("expired-on-arrival")
    address = region.server_for(late)
    assert (await region.apply(set_op(late, t - 120_000, b"v", ttl=60))).outcome is APPLIED
    assert await region.get(late) is None
    assert decode(raw_get(address, late)[1]).expires_at_ms == t - 60_000  # a plain client's view
    assert (await region.apply(set_op(late, t - 130_000, b"older"))).outcome is STALE
    assert await region.get(late) is None
    # expired longer ago than the tombstone TTL: memcached drops it at once
    gone = key("long-gone")
    old = t - (TOMB_TTL + 120) * 1_000
    assert (await region.apply(set_op(gone, old, b"v", ttl=60))).outcome is APPLIED
    assert plain_exchange(region.server_for(gone), b"get %s\r\n" % gone, b"END\r\n") == b"END\r\n"


async def test_an_item_of_the_previous_format_is_read_and_replaced_by_a_newer_version(region, key):
    k = key("format-1")
    address = region.server_for(k)
    v1 = struct.pack(">BBBQH", MAGIC, 1, 0, 2_000, 3) + b"tok" + b"old-format value"
    reply = plain_exchange(address, b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v1), v1), b"\r\n")
    assert reply == b"STORED\r\n"
    assert await region.get(k) == b"old-format value"
    assert (await region.apply(set_op(k, 1_000, b"older"))).outcome is STALE
    assert raw_get(address, k)[1] == v1
    assert (await region.apply(set_op(k, 3_000, b"newer"))).outcome is APPLIED
    raw = raw_get(address, k)[1]
    assert raw[:2] == bytes([MAGIC, FORMAT_VERSION])
    assert await region.get(k) == b"newer"


async def test_a_batch_keeps_each_key_s_order_over_many_keys_and_servers(region, key):
    rng = random.Random(17)
    keys = [key(f"batch-{i}") for i in range(300)]
    assert len({region.server_for(k) for k in keys}) == 3
    ops: list[CacheOp] = []
    last: dict[bytes, bytes | None] = {}
    for step in range(3_000):
        k = rng.choice(keys)
        time_ms = step + 1
        if rng.random() < 0.25:
            ops.append(del_op(k, time_ms))
            last[k] = None
        else:
            ops.append(set_op(k, time_ms))
            last[k] = f"value-{time_ms}".encode()
    results = await region.apply_many(ops)
    # log order is version order here: every operation is newer than the one before it
    assert [r.outcome for r in results] == [APPLIED] * len(ops)
    for k, value in last.items():
        assert await region.get(k) == value
    # the same batch, reversed: all stale now, nothing changes
    results = await region.apply_many(list(reversed(ops)))
    assert {r.outcome for r in results} <= {STALE, ApplyOutcome.DUPLICATE}
    for k, value in last.items():
        assert await region.get(k) == value


async def test_a_cas_race_lost_between_read_and_write_ends_at_the_highest_version(
    memcached_servers, key, monkeypatch
):
    """Writer B writes every key between writer A's read and A's write (forced): A's writes
    lose the CAS race (EX on keys that held a value, NS on keys that held nothing), A reads and
    folds again, and every key ends at the highest version of the two."""
    addresses = [s.address for s in memcached_servers]
    keys = [key(f"race-{i}") for i in range(2_000)]
    # half the keys hold a value before the race (CAS path), half nothing (add path)
    async with RegionCache(addresses[:1], tombstone_ttl_s=TOMB_TTL) as setup:
        held = await setup.apply_many([set_op(k, 1) for k in keys[::2]])
        assert {r.outcome for r in held} == {APPLIED}
    rng = random.Random(5)
    ops_a, ops_b, highest = [], [], {}
    for k in keys:
        a, b = rng.sample(range(10, 1_000_000), 2)
        ops_a.append(set_op(k, a, token=f"a-{a}"))
        ops_b.append(set_op(k, b, token=f"b-{b}") if rng.random() < 0.8 else del_op(k, b, f"b-{b}"))
        highest[k] = f"value-{a}".encode() if a > b else (ops_b[-1].value or None)

    original = MetaConnection.execute
    interleave = {"armed": True, "lost": 0}

    async def execute(self, commands):
        replies = await original(self, commands)
        if interleave["armed"] and commands[0].startswith(b"mg "):
            interleave["armed"] = False
            await writer_b.apply_many(ops_b)  # between A's read and A's write
        if commands[0].startswith(b"ms "):
            interleave["lost"] += sum(r.status in (b"EX", b"NS") for r in replies)
        return replies

    monkeypatch.setattr(MetaConnection, "execute", execute)
    async with (
        # one server and one pipelined batch: B runs after A read every key
        RegionCache(addresses[:1], tombstone_ttl_s=TOMB_TTL, max_batch=5_000) as writer_a,
        RegionCache(addresses[:1], tombstone_ttl_s=TOMB_TTL) as writer_b,
    ):
        results = await writer_a.apply_many(ops_a)
        assert interleave["lost"] == len(keys)  # B changed every key: A lost every race
        for op_a, op_b, result in zip(ops_a, ops_b, results, strict=True):
            assert result.outcome is (APPLIED if op_a.version > op_b.version else STALE)
        for k in keys:
            assert await writer_a.get(k) == highest[k]


async def test_two_writers_racing_on_the_same_keys_converge_to_the_highest_version(
    memcached_servers, key
):
    addresses = [s.address for s in memcached_servers]
    keys = [key(f"conc-{i}") for i in range(2_000)]
    rng = random.Random(9)
    batches_a: list[list[CacheOp]] = []
    batches_b: list[list[CacheOp]] = []
    best: dict[bytes, CacheOp] = {}
    for _ in range(4):
        ops_a: list[CacheOp] = []
        ops_b: list[CacheOp] = []
        for k in keys:
            for ops, side in ((ops_a, "a"), (ops_b, "b")):
                t = rng.randrange(1, 1_000_000)
                op = set_op(k, t, token=f"{side}-{t}")
                ops.append(op)
                if k not in best or op.version > best[k].version:
                    best[k] = op
        batches_a.append(ops_a)
        batches_b.append(ops_b)
    async with (
        RegionCache(addresses, tombstone_ttl_s=TOMB_TTL, max_batch=200) as writer_a,
        RegionCache(addresses, tombstone_ttl_s=TOMB_TTL, max_batch=200) as writer_b,
    ):

        async def run(writer, batches):
            for batch in batches:
                results = await writer.apply_many(batch)
                assert ApplyOutcome.TRANSIENT not in {r.outcome for r in results}

        await asyncio.gather(run(writer_a, batches_a), run(writer_b, batches_b))
        wrong = [k for k in keys if await writer_a.get(k) != best[k].value]
    assert wrong == []


async def test_poison_operations_get_typed_reasons_and_leave_the_connection_up(own_memcached, key):
    server = own_memcached()
    async with RegionCache([server.address], tombstone_ttl_s=TOMB_TTL) as cache:
        assert (await cache.apply(set_op(key("warm"), 1))).outcome is APPLIED
        connections = stat(server.address, "total_connections")
        ops = [
            set_op(key("before"), 5),
            set_op(key("with space"), 5),
            set_op(b"k" * 251, 5),
            set_op(key("nl\r\nmg x"), 5),
            set_op(b"", 5),
            set_op(key("huge"), 5, value=b"x" * (2 * 1024 * 1024)),
            set_op(key("ttl"), 5, ttl=-1),
            set_op(key("after"), 5),
        ]
        results = await cache.apply_many(ops)
        assert [r.poison for r in results] == [
            None,
            PoisonReason.KEY_BAD_CHAR,
            PoisonReason.KEY_TOO_LONG,
            PoisonReason.KEY_BAD_CHAR,
            PoisonReason.KEY_EMPTY,
            PoisonReason.VALUE_TOO_LARGE,
            PoisonReason.TTL_OUT_OF_RANGE,
            None,
        ]
        assert results[0].outcome is results[-1].outcome is APPLIED
        assert await cache.get(key("after")) == b"value-5"
        # one more connection: this check's own; the cache's connection was never dropped
        assert stat(server.address, "total_connections") == connections + 1
        with pytest.raises(ValueError, match="key_bad_char"):
            await cache.get(b"bad key")


async def test_a_stopped_server_gives_transient_results_then_recovers_after_restart(
    own_memcached, key
):
    server = own_memcached()
    async with RegionCache([server.address], tombstone_ttl_s=TOMB_TTL, timeout_s=2) as cache:
        assert (await cache.apply(set_op(key("a"), 1))).outcome is APPLIED
        server.stop()
        # first the kept-alive connection breaks, then connecting is refused
        for attempt in range(2):
            result = await cache.apply(set_op(key("a"), 10 + attempt))
            assert result.outcome is ApplyOutcome.TRANSIENT, attempt
            assert server.address in result.reason
        with pytest.raises(TargetUnavailableError):
            await cache.get(key("a"))
        server.start()  # the same port; a restarted memcached is empty
        assert (await cache.apply(set_op(key("a"), 20, b"back"))).outcome is APPLIED
        assert await cache.get(key("a")) == b"back"


async def test_a_server_restarted_with_a_larger_item_size_takes_what_the_old_one_refused(
    own_memcached, key
):
    # the size is read once per connection: a restart behind the kept-alive connection was
    # not seen before the poison check, so a value that now fits was dead-lettered
    server = own_memcached(item_size_max="512k")
    big = b"x" * (600 * 1024)
    async with RegionCache([server.address], tombstone_ttl_s=TOMB_TTL, timeout_s=2) as cache:
        assert (await cache.apply(set_op(key("small"), 1))).outcome is APPLIED
        refused = await cache.apply(set_op(key("big"), 2, big))
        assert refused.outcome is ApplyOutcome.POISON
        assert refused.reason == "value_too_large"
        server.stop()
        server.item_size_max = None  # memcached's default: 1 MiB
        server.start()
        # the size is asked again, on the kept-alive connection, which is found dead: a retry
        first = await cache.apply(set_op(key("big"), 3, big))
        assert first.outcome is ApplyOutcome.TRANSIENT
        assert (await cache.apply(set_op(key("big"), 3, big))).outcome is APPLIED
        assert await cache.get(key("big")) == big
        assert await cache.check(set_op(key("big"), 4, big)) is None
        assert await cache.check(set_op(key("big"), 5, big * 2)) is not None  # still too large


async def test_a_hung_server_times_out_as_transient_and_is_used_again_once_it_answers(
    own_memcached, key
):
    server = own_memcached()
    async with RegionCache([server.address], tombstone_ttl_s=TOMB_TTL, timeout_s=0.5) as cache:
        assert (await cache.apply(set_op(key("h"), 1))).outcome is APPLIED
        os.kill(server.pid, signal.SIGSTOP)
        try:
            result = await cache.apply(set_op(key("h"), 2))
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert result.outcome is ApplyOutcome.TRANSIENT
        assert "no answer" in result.reason
        assert (await cache.apply(set_op(key("h"), 3, b"three"))).outcome is APPLIED
        assert await cache.get(key("h")) == b"three"


async def test_a_plain_memcached_client_sees_the_encoded_item(region, key):
    k = key("plain")
    value = b"\x00bytes\r\n"
    assert (await region.apply(set_op(k, 1234, value, token="idem"))).outcome is APPLIED
    flags, raw = raw_get(region.server_for(k), k)
    assert flags == 0
    assert raw == encode(StoredItem(version=Version(1234, "idem"), kind=Kind.VALUE, value=value))
    assert raw.endswith(value)


async def test_a_value_set_by_a_plain_client_is_read_as_is_and_any_versioned_op_replaces_it(
    region, key
):
    k = key("foreign")
    address = region.server_for(k)
    assert plain_exchange(address, b"set %s 0 0 5\r\nplain\r\n" % k, b"\r\n") == b"STORED\r\n"
    assert await region.get(k) == b"plain"
    assert (await region.apply(set_op(k, 1, b"versioned"))).outcome is APPLIED
    assert await region.get(k) == b"versioned"
    plain_exchange(address, b"set %s 0 0 5\r\nplain\r\n" % k, b"\r\n")
    assert (await region.apply(del_op(k, 2))).outcome is APPLIED
    assert await region.get(k) is None
