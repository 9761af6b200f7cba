"""The worker's agent loop, shared by its record agents (``deliver``, ``retry_failed``,
``mutation_ops``, ``mutation_commit``): one actor per agent, records handed to a handler with
concurrency, each key's records one at a time in offset order.

Acks are manual: a record is acked once its handler returned, and walstream's transport commits
only below the lowest record not acked (walstream.kafka.transport), so a crash, a stop or a
rebalance reads again whatever was not finished. A record handed over by the delay stage (or a
quick retry) just before its due time (``wal-due``, within ``max_hold_ms``) is held here until
then, without a handler slot; further out, the handler sends it back to wait in the delay tiers.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.types import TP

from walstream.agents.dispatch import KeyedDispatcher
from walstream.agents.outcomes import Source
from walstream.clock import Clock
from walstream.core.delay import parse_due_header
from walstream.settings import Settings

__all__ = ["Handler", "keyed_agent"]

#: A record's handler: (value, key, where it was read, headers); it never raises (what it
#: returns is not read).
Handler = Callable[[bytes | None, bytes | None, Source, Any], Awaitable[Any]]


def keyed_agent(
    app: faust.App,
    handler: Handler,
    *,
    settings: Settings,
    clock: Clock,
    bind_event: Callable[[Any], None],
    max_hold_ms: int,
) -> Callable[[Any], Awaitable[None]]:
    """The agent function running ``handler`` for each record of its stream."""

    async def consume(stream: Any) -> None:
        manual = stream.noack()
        consumer: Any = app.consumer  # walstream.kafka.transport.Consumer under walkafka://
        dispatcher = KeyedDispatcher(
            settings.deliver_concurrency,
            max_pending=settings.deliver_max_pending,
            max_key_pending=settings.deliver_max_key_pending,
            now_ms=clock.now_ms,
            on_pause=lambda tp: consumer.pause_partitions({tp}),
            on_resume=lambda tp: consumer.resume_partitions({tp}),
        )

        async def on_revoke(revoked: set[Any]) -> list[Any]:
            return await dispatcher.revoke(revoked, grace_s=settings.deliver_revoke_wait_s)

        def on_assign(assigned: set[Any]) -> None:
            dispatcher.assign(assigned)

        async def handle(event: Any) -> None:
            bind_event(event)
            message = event.message
            await handler(
                event.value,
                event.key,
                Source(message.topic, message.partition, message.offset),
                message.headers,
            )
            await manual.ack(event)

        # walstream's transport (walkafka://) lets the dispatcher give up a revoked partition's
        # records before Faust waits for them; other transports (tests' memory://) have no hook.
        add_listener = getattr(consumer, "add_revoke_listener", None)
        if add_listener is not None:
            add_listener(on_revoke)
            consumer.add_assign_listener(on_assign)
        try:
            async for event in manual.events():
                message = event.message
                due = parse_due_header(message.headers)
                hold = due if due is not None and due - clock.now_ms() <= max_hold_ms else None
                accepted = await dispatcher.submit(
                    (message.topic, message.partition, event.key)
                    if event.key is not None
                    else None,
                    functools.partial(handle, event),
                    # Faust's TP: resume_partitions keeps what it is given, and its fetcher
                    # asserts TP instances (a message's tp is aiokafka's TopicPartition)
                    partition=TP(message.topic, message.partition),
                    tag=message,
                    not_before_ms=hold,
                )
                if not accepted:
                    # Its partition was revoked (read before the rebalance): not acked, so the
                    # commit stays before it and the partition's owner reads it again.
                    consumer.abandon(message)
        finally:
            if add_listener is not None:
                consumer.remove_revoke_listener(on_revoke)
                consumer.remove_assign_listener(on_assign)
            await dispatcher.cancel()

    return consume
