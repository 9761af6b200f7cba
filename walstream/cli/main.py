"""The ``walstream`` command group and the commands that start a process (worker, api, run,
broker) or talk to the HTTP API (write, token); the Kafka-client groups (ns, dlq, replay) live in
their own modules and are added here."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from walstream.cli.common import cluster_settings, env_settings, run_async
from walstream.cli.dlq import dlq
from walstream.cli.namespaces import ns
from walstream.cli.replay import replay
from walstream.cli.replication import replication
from walstream.errors import BadRequestError, ConfigError

__all__ = ["cli"]


@click.group()
@click.option("-l", "--loglevel", default="warning", show_default=True)
@click.option(
    "--token",
    envvar="WALSTREAM_TOKEN",
    default=None,
    help="bearer token for commands that call the HTTP API (prefer WALSTREAM_TOKEN: an "
    "argument shows in ps). Commands that read or publish Kafka topics directly (ns, dlq, "
    "replay) are Kafka clients: the cluster's ACLs decide what they may do.",
)
@click.pass_context
def cli(ctx: click.Context, loglevel: str, token: str | None) -> None:
    """walstream: a write-ahead log service on Kafka."""
    logging.basicConfig(
        level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    ctx.obj = {"token": token}


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Faust worker (all `faust worker` options apply).

    `--region R`: run only region R's replication writers (that region's deployment), no
    delivery agents.
    """
    settings = cluster_settings()
    region = region_option(ctx.args)
    if region is not None:
        from walstream.replication.stages import run_region

        run_async(lambda: run_region(settings, region))
        return
    from walstream.app import app

    sys.argv = ["walstream", "worker", *ctx.args]
    app.main()


def region_option(args: list[str]) -> str | None:
    """The value of ``--region R`` (or ``--region=R``) among a worker's arguments, or None."""
    for n, arg in enumerate(args):
        if arg.startswith("--region="):
            return arg.partition("=")[2]
        if arg == "--region":
            if n + 1 == len(args):
                raise click.UsageError("--region needs a region name")
            return args[n + 1]
    return None


@cli.command()
def api() -> None:
    """Serve the WriteToLog HTTP API."""
    from walstream.api.app import serve_api

    settings = cluster_settings()
    run_async(lambda: serve_api(settings))


@cli.command()
@click.option("--namespaces", "namespace_dir", default="topology/namespaces", show_default=True)
def run(namespace_dir: str) -> None:
    """Broker (embedded unless WALSTREAM_BOOTSTRAP_SERVERS is set), worker, API, demo namespaces."""
    from walstream.dev import run_stack

    sys.exit(run_stack(env_settings(), Path(namespace_dir)))


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
def token() -> None:
    """API bearer tokens (walstream.core.auth)."""


@token.command("new")
@click.option(
    "--role",
    type=click.Choice(["writer", "namespace-admin", "admin"]),
    default="writer",
    show_default=True,
)
@click.option("--namespace", "namespaces", multiple=True, help="a namespace (repeatable)")
@click.option("--name", help="a label for logs (never the token)")
def token_new(role: str, namespaces: tuple[str, ...], name: str | None) -> None:
    """Make a random token; print it once, and the hash entry the API is configured with."""
    from walstream.core.auth import hash_token, new_token, parse_tokens_setting

    if role != "admin" and not namespaces:
        raise click.UsageError(f"a {role} token needs --namespace")
    secret = new_token()
    entry = f"{hash_token(secret)}:{role}:{','.join(namespaces)}" + (f":{name}" if name else "")
    try:
        parse_tokens_setting(entry, "--name/--namespace")
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"token (give it to the client; it is not stored): {secret}")
    click.echo(f"WALSTREAM_TOKENS entry: {entry}")


@cli.command()
@click.argument("namespace")
@click.argument("payload")
@click.option("--key", help="the record's key")
@click.option("--delay-ms", type=click.IntRange(min=0), help="deliver this much later")
@click.option("--api", "api_url", help="API base URL (default: WALSTREAM_API_HOST:PORT)")
@click.pass_context
def write(
    ctx: click.Context,
    namespace: str,
    payload: str,
    key: str | None,
    delay_ms: int | None,
    api_url: str | None,
) -> None:
    """WriteToLog one record (PAYLOAD is JSON) through the HTTP API, with --token."""
    from walstream.client import WalClient
    from walstream.core.validate import parse_payload_text

    try:  # the API's rules: a payload is kept exactly or refused (walstream.core.exact)
        body = parse_payload_text(payload.encode())
    except BadRequestError as exc:
        raise click.BadParameter(exc.reason, param_hint="PAYLOAD") from exc
    settings = env_settings()
    base = api_url or f"http://{settings.api_host}:{settings.api_port}"

    async def send() -> Any:
        async with WalClient(base, token=ctx.obj["token"]) as wal:
            return await wal.write(namespace, body, key=key, delay_ms=delay_ms)

    result = run_async(send)
    click.echo(f"durable={result.durable} status={result.status} id={result.id} {result.message}")
    if not result.ok:
        sys.exit(1)


cli.add_command(ns)
cli.add_command(dlq)
cli.add_command(replay)
cli.add_command(replication)
