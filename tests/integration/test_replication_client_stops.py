"""A replication stage's client stops (walstream.kafka.stopping: stop_producer, stop_consumer)
against a real broker frozen with SIGSTOP (its kernel still accepts connections; nothing
answers): when a stop returns, however it ended, the client holds no socket and runs no task.

A socket left open behind a stop was found by the garbage collector in a later test, which
failed on an ``unclosed <socket.socket>`` ResourceWarning (warnings are errors): the stop cut
short aborted the connections it saw when it began; the client opened new ones to the frozen
broker (its metadata refresh, the sender's retry), and the stop, given up, kept running with
them; cancelled when the test's loop closed, it never closed them. A consumer stopped while a
fetch waited to be retried never closed its client (aiokafka's ``stop()`` raises first).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from walstream.kafka import clients
from walstream.kafka.stopping import stop_consumer, stop_producer

from .conftest import eventually
from .helpers import wait_until

pytestmark = pytest.mark.integration


def _sockets_to(port: int) -> list[str]:
    """This process's open TCP sockets whose peer is ``port`` on loopback (fd and state)."""
    peers: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] != "0":
                    peers[f"socket:[{fields[9]}]"] = fields[3]
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link in peers:
                found.append(f"fd {fd} (tcp state {peers[link]})")
    return found


def _aiokafka_tasks() -> list[asyncio.Task[object]]:
    """Tasks still running aiokafka code (a client's stop, sender, requests, fetches, metadata)."""
    running = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if not task.done() and code is not None and "aiokafka" in code.co_filename:
            running.append(task)
    return running


def _stopped(pid: int) -> bool:
    """Every thread of process ``pid`` is stopped (state T in /proc)."""
    states = []
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{thread}/stat") as f:
            states.append(f.read().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


@contextlib.contextmanager
def _frozen(pid: int | None) -> Iterator[None]:
    """The broker stopped (SIGSTOP) for the block: connections are accepted, never answered."""
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        # a thread of the broker's running on another CPU stops a moment later: it could still
        # answer a request sent now, so the block begins once every thread is stopped
        wait_until(lambda: _stopped(pid), 10, "every thread of the broker to stop")
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
async def producer(own_broker, unique) -> AsyncIterator[AIOKafkaProducer]:
    """A stage's producer on the test's own broker, its connection up and a record acked."""
    made = clients.stage_producer(own_broker.bootstrap_servers, group_id=f"stop{unique}")
    await made.start()
    try:
        await made.send_and_wait(f"stop.{unique}", b"first")
        yield made
    finally:
        await made.stop()  # a no-op once stopped


def _port(servers: str) -> int:
    return int(servers.rsplit(":", 1)[1])


async def test_a_stop_cut_short_leaves_no_socket_open_and_no_task_running(
    own_broker, producer, unique
) -> None:
    port = _port(own_broker.bootstrap_servers)
    assert _sockets_to(port), "the producer is connected to the broker"
    with _frozen(own_broker.pid):
        await producer.send(f"stop.{unique}", b"never acked")
        # the frozen broker never acks: the stop is cut short after 0.5 s
        await asyncio.wait_for(stop_producer(producer, timeout_s=0.5), 30)
        # checked while the broker is still frozen: nothing of the producer may be waiting on it
        assert _sockets_to(port) == []
        assert _aiokafka_tasks() == []


async def test_a_cancelled_stop_leaves_no_socket_open_and_no_task_running(
    own_broker, producer, unique
) -> None:
    port = _port(own_broker.bootstrap_servers)
    with _frozen(own_broker.pid):
        await producer.send(f"stop.{unique}", b"never acked")
        stopping = asyncio.ensure_future(stop_producer(producer, timeout_s=60))
        # the stop is waiting (the frozen broker acks nothing) when its caller is cancelled
        done, _ = await asyncio.wait({stopping}, timeout=0.5)
        assert not done
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(stopping, 30)
        assert _sockets_to(port) == []
        assert _aiokafka_tasks() == []


async def test_a_stop_within_its_deadline_delivers_what_the_producer_holds(
    own_broker, producer, unique
) -> None:
    unacked = [await producer.send(f"stop.{unique}", b"%d" % i) for i in range(20)]
    await stop_producer(producer, timeout_s=30)  # a live broker acks them all at once
    acked = {((meta := await ack).partition, meta.offset) for ack in unacked}
    assert len(acked) == 20
    assert _sockets_to(_port(own_broker.bootstrap_servers)) == []


async def test_a_consumer_stopped_while_a_fetch_waits_to_be_retried_closes_its_client(
    own_broker, unique, caplog
) -> None:
    topic = f"stop.{unique}"
    servers = own_broker.bootstrap_servers
    async with AIOKafkaProducer(bootstrap_servers=servers) as producer:
        await producer.send_and_wait(topic, b"first", partition=0)
    # a fetch that fails waits 60 s to be tried again: the stop comes in that wait
    consumer = clients.reader(
        servers, clients.REPLAY, request_timeout_ms=1_000, retry_backoff_ms=60_000
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        assert await consumer.getone()
        with _frozen(own_broker.pid):
            # a read waiting for records keeps a fetch in flight: on the frozen broker it times
            # out (request timeout 1 s), fails, and waits to be tried again
            reading = asyncio.ensure_future(consumer.getmany(timeout_ms=60_000))
            await eventually(lambda: "Failed fetch messages" in caplog.text, 30, "a fetch to fail")
            await asyncio.wait_for(stop_consumer(consumer), 30)
            done, _ = await asyncio.wait({reading}, timeout=30)  # the stop ends the read
            assert reading in done
            with contextlib.suppress(Exception):  # it ends as the consumer stops
                reading.result()
            assert _sockets_to(_port(servers)) == []
            assert _aiokafka_tasks() == []
    finally:
        await consumer.stop()  # a no-op once stopped
