"""RegionCache and MetaConnection against a scripted server: the replies a healthy memcached does
not give (out-of-step replies, server errors, lost races forever, garbage), each forced."""

from __future__ import annotations

import asyncio

import pytest

from walstream.core.cache_version import CacheOp, OpKind, PoisonReason
from walstream.core.lww import Version
from walstream.errors import TargetUnavailableError
from walstream.replication import ApplyOutcome, MetaConnection, RegionCache
from walstream.testing.servers import RawServer

SETTINGS = b"STAT maxbytes 1\r\nSTAT item_size_max 1048576\r\nEND\r\n"


class Script:
    """A meta-protocol server answering each command with ``answer(command) -> bytes``."""

    def __init__(self, answer, settings=SETTINGS):
        self.answer = answer
        self.settings = settings
        self.connections = 0
        self.commands: list[bytes] = []

    async def handle(self, reader, writer):
        self.connections += 1
        while line := await reader.readline():
            words = line.split()
            if words[0] == b"ms":
                await reader.readexactly(int(words[2]) + 2)
            self.commands.append(line)
            if words[0] == b"mn":
                reply = b"MN\r\n"
            elif words[0] == b"stats":
                reply = self.settings
            else:
                reply = self.answer(line)
            writer.write(reply)
            await writer.drain()


def set_op(key=b"k", time_ms=1, value=b"v"):
    return CacheOp(kind=OpKind.SET, key=key, version=Version(time_ms, "t"), value=value)


async def run(script, ops, **options):
    async with (
        RawServer(script.handle) as port,
        RegionCache([f"127.0.0.1:{port}"], tombstone_ttl_s=60, **options) as cache,
    ):
        return await cache.apply_many(ops)


async def test_a_write_refused_for_lack_of_memory_is_transient():
    script = Script(
        lambda c: b"EN\r\n" if c.startswith(b"mg") else b"SERVER_ERROR out of memory\r\n"
    )
    [result] = await run(script, [set_op()])
    assert result.outcome is ApplyOutcome.TRANSIENT
    assert "out of memory" in result.reason


async def test_a_value_the_server_finds_too_large_is_poison_even_when_it_passed_our_check():
    script = Script(
        lambda c: (
            b"EN\r\n" if c.startswith(b"mg") else b"SERVER_ERROR object too large for cache\r\n"
        )
    )
    [result] = await run(script, [set_op()])
    assert result.poison is PoisonReason.VALUE_TOO_LARGE


async def test_an_error_answer_to_a_read_is_transient_for_that_key_only():
    script = Script(
        lambda c: (
            b"CLIENT_ERROR bad\r\n"
            if b" bad " in c
            else b"EN\r\n"
            if c.startswith(b"mg")
            else b"HD\r\n"
        )
    )
    results = await run(script, [set_op(b"bad"), set_op(b"good")])
    assert [r.outcome for r in results] == [ApplyOutcome.TRANSIENT, ApplyOutcome.APPLIED]


async def test_a_key_whose_race_is_lost_every_round_is_transient_after_max_rounds():
    script = Script(lambda c: b"VA 1 c7\r\nx\r\n" if c.startswith(b"mg") else b"EX\r\n")
    [result] = await run(script, [set_op()], max_rounds=3)
    assert result.outcome is ApplyOutcome.TRANSIENT
    assert "3 times" in result.reason
    assert sum(c.startswith(b"ms") for c in script.commands) == 3
    assert all(b" C7" in c for c in script.commands if c.startswith(b"ms"))


async def test_a_batch_larger_than_max_batch_goes_in_several_exchanges():
    script = Script(lambda c: b"EN\r\n" if c.startswith(b"mg") else b"HD\r\n")
    ops = [set_op(b"k%d" % i) for i in range(25)]
    results = await run(script, ops, max_batch=10)
    assert {r.outcome for r in results} == {ApplyOutcome.APPLIED}
    assert sum(c.startswith(b"mn") for c in script.commands) == 6  # 3 read and 3 write batches
    assert all(b" ME" in c for c in script.commands if c.startswith(b"ms"))  # add mode


async def test_replies_out_of_step_drop_the_connection_and_the_next_batch_reconnects():
    extra = {"once": True}

    def answer(command):
        if extra.pop("once", False):
            return b"EN\r\nEN\r\n"  # one reply too many: it would be paired with the next command
        return b"EN\r\n"

    script = Script(answer)
    async with RawServer(script.handle) as port:
        connection = MetaConnection(f"127.0.0.1:{port}", timeout_s=5)
        try:
            with pytest.raises(TargetUnavailableError, match="2 replies to 1 commands"):
                await connection.execute([b"mg a v c\r\n"])
            assert [r.status for r in await connection.execute([b"mg a v c\r\n"])] == [b"EN"]
            assert script.connections == 2
            assert await connection.execute([]) == []
        finally:
            await connection.close()


async def test_a_server_without_item_size_max_in_its_settings_is_unavailable():
    script = Script(lambda c: b"EN\r\n", settings=b"STAT maxbytes 1\r\nEND\r\n")
    [result] = await run(script, [set_op()])
    assert result.outcome is ApplyOutcome.TRANSIENT
    assert "item_size_max" in result.reason


@pytest.mark.parametrize(
    "reply",
    [b"\r\n", b"VA 1 c1\r\nxyz\r\n", b"HD\r\n"],
    ids=["empty line", "value without its CRLF", "no value for a read"],
)
async def test_a_garbled_reply_to_a_read_is_unavailable(reply):
    script = Script(lambda c: reply)
    async with (
        RawServer(script.handle) as port,
        RegionCache([f"127.0.0.1:{port}"], tombstone_ttl_s=60, timeout_s=5) as cache,
    ):
        with pytest.raises(TargetUnavailableError):
            await cache.get(b"k")


async def test_a_region_needs_servers_and_a_positive_tombstone_ttl():
    with pytest.raises(ValueError, match="at least one"):
        RegionCache([], tombstone_ttl_s=60)
    with pytest.raises(ValueError, match="tombstone_ttl_s"):
        RegionCache(["127.0.0.1:1"], tombstone_ttl_s=0)


async def test_a_server_that_never_answers_times_out():
    async def silent(reader, writer):
        await asyncio.sleep(30)

    async with RawServer(silent) as port:
        connection = MetaConnection(f"127.0.0.1:{port}", timeout_s=0.2)
        try:
            with pytest.raises(TargetUnavailableError, match=r"no answer in 0\.2s"):
                await connection.execute([b"mn\r\n"])
        finally:
            await connection.close()


async def test_bytes_after_the_closing_mn_drop_the_connection():
    async def early(reader, writer):
        await reader.readuntil(b"mn\r\n")
        writer.write(b"EN\r\nMN\r\nEN\r\n")  # one write: a reply nobody asked for after MN

    async with RawServer(early) as port:
        connection = MetaConnection(f"127.0.0.1:{port}", timeout_s=5)
        try:
            with pytest.raises(TargetUnavailableError, match="after the batch"):
                await connection.execute([b"mg a v\r\n"])
        finally:
            await connection.close()


async def test_a_batch_cancelled_while_awaiting_its_replies_never_hands_them_to_the_next():
    """The cancelled batch's replies arrive later on its connection: the next batch, with as
    many commands, must not read them as its own (it gets a fresh connection)."""
    release = asyncio.Event()
    received = asyncio.Event()

    async def held(reader, writer):
        while line := await reader.readline():
            if line.startswith(b"mg "):
                key = line.split()[1]
                if key == b"first":
                    received.set()
                    await release.wait()
                reply = b"VA %d\r\n%s\r\n" % (len(key), key)
            else:
                reply = b"MN\r\n"
            writer.write(reply)
            await writer.drain()

    async with RawServer(held) as port:
        connection = MetaConnection(f"127.0.0.1:{port}", timeout_s=5)
        try:
            first = asyncio.ensure_future(connection.execute([b"mg first v\r\n"]))
            await received.wait()  # the batch is written and waits for its replies
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            release.set()
            [reply] = await connection.execute([b"mg second v\r\n"])
            assert reply.value == b"second"
        finally:
            await connection.close()
