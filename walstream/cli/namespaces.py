"""``walstream ns ...``: publish, read and delete namespace configurations on the control topic
(a Kafka client: the cluster's ACLs decide what it may do)."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from walstream.cli.common import cluster_settings, read_registry, run_async
from walstream.errors import ConfigError, WalError

__all__ = ["ns"]


@click.group()
def ns() -> None:
    """Manage namespaces (published on the control topic)."""


@ns.command("apply")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--expect-version",
    type=click.IntRange(min=0),
    help="apply only if the namespace is at this version (`ns show` prints it; 0: not defined)",
)
def ns_apply(paths: tuple[Path, ...], expect_version: int | None) -> None:
    """Validate namespace files (or directories of them) and broadcast them."""
    from walstream.namespaces.broadcast import NamespacePublisher
    from walstream.namespaces.files import load_namespace_files

    settings = cluster_settings()
    try:
        configs = load_namespace_files(list(paths))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if expect_version is not None and len(configs) != 1:
        raise click.UsageError("--expect-version takes exactly one namespace file")

    async def apply() -> None:
        publisher = NamespacePublisher(settings)
        await publisher.start()
        try:
            for config in configs:
                version = await publisher.apply(config, expect_version=expect_version)
                click.echo(f"applied {config.name} (version {version})")
        finally:
            await publisher.stop()

    run_async(apply)


@ns.command("list")
def ns_list() -> None:
    """List namespaces."""
    registry = run_async(lambda: read_registry(cluster_settings()))
    for config in registry:
        target = config.target.type if config.target else "-"
        click.echo(f"{config.name}\tlog={config.topics.log}\ttarget={target}")


@ns.command("show")
@click.argument("name")
def ns_show(name: str) -> None:
    """Print one namespace's configuration as JSON."""
    registry = run_async(lambda: read_registry(cluster_settings()))
    try:
        config = registry.get(name)
    except WalError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"version {registry.version(name)} (ns apply --expect-version)", err=True)
    from walstream.core.auth import redact_target

    shown = redact_target(config.to_json())  # header values and URL userinfo: as the API shows
    click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())


@ns.command("delete")
@click.argument("name")
def ns_delete(name: str) -> None:
    """Delete a namespace: writes to it are refused. Its topics and records are kept."""
    from walstream.namespaces.broadcast import NamespacePublisher

    settings = cluster_settings()

    async def delete() -> None:
        publisher = NamespacePublisher(settings)
        await publisher.start()
        try:
            await publisher.delete(name)
        finally:
            await publisher.stop()

    run_async(delete)
    click.echo(f"deleted {name}")
