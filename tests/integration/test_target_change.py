"""Which target a record goes to when its namespace's target changes (issue 14 item 11).

The rule (README, "Namespaces"): a record keeps the target it was written with. Its retries,
delay hops and redrives go there; a namespace's new target applies to records written after the
change; ``dlq redrive --target`` sends dead records elsewhere explicitly. (The namespace's current
policy is still checked before each attempt: a record whose target the namespace no longer
allows is dead-lettered; here the origin stays allowed, only the path changes.)
"""

from __future__ import annotations

import pytest

from .conftest import apply_namespace, eventually, run_cli, wait_serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def definition(name: str, url: str) -> dict:
    return {
        "name": name,
        "max_attempts": 3,
        "backoff": {"base_ms": 1_500, "multiplier": 1.0, "cap_ms": 1_500, "jitter": 0.0},
        "target": {"type": "http", "url": url},
    }


async def test_records_keep_the_target_they_were_written_with(
    wal_env, wal_settings, workers, recorder, wal_client, unique
):
    ns = f"retarget-{unique}"
    old_url, new_url = f"{recorder.url}/old", f"{recorder.url}/new"
    await apply_namespace(wal_settings, definition(ns, old_url))
    worker = workers()
    await wait_serving(worker, f"wal.{ns}.log")
    recorder.fail_always(503)
    first = await wal_client.write(ns, {"n": 1})
    second = await wal_client.write(ns, {"n": 2})
    assert first.ok
    assert second.ok

    def attempts(record_id: str) -> list[str]:
        return [r.path for r in recorder.all() if r.headers.get("X-Wal-Id") == record_id]

    await eventually(lambda: attempts(first.id) and attempts(second.id), 30, "first attempts")
    await apply_namespace(wal_settings, definition(ns, new_url))  # the target changes

    def dead() -> bool:
        listed = run_cli(wal_env, "dlq", "list", ns)
        return first.id in listed.stdout and second.id in listed.stdout

    await eventually(dead, 60, "both records dead-lettered", every=1.0)
    assert attempts(first.id) == ["/sink/old"] * 3  # the retries after the change too
    assert attempts(second.id) == ["/sink/old"] * 3

    recorder.fail_always(None)

    async def written_after() -> bool:
        later = await wal_client.write(ns, {"n": 3})
        return later.ok and later.id

    later_id = await eventually(written_after, 30, "a write after the change")
    await eventually(lambda: attempts(later_id), 30, "the later record's delivery")
    assert attempts(later_id) == ["/sink/new"]  # written after the change: the new target

    kept = run_cli(wal_env, "dlq", "redrive", ns, "--id", first.id)
    assert kept.returncode == 0, kept.stderr
    moved = run_cli(
        wal_env,
        "dlq",
        "redrive",
        ns,
        "--id",
        second.id,
        "--target",
        f'{{"type": "http", "url": "{new_url}"}}',
    )
    assert moved.returncode == 0, moved.stderr
    await eventually(
        lambda: len(attempts(first.id)) == 4 and len(attempts(second.id)) == 4,
        60,
        "the redriven deliveries",
    )
    assert attempts(first.id)[-1] == "/sink/old"  # a redrive keeps the record's target
    assert attempts(second.id)[-1] == "/sink/new"  # unless it names another
