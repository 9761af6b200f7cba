"""Operator commands: ``walstream worker|api|run|broker|ns ...``. Thin: parse, call, print."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from walstream.errors import BadRequestError, ConfigError, WalError
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
    settings = _settings()
    base = api_url or f"http://{settings.api_host}:{settings.api_port}"

    async def send() -> Any:
        async with WalClient(base, token=ctx.obj["token"]) as wal:
            return await wal.write(namespace, body, key=key, delay_ms=delay_ms)

    result = _run(send)
    click.echo(f"durable={result.durable} status={result.status} id={result.id} {result.message}")
    if not result.ok:
        sys.exit(1)


@cli.group()
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

    settings = _cluster_settings()
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
    click.echo(f"version {registry.version(name)} (ns apply --expect-version)", err=True)
    from walstream.core.auth import redact_target

    shown = redact_target(config.to_json())  # header values and URL userinfo: as the API shows
    click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())


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


def _time(value: str | None, option: str) -> int | None:
    from walstream.clock import SystemClock
    from walstream.core.times import parse_time_ms

    if value is None:
        return None
    try:
        return parse_time_ms(value, SystemClock().now_ms())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc


def _target_option(raw: str | None) -> dict[str, Any] | None:
    from walstream.core.targets import parse_target
    from walstream.errors import BadRequestError

    if raw is None:
        return None
    try:
        return dict(parse_target(orjson.loads(raw)).wire)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--target") from exc
    except BadRequestError as exc:
        raise click.BadParameter(str(exc), param_hint="--target") from exc


async def _namespace_config(settings: Settings, name: str) -> Any:
    registry = await _read_registry(settings)
    return registry.get(name)


def _selection(
    ids: tuple[str, ...], since: str | None, until: str | None, error_class: str | None
) -> Any:
    from walstream.core.dlq import Selection

    return Selection(
        ids=frozenset(ids),
        since_ms=_time(since, "--since"),
        until_ms=_time(until, "--until"),
        error_class=error_class,
    )


_dlq_filters = [
    click.option("--id", "ids", multiple=True, help="only these record ids (repeatable)"),
    click.option("--since", help="dead-lettered at or after (ISO 8601, ms, or -2h)"),
    click.option("--until", help="dead-lettered before"),
    click.option("--error-class", help="only this error class (e.g. http_503)"),
]


def _with_filters(func: Any) -> Any:
    """Add the selection options; the command gets them as one ``selection``."""

    @functools.wraps(func)
    def command(
        *args: Any,
        ids: tuple[str, ...],
        since: str | None,
        until: str | None,
        error_class: str | None,
        **kwargs: Any,
    ) -> Any:
        return func(*args, selection=_selection(ids, since, until, error_class), **kwargs)

    for option in reversed(_dlq_filters):
        command = option(command)
    return command


async def _selected(settings: Settings, namespace: str, selection: Any) -> tuple[Any, list[Any]]:
    """The namespace's config and the coordinates (DlqRef, no records) of its open DLQ entries
    that ``selection`` takes, oldest first; read the records with ``DlqReader.pages``."""
    from walstream.dlq import DlqReader

    ns = await _namespace_config(settings, namespace)
    index = await DlqReader(settings.bootstrap_list).index(ns.topics.dlq)
    return ns, index.select(selection)


@contextlib.asynccontextmanager
async def _producer(settings: Settings) -> AsyncIterator[Any]:
    from walstream.kafka import clients

    producer = clients.producer(settings.bootstrap_list, clients.CLI)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@cli.group()
def dlq() -> None:
    """Inspect and redrive a namespace's dead-letter queue."""


@dlq.command("list")
@click.argument("namespace")
@_with_filters
@click.option("--limit", type=click.IntRange(min=1), help="at most this many (then a cursor)")
@click.option("--after", help="resume after this cursor (printed when --limit cut the list)")
def dlq_list(namespace: str, selection: Any, limit: int | None, after: str | None) -> None:
    """List open DLQ entries (oldest first), read a page at a time."""
    from walstream.core.dlq import DlqCursor
    from walstream.dlq import DlqReader

    settings = _cluster_settings()
    try:
        cursor = DlqCursor.parse(after, "--after") if after else None
    except BadRequestError as exc:
        raise click.BadParameter(exc.reason, param_hint="--after") from exc

    async def run() -> tuple[int, str | None]:
        ns = await _namespace_config(settings, namespace)
        reader = DlqReader(settings.bootstrap_list)
        index = await reader.index(ns.topics.dlq)
        refs, _, following = index.page(selection, limit or max(1, len(index)), cursor)
        shown = 0
        # a batch of entries at a time; only the coordinates of the rest are held
        async for batch in reader.pages(ns.topics.dlq, refs, keep_values=False):
            for e in batch:
                click.echo(
                    f"{e.id}\t{e.dead_at_ms}\t{e.error_class}\tattempts={e.attempts}\t"
                    f"{e.source}\t{e.reason[:120]}"
                )
            shown += len(batch)
        return shown, str(following) if following else None

    shown, following = _run(run)
    click.echo(f"{shown} open entries", err=True)
    if following:
        click.echo(f"more: --after {following}", err=True)


@dlq.command("show")
@click.argument("namespace")
@click.argument("record_id")
def dlq_show(namespace: str, record_id: str) -> None:
    """Print one open DLQ entry with its record and attempt history, as JSON."""
    from walstream.core.dlq import Selection
    from walstream.dlq import DlqReader, entry_json

    settings = _cluster_settings()

    async def run() -> Any:
        ns = await _namespace_config(settings, namespace)
        page = await DlqReader(settings.bootstrap_list).page(
            ns.topics.dlq, Selection(ids=frozenset({record_id})), limit=1
        )
        return page.entries[0] if page.entries else None

    entry = _run(run)
    if entry is None:
        raise click.ClickException(f"no open DLQ entry {record_id} in {namespace}")
    click.echo(_indented(entry_json(entry, with_record=True)))


def _indented(shown: dict[str, Any]) -> bytes:
    """A DLQ entry as indented JSON. orjson writes 254 levels at most, and the record's payload
    sits two levels down: a payload nested deeper than that goes in compact."""
    try:
        return orjson.dumps(shown, option=orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError:
        record = shown["record"]
        record["payload"] = orjson.Fragment(_compact(record["payload"]))
        return orjson.dumps(shown, option=orjson.OPT_INDENT_2)


def _compact(value: Any) -> bytes:
    """``value`` as compact JSON, however deep (orjson decodes 1,024 levels, writes 254)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        import json

        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 10_000))  # this process only prints and exits
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        finally:
            sys.setrecursionlimit(limit)


@dlq.command("redrive")
@click.argument("namespace")
@_with_filters
@click.option("--rate", type=click.FloatRange(min=0.001), help="records per second at most")
@click.option("--target", "target_json", help="deliver to this target instead (JSON)")
def dlq_redrive(
    namespace: str, selection: Any, rate: float | None, target_json: str | None
) -> None:
    """Republish open DLQ entries to the log with attempts reset (history kept)."""
    from walstream.dlq import (
        DlqReader,
        RedriveProgress,
        claimed_dlq,
        flatten,
        redrive,
        source_reader,
    )

    settings = _cluster_settings()
    target = _target_option(target_json)

    async def run() -> RedriveProgress:
        ns = await _namespace_config(settings, namespace)
        async with claimed_dlq(settings.bootstrap_list, ns) as index:  # 1 per namespace
            return await redrive_selected(ns, index.select(selection))

    async def redrive_selected(ns: Any, refs: list[Any]) -> RedriveProgress:
        if target is not None:
            try:
                from walstream.topology import reserved_topics

                reserved = reserved_topics(settings.app_id, settings.control_topic)
                ns.target_policy.check(target, reserved=reserved)
            except BadRequestError as exc:
                raise click.BadParameter(str(exc), param_hint="--target") from exc
        progress = RedriveProgress(namespace=namespace, total=len(refs))
        entries = flatten(DlqReader(settings.bootstrap_list).pages(ns.topics.dlq, refs))
        async with (
            _producer(settings) as producer,
            source_reader(settings.bootstrap_list) as read_source,  # entries without a record
        ):
            with click.progressbar(length=len(refs), label=f"redrive {namespace}") as bar:
                await redrive(
                    producer,
                    ns,
                    entries,
                    progress,
                    rate=rate,
                    target=target,
                    on_step=lambda _: bar.update(1),
                    read_source=read_source,
                )
        return progress

    progress = _run(run)
    for skipped in progress.skipped:
        click.echo(f"skipped {skipped}", err=True)
    click.echo(f"redrove {progress.redriven} of {progress.total}")


@dlq.command("discard")
@click.argument("namespace")
@_with_filters
def dlq_discard(namespace: str, selection: Any) -> None:
    """Close open DLQ entries without redriving them."""
    from walstream.core.dlq import Selection
    from walstream.dlq import DlqReader, discard

    settings = _cluster_settings()
    if selection == Selection():
        raise click.UsageError("name what to discard: --id, --since, --until or --error-class")

    async def run() -> int:
        ns, refs = await _selected(settings, namespace, selection)
        done = 0
        async with _producer(settings) as producer:
            async for page in DlqReader(settings.bootstrap_list).pages(ns.topics.dlq, refs):
                done += await discard(producer, ns, page)
        return done

    click.echo(f"discarded {_run(run)}")


@cli.command()
@click.argument("namespace")
@click.option("--from", "from_", required=True, help="first write time (ISO 8601, ms, or -2h)")
@click.option("--to", "to", required=True, help="end of the window (exclusive)")
@click.option("--skip-id", "skip_ids", multiple=True, help="leave this record out (repeatable)")
@click.option(
    "--resume-from",
    "resume_raw",
    help="go on where a stopped replay left off (the partition:offset,... cursor it printed)",
)
def replay(
    namespace: str, from_: str, to: str, skip_ids: tuple[str, ...], resume_raw: str | None
) -> None:
    """Re-deliver the writes made in a window (and due by now) to their targets, in order per key.

    A write not yet due is left to the worker, which delivers it when due (see walstream.replay).
    """
    from walstream.clock import SystemClock
    from walstream.core.replay import parse_cursor
    from walstream.replay import ReplayResult
    from walstream.replay import replay as run_replay
    from walstream.targets.pool import TargetPool

    settings = _cluster_settings()
    from_ms, to_ms = _time(from_, "--from") or 0, _time(to, "--to") or 0
    if to_ms <= from_ms:
        raise click.BadParameter("must be after --from", param_hint="--to")
    try:
        resume_from = parse_cursor(resume_raw) if resume_raw is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--resume-from") from exc

    async def run() -> ReplayResult:
        registry = await _read_registry(settings)
        ns = registry.get(namespace)
        pool = TargetPool(settings, registry, SystemClock())
        try:
            with click.progressbar(length=0, label=f"replay {namespace}", show_pos=True) as bar:
                return await run_replay(
                    settings.bootstrap_list,
                    ns,
                    pool,
                    from_ms=from_ms,
                    to_ms=to_ms,
                    skip_ids=set(skip_ids),
                    on_record=lambda: bar.update(1),
                    resume_from=resume_from,
                )
        finally:
            await pool.close()

    result = _run(run)
    click.echo(
        f"delivered {result.delivered}, skipped {result.skipped}, "
        f"undecodable {result.undecodable}, failed {len(result.failed)}, "
        f"pending {result.pending} (due after the replay started: the worker delivers them then)"
    )
    for failure in result.failed:
        click.echo(f"failed {failure}", err=True)
    for record_id in result.pending_skipped:
        click.echo(f"not skipped {record_id}: not yet due, the worker still delivers it", err=True)
    if result.error is not None:
        again = f"--resume-from {result.cursor}" if result.cursor else "from the start"
        click.echo(f"replay stopped: {result.error}", err=True)
        click.echo(f"resume with the same --from/--to and {again}", err=True)
    if result.failed or result.error is not None:
        sys.exit(1)
