"""A replication stage's producer stop (walstream.kafka.stopping.stop_producer) against a real
broker frozen with SIGSTOP (its kernel still accepts connections; nothing answers): when the stop
returns, however it ended, the producer holds no socket and runs no task.

A socket left open behind a stop was found by the garbage collector in a later test, which
failed on an ``unclosed <socket.socket>`` ResourceWarning (warnings are errors): the stop cut
short aborted the connections it saw when it began, while the request it dropped was retried on
a new connection to the frozen broker, and the stop, given up, kept running with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaProducer

from walstream.kafka import clients
from walstream.kafka.stopping import stop_producer

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


def _producer_tasks() -> list[asyncio.Task[object]]:
    """Tasks still running aiokafka code (a producer's stop, sender, requests, metadata)."""
    running = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if not task.done() and code is not None and "aiokafka" in code.co_filename:
            running.append(task)
    return running


@contextlib.contextmanager
def _frozen(pid: int | None) -> Iterator[None]:
    """The broker stopped (SIGSTOP) for the block: connections are accepted, never answered."""
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
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
        assert _producer_tasks() == []


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
        assert _producer_tasks() == []


async def test_a_stop_within_its_deadline_delivers_what_the_producer_holds(
    own_broker, producer, unique
) -> None:
    unacked = [await producer.send(f"stop.{unique}", b"%d" % i) for i in range(20)]
    await stop_producer(producer, timeout_s=30)  # a live broker acks them all at once
    acked = {((meta := await ack).partition, meta.offset) for ack in unacked}
    assert len(acked) == 20
    assert _sockets_to(_port(own_broker.bootstrap_servers)) == []
