"""Starting and stopping aiokafka clients: a start or stop leaves no connection open behind it.

aiokafka's ``start()`` and ``stop()`` leak sockets on some paths (a cancel in the middle of a
start, a stop held by a peer that never answers); the helpers here close what those paths
leave. A socket left open is found by the garbage collector later, in whatever code runs then:
with warnings as errors (the tests), an unrelated test fails on an ``unclosed <socket.socket>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

__all__ = ["PRODUCER_STOP_S", "start_client", "stop_consumer", "stop_producer"]

logger = logging.getLogger(__name__)

#: How long a replication stage's stop waits for its producers' unacked copies (a live
#: cluster acks in ms; a region's cluster that hangs would hold the stop until its timeout).
PRODUCER_STOP_S: Final = 2.0

#: How long a stop waits for the producer's tasks once its connections are aborted: they end
#: at once (nothing is left to wait for); more is a stop that will never end by itself.
_ABORTED_STOP_S: Final = 1.0

#: Producer stops that did not end even when cancelled, kept until they end (never seen:
#: the last resort of a stop that must return).
_ABANDONED: set[asyncio.Future[Any]] = set()


async def start_client(client: Any) -> None:
    """Start an aiokafka consumer or producer, letting a cancel wait until the start is over.

    A cancel in the middle of ``start()`` (an operator cancelling a redrive, say) leaves the
    bootstrap connection aiokafka was opening unclosed: nothing can close it afterwards, not
    even ``stop()``. So the start runs to its end (it is bounded by the client's request
    timeout), and only then is the cancel raised; the caller's ``finally`` stops the client.
    """
    starting = asyncio.ensure_future(client.start())
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await starting
        raise


async def stop_producer(producer: Any, *, timeout_s: float) -> None:
    """Stop an AIOKafkaProducer within about ``timeout_s``: what it still holds unacked is given
    up, and when it returns the producer holds no connection and runs no task.

    ``stop()`` waits for every batch in flight, with no deadline of its own but the request
    timeout, so a stage whose region's cluster hangs would hold its stop (and a worker's
    reconfiguration or shutdown) for as long. The records it gives up were never acked, so the
    stage never committed past them: they are read and sent again.

    Past the deadline the producer is taken down (:func:`_take_down`). A cancel of the caller
    takes it down at once and is raised.

    Raises:
        Exception: what ``stop()`` raised, when it ended by itself within the deadline.
    """
    stopping = asyncio.ensure_future(producer.stop())
    try:
        done, _ = await asyncio.wait({stopping}, timeout=timeout_s)
    except asyncio.CancelledError:
        await _take_down(producer, stopping)
        raise
    if done:
        await stopping
        return
    await _take_down(producer, stopping)
    logger.warning("a producer's stop was cut short after %.1f s", timeout_s)


async def _take_down(producer: Any, stopping: asyncio.Future[Any]) -> None:
    """End ``stopping`` (the producer's ``stop()``) by force, closing every connection of the
    producer's client, and return once it is over.

    aiokafka has no abort. A graceful close waits for unsent bytes to reach a peer that may
    never read, and ``stop()`` waits for the sender, which waits for its requests in flight.
    A dropped connection is opened again at once (the client refreshes its metadata, the
    sender retries its request), to the hung peer, and waits for it too: a stop given up kept
    running with those sockets, and one cancelled as its loop closed never closed them. So: no
    connection is opened any more, the producer's tasks are cancelled (the sender, its
    requests, the client's metadata task), and every connection is aborted, those opened since
    the stop began included.
    """
    client = getattr(producer, "client", None)
    _refuse_connections(client)
    parts = ("_sender", "_message_accumulator")
    owners = [part for name in parts if (part := getattr(producer, name, None)) is not None]
    if client is not None:
        owners.append(client)
    for task in asyncio.all_tasks():
        if task is not stopping and _runs_for(task, owners):
            task.cancel()
    _abort_connections(client)
    if not stopping.done():
        # the sender's cancel ends its requests: stop() then closes the (aborted) connections
        await asyncio.wait({stopping}, timeout=_ABORTED_STOP_S)
    if not stopping.done():
        stopping.cancel()
        await asyncio.wait({stopping}, timeout=_ABORTED_STOP_S)
    if stopping.done():
        _retrieve(stopping)
    else:  # never seen: kept, and ended when it ends
        _ABANDONED.add(stopping)
        stopping.add_done_callback(_forget_abandoned)
        logger.warning("a producer's stop did not end when cancelled")
    # stop() cut short never closes its client: what it still holds is closed here
    _abort_connections(client)
    await _closed(client)
    # a connection its cancelled task was opening is closed by a callback: let it run
    await asyncio.sleep(0)


def _refuse_connections(client: Any) -> None:
    """Make ``client`` open no connection any more (its requests then fail as a broker that is
    not ready: a request in flight retried, a metadata refresh)."""
    if client is None:
        return

    async def refused(*_args: Any, **_kwargs: Any) -> None:
        return None  # aiokafka's "could not connect"

    client._get_conn = refused


def _runs_for(task: asyncio.Task[Any], owners: list[Any]) -> bool:
    """Whether ``task`` runs a method of one of ``owners``: the producer's sender and its
    requests, the client's metadata task (each may hold a connection it is opening), the wait
    of ``stop()`` for the batches (which never ends once the sender is cancelled)."""
    frame = getattr(task.get_coro(), "cr_frame", None)
    if frame is None:
        return False
    return any(frame.f_locals.get("self") is owner for owner in owners)


def _abort_connections(client: Any) -> None:
    """Drop every connection of ``client`` at once, its unsent bytes discarded."""
    for conn in list(getattr(client, "_conns", {}).values()):
        writer = getattr(conn, "_writer", None)
        if writer is not None:
            writer.transport.abort()
        with contextlib.suppress(Exception):  # the connection's own bookkeeping
            conn.close()


async def _closed(client: Any) -> None:
    """Wait until the aborted connections of ``client`` are closed (their sockets with them),
    then forget them."""
    conns = getattr(client, "_conns", None)
    if not conns:
        return
    futures = [fut for conn in conns.values() if (fut := getattr(conn, "_closed_fut", None))]
    conns.clear()
    if futures:
        await asyncio.wait(futures, timeout=_ABORTED_STOP_S)


def _retrieve(stopping: asyncio.Future[Any]) -> None:
    if not stopping.cancelled():
        stopping.exception()  # retrieved: a stop cut short fails, which is no news


def _forget_abandoned(stopping: asyncio.Future[Any]) -> None:
    _ABANDONED.discard(stopping)
    _retrieve(stopping)


async def stop_consumer(consumer: Any) -> None:
    """Stop an AIOKafkaConsumer, tolerating aiokafka 0.14's shutdown leak, and close its client
    whatever ended the stop.

    ``Fetcher.close()`` cancels its in-flight fetch tasks and awaits them without catching the
    CancelledError, so ``consumer.stop()`` raises it when a fetch was in retry backoff (a broker
    that just went away). That error is not a cancellation of the caller: swallow it unless the
    caller itself is being cancelled. Either way ``stop()`` ended before closing its client:
    its connections and its metadata task would live on (a socket found unclosed later), so
    they are ended here.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        cancelled = task is not None and task.cancelling() > 0
        fetcher = getattr(consumer, "_fetcher", None)
        for fetch in list(getattr(fetcher, "_pending_tasks", ())):  # those left uncancelled
            fetch.cancel()
        await _ended(getattr(consumer, "_client", None))
        if cancelled:
            raise


async def _ended(client: Any) -> None:
    """End ``client``'s metadata task and drop its connections; return once they are closed."""
    sync = getattr(client, "_sync_task", None)
    if sync is not None:
        sync.cancel()
        client._sync_task = None
    _refuse_connections(client)
    _abort_connections(client)
    conns = getattr(client, "_conns", None)
    if conns:
        conns.clear()
    if sync is not None:
        # a cancelled metadata task closes a connection it was opening as it ends
        await asyncio.wait({sync}, timeout=_ABORTED_STOP_S)
    await asyncio.sleep(0)  # an aborted transport closes its socket in a callback
