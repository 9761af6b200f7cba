"""Operator commands: ``walstream worker|api|run|broker|ns ...``. Thin: parse, call, print."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from walstream.errors import ConfigError, WalError
from walstream.settings import Settings

__all__ = ["cli"]

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _cluster_settings() -> Settings:
    settings = _settings()
    if not settings.bootstrap_servers:
        raise click.UsageError(
            "WALSTREAM_BOOTSTRAP_SERVERS is not set: name the Kafka cluster (host:port,...)"
        )
    return settings


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except WalError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.option("-l", "--loglevel", default="warning", show_default=True)
def cli(loglevel: str) -> None:
    """walstream: a write-ahead log service on Kafka."""
    logging.basicConfig(
        level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Faust worker (all `faust worker` options apply)."""
    _cluster_settings()
    from walstream.app import app

    sys.argv = ["walstream", "worker", *ctx.args]
    app.main()


@cli.command()
def api() -> None:
    """Serve the WriteToLog HTTP API."""
    from walstream.api.app import serve_api

    settings = _cluster_settings()
    _run(lambda: serve_api(settings))


@cli.command()
@click.option("--namespaces", "namespace_dir", default="topology/namespaces", show_default=True)
def run(namespace_dir: str) -> None:
    """Broker (embedded unless WALSTREAM_BOOTSTRAP_SERVERS is set), worker, API, demo namespaces."""
    from walstream.dev import run_stack

    sys.exit(run_stack(_settings(), Path(namespace_dir)))


@cli.command()
@click.option("--port", type=int, default=None, help="default: a free port")
def broker(port: int | None) -> None:
    """Run the embedded broker in the foreground until Ctrl-C."""
    import signal

    from walstream.broker import EmbeddedBroker

    with EmbeddedBroker(port=port) as embedded:
        click.echo(f"WALSTREAM_BOOTSTRAP_SERVERS={embedded.bootstrap_servers}")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


@cli.group()
def ns() -> None:
    """Manage namespaces (published on the control topic)."""


@ns.command("apply")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def ns_apply(paths: tuple[Path, ...]) -> None:
    """Validate namespace files (or directories of them) and broadcast them."""
    from walstream.namespaces.broadcast import NamespacePublisher
    from walstream.namespaces.files import load_namespace_files

    settings = _cluster_settings()
    try:
        configs = load_namespace_files(list(paths))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc

    async def apply() -> None:
        publisher = NamespacePublisher(settings)
        await publisher.start()
        try:
            for config in configs:
                await publisher.apply(config)
                click.echo(f"applied {config.name}")
        finally:
            await publisher.stop()

    _run(apply)


async def _read_registry(settings: Settings) -> Any:
    from walstream.namespaces.broadcast import NamespaceFeed

    feed = NamespaceFeed(settings)
    await feed.start()
    try:
        if not await feed.wait_ready(15.0):
            raise WalError("the control topic could not be read within 15 s")
        return feed.registry
    finally:
        await feed.stop()


@ns.command("list")
def ns_list() -> None:
    """List namespaces."""
    registry = _run(lambda: _read_registry(_cluster_settings()))
    for config in registry:
        target = config.target.type if config.target else "-"
        click.echo(f"{config.name}\tlog={config.topics.log}\ttarget={target}")


@ns.command("show")
@click.argument("name")
def ns_show(name: str) -> None:
    """Print one namespace's configuration as JSON."""
    registry = _run(lambda: _read_registry(_cluster_settings()))
    try:
        config = registry.get(name)
    except WalError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(orjson.dumps(config.to_json(), option=orjson.OPT_INDENT_2).decode())


@ns.command("delete")
@click.argument("name")
def ns_delete(name: str) -> None:
    """Delete a namespace: writes to it are refused. Its topics and records are kept."""
    from walstream.namespaces.broadcast import NamespacePublisher

    settings = _cluster_settings()

    async def delete() -> None:
        publisher = NamespacePublisher(settings)
        await publisher.start()
        try:
            await publisher.delete(name)
        finally:
            await publisher.stop()

    _run(delete)
    click.echo(f"deleted {name}")
