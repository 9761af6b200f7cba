"""The two mutation agents (issue 18) on a Faust app: ``mutation_ops`` and ``mutation_commit``.

Persistent names: the agents ``mutation_ops`` and ``mutation_commit`` and the table
``mutations`` (changelog ``<app-id>-mutations-changelog``). Each agent reads raw bytes, runs up
to WALSTREAM_DELIVER_CONCURRENCY records at once (one at a time per transaction, in offset order)
and acks a record only once its handler returned (``MutationStage``: its rows written): acks are
manual, and walstream's transport commits only below the lowest record not acked, so a crash, a
stop or a rebalance reads again whatever was not finished. A marker handed over by the delay
stage before its due time (``wal-due``) is held until then.
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

__all__ = ["Handler", "mutation_agent"]

Handler = Callable[[bytes | None, bytes | None, Source], Awaitable[None]]


def mutation_agent(
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
                event.value, event.key, Source(message.topic, message.partition, message.offset)
            )
            await manual.ack(event)

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
                    (message.topic, message.partition, event.key),
                    functools.partial(handle, event),
                    partition=TP(message.topic, message.partition),
                    tag=message,
                    not_before_ms=hold,
                )
                if not accepted:  # its partition was revoked: its owner reads it again
                    consumer.abandon(message)
        finally:
            if add_listener is not None:
                consumer.remove_revoke_listener(on_revoke)
                consumer.remove_assign_listener(on_assign)
            await dispatcher.cancel()

    return consume
