"""``walstream dlq ...``: list, show, redrive and discard a namespace's open DLQ entries, selected
by the same filters (a Kafka client: the cluster's ACLs decide what it may do). With ``--region
r``, those of a replicated namespace's region DLQ (``wal.<ns>.region.<r>.dlq``, on the region's
cluster): a redriven operation goes back to the region's topic, for its writer to apply again.

The entries are read a page at a time (walstream.dlq), so a large DLQ is never held whole.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import AsyncIterator
from typing import Any

import click
import orjson

from walstream.cli.common import cluster_settings, namespace_config, run_async, time_option
from walstream.errors import BadRequestError
from walstream.settings import Settings

__all__ = ["dlq"]


def _target_option(raw: str | None) -> dict[str, Any] | None:
    from walstream.core.targets import parse_target

    if raw is None:
        return None
    try:
        return dict(parse_target(orjson.loads(raw)).wire)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--target") from exc
    except BadRequestError as exc:
        raise click.BadParameter(str(exc), param_hint="--target") from exc


def _selection(
    ids: tuple[str, ...], since: str | None, until: str | None, error_class: str | None
) -> Any:
    from walstream.core.dlq import Selection

    return Selection(
        ids=frozenset(ids),
        since_ms=time_option(since, "--since"),
        until_ms=time_option(until, "--until"),
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


_region_option = click.option(
    "--region",
    help="a replicated namespace's region: its region DLQ (wal.<ns>.region.<r>.dlq)",
)


async def _queue(settings: Settings, namespace: str, region: str | None) -> tuple[Any, Any]:
    """The namespace as the DLQ tools see it, and the servers of its DLQ: the namespace's own
    DLQ, or with ``region`` that region's DLQ (the namespace's view whose DLQ and log are the
    region's, on the region's cluster)."""
    from walstream.dlq import region_dlq

    ns = await namespace_config(settings, namespace)
    if region is None:
        return ns, settings.bootstrap_list
    place = region_dlq(ns, region, settings.bootstrap_list)
    return place.view, place.servers


async def _selected(
    settings: Settings, namespace: str, region: str | None, selection: Any
) -> tuple[Any, Any, list[Any]]:
    """The namespace's config (its region's view), the DLQ's servers and the coordinates
    (DlqRef, no records) of its open DLQ entries that ``selection`` takes, oldest first; read
    the records with ``DlqReader.pages``."""
    from walstream.dlq import DlqReader

    ns, servers = await _queue(settings, namespace, region)
    index = await DlqReader(servers).index(ns.topics.dlq)
    return ns, servers, index.select(selection)


@contextlib.asynccontextmanager
async def _producer(servers: Any) -> AsyncIterator[Any]:
    from walstream.kafka import clients

    producer = clients.producer(servers, clients.CLI)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@click.group()
def dlq() -> None:
    """Inspect and redrive a namespace's dead-letter queue."""


@dlq.command("list")
@click.argument("namespace")
@_region_option
@_with_filters
@click.option("--limit", type=click.IntRange(min=1), help="at most this many (then a cursor)")
@click.option("--after", help="resume after this cursor (printed when --limit cut the list)")
def dlq_list(
    namespace: str, region: str | None, selection: Any, limit: int | None, after: str | None
) -> None:
    """List open DLQ entries (oldest first), read a page at a time."""
    from walstream.core.dlq import DlqCursor
    from walstream.dlq import DlqReader

    settings = cluster_settings()
    try:
        cursor = DlqCursor.parse(after, "--after") if after else None
    except BadRequestError as exc:
        raise click.BadParameter(exc.reason, param_hint="--after") from exc

    async def run() -> tuple[int, str | None]:
        ns, servers = await _queue(settings, namespace, region)
        reader = DlqReader(servers)
        index = await reader.index(ns.topics.dlq)
        refs, _, following = index.page(selection, limit or max(1, len(index)), cursor)
        shown = 0
        # a batch of entries at a time; only the coordinates of the rest are held
        async for batch in reader.pages(ns.topics.dlq, refs, keep_values=False):
            for e in batch:
                click.echo(
                    f"{e.id}\t{e.dead_at_ms}\t{e.error_class}\tattempts={e.attempts}\t"
                    f"{e.source}\t{e.reason[:120]}{_mutation_columns(e)}"
                )
            shown += len(batch)
        return shown, str(following) if following else None

    shown, following = run_async(run)
    click.echo(f"{shown} open entries", err=True)
    if following:
        click.echo(f"more: --after {following}", err=True)


def _mutation_columns(entry: Any) -> str:
    """A mutation entry's listing columns (issue 18): its kind, and a transaction's txn id and
    missing seqs; nothing for a log record's entry."""
    from walstream.core.dlq import describe_mutation

    shown = describe_mutation(entry)
    if shown is None:
        return ""
    if shown["kind"] != "transaction":
        return f"\tkind={shown['kind']}"
    missing = ",".join(str(seq) for seq in shown["missing"])
    return f"\tkind=transaction\ttxn={shown['txn_id']}\tmissing=[{missing}]"


@dlq.command("show")
@click.argument("namespace")
@click.argument("record_id")
@_region_option
def dlq_show(namespace: str, record_id: str, region: str | None) -> None:
    """Print one open DLQ entry with its record and attempt history, as JSON."""
    from walstream.core.dlq import Selection
    from walstream.dlq import DlqReader, entry_json

    settings = cluster_settings()

    async def run() -> Any:
        ns, servers = await _queue(settings, namespace, region)
        page = await DlqReader(servers).page(
            ns.topics.dlq, Selection(ids=frozenset({record_id})), limit=1
        )
        return page.entries[0] if page.entries else None

    entry = run_async(run)
    if entry is None:
        where = f"{namespace}, region {region}" if region else namespace
        raise click.ClickException(f"no open DLQ entry {record_id} in {where}")
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
@_region_option
@_with_filters
@click.option("--rate", type=click.FloatRange(min=0.001), help="records per second at most")
@click.option("--target", "target_json", help="deliver to this target instead (JSON)")
def dlq_redrive(
    namespace: str,
    region: str | None,
    selection: Any,
    rate: float | None,
    target_json: str | None,
) -> None:
    """Republish open DLQ entries to the log with attempts reset (history kept); with
    --region, a region DLQ's operations to the region's topic (its writer applies them). A
    dead-lettered transaction's marker goes again to the namespace's markers topic (its
    commit resumes from the first unapplied seq)."""
    from walstream.dlq import (
        DlqReader,
        RedriveProgress,
        claimed_dlq,
        flatten,
        redrive,
        source_reader,
    )

    settings = cluster_settings()
    if region is not None and target_json is not None:
        raise click.UsageError("--target does not apply to a region DLQ (its writer applies)")
    target = _target_option(target_json)

    async def run() -> RedriveProgress:
        ns, servers = await _queue(settings, namespace, region)
        async with claimed_dlq(servers, ns) as index:  # 1 per DLQ
            return await redrive_selected(ns, servers, index.select(selection))

    async def redrive_selected(ns: Any, servers: Any, refs: list[Any]) -> RedriveProgress:
        if target is not None:
            try:
                from walstream.topology import reserved_topics

                reserved = reserved_topics(settings.app_id, settings.control_topic)
                ns.target_policy.check(target, reserved=reserved)
            except BadRequestError as exc:
                raise click.BadParameter(str(exc), param_hint="--target") from exc
        progress = RedriveProgress(namespace=namespace, total=len(refs))
        entries = flatten(DlqReader(servers).pages(ns.topics.dlq, refs))
        async with (
            _producer(servers) as producer,
            source_reader(servers) as read_source,  # entries without a record
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

    progress = run_async(run)
    for skipped in progress.skipped:
        click.echo(f"skipped {skipped}", err=True)
    click.echo(f"redrove {progress.redriven} of {progress.total}")


@dlq.command("discard")
@click.argument("namespace")
@_region_option
@_with_filters
def dlq_discard(namespace: str, region: str | None, selection: Any) -> None:
    """Close open DLQ entries without redriving them."""
    from walstream.core.dlq import Selection
    from walstream.dlq import DlqReader, discard

    settings = cluster_settings()
    if selection == Selection():
        raise click.UsageError("name what to discard: --id, --since, --until or --error-class")

    async def run() -> int:
        ns, servers, refs = await _selected(settings, namespace, region, selection)
        done = 0
        async with _producer(servers) as producer:
            async for page in DlqReader(servers).pages(ns.topics.dlq, refs):
                # nothing holds a key behind a region DLQ entry: no settle marker
                done += await discard(producer, ns, page, settle=region is None)
        return done

    click.echo(f"discarded {run_async(run)}")
