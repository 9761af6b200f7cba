"""What the operator commands share: settings read once (a bad one is a usage error), a coroutine
run to its end (a WalError is the command's error), the namespace registry read off the control
topic, and the times operators type."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from walstream.errors import ConfigError, WalError
from walstream.settings import Settings

__all__ = [
    "cluster_settings",
    "env_settings",
    "namespace_config",
    "read_registry",
    "run_async",
    "time_option",
]

T = TypeVar("T")


def env_settings() -> Settings:
    """The settings from the environment; a bad one is a usage error."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def cluster_settings() -> Settings:
    """The settings of a command that needs the Kafka cluster (WALSTREAM_BOOTSTRAP_SERVERS)."""
    settings = env_settings()
    if not settings.bootstrap_servers:
        raise click.UsageError(
            "WALSTREAM_BOOTSTRAP_SERVERS is not set: name the Kafka cluster (host:port,...)"
        )
    return settings


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run ``factory()`` to its end; a WalError it raises is the command's error."""
    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except WalError as exc:
        raise click.ClickException(str(exc)) from exc


async def read_registry(settings: Settings) -> Any:
    """The namespace registry, read off the control topic (at most 15 s)."""
    from walstream.namespaces.broadcast import NamespaceFeed

    feed = NamespaceFeed(settings)
    await feed.start()
    try:
        if not await feed.wait_ready(15.0):
            raise WalError("the control topic could not be read within 15 s")
        return feed.registry
    finally:
        await feed.stop()


async def namespace_config(settings: Settings, name: str) -> Any:
    """One namespace's configuration, read off the control topic."""
    registry = await read_registry(settings)
    return registry.get(name)


def time_option(value: str | None, option: str) -> int | None:
    """An option's time (ms, ISO 8601 or -2h) in ms since the epoch; a bad one names ``option``."""
    from walstream.clock import SystemClock
    from walstream.core.times import parse_time_ms

    if value is None:
        return None
    try:
        return parse_time_ms(value, SystemClock().now_ms())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc
