"""``walstream replay``: re-deliver a window's writes from the log to their targets, in this
process (a Kafka client: the cluster's ACLs decide what it may read)."""

from __future__ import annotations

import sys

import click

from walstream.cli.common import cluster_settings, read_registry, run_async, time_option

__all__ = ["replay"]


@click.command()
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

    settings = cluster_settings()
    from_ms, to_ms = time_option(from_, "--from") or 0, time_option(to, "--to") or 0
    if to_ms <= from_ms:
        raise click.BadParameter("must be after --from", param_hint="--to")
    try:
        resume_from = parse_cursor(resume_raw) if resume_raw is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--resume-from") from exc

    async def run() -> ReplayResult:
        registry = await read_registry(settings)
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

    result = run_async(run)
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
