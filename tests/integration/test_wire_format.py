"""The README's wire format, checked against real records on the embedded broker.

A worker delivers to an HTTP target that fails: a keyed write dies after its retries (with a
second write of its key parked behind it, released when it dies), a delayed base64 write goes
through the timer tier first. Then a redrive and a discard. Every record on the namespace's log,
retry and DLQ topics and on the deployment's delay tiers is decoded and compared with the
README's "Wire format" tables: a field or header documented as always present that a record
lacks, a documented one no record shows (the few this scenario cannot make are listed below,
with why), or one a record carries that is not documented, fails the test. The retried record's
DLQ entry names the retry topic in ``wal-source`` and its log offset in ``wal-origin``.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from walstream.api.app import build_api
from walstream.core.delay import TIERS_MS
from walstream.dlq import entry_json, read_dlq
from walstream.records import WIRE_VERSION, decode_envelope
from walstream.topology import delay_topic

from .conftest import apply_namespace, eventually, run_cli, wait_serving
from .helpers import ROOT, topic_end_offsets

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

#: Documented rows this scenario does not produce, and why (each is still checked wherever a
#: record does carry it: documented, so never "undocumented").
NOT_PRODUCED = {
    ("Log record", "header", "wal-origin"): "needs a record of a namespace not defined",
    ("Log record", "header", "wal-origin-repair"): (
        "needs a replicated namespace whose client's local apply failed (the record: "
        "tests/unit/replication/test_client.py; the fan-out's routing of it: "
        "tests/integration/test_replication_review.py)"
    ),
    ("Ordering marker", "header", "wal-due"): "needs the log to fail a read-back",
    ("Ordering marker", "field", "tries"): "needs the log to fail a read-back",
}


@dataclass
class Table:
    """One README table: its rows' names, those marked ``always``."""

    names: set[str] = field(default_factory=set)
    always: set[str] = field(default_factory=set)


def readme_wire_format() -> dict[tuple[str, str], Table]:
    """(record kind, "field" | "header") -> its table, from the README's Wire format section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Wire format\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[tuple[str, str], Table] = {}
    for part in section.split("\n### ")[1:]:
        kind = part.splitlines()[0].strip()
        column: str | None = None
        for line in part.splitlines()[1:]:
            if not line.startswith("|"):
                column = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] in ("field", "header"):
                assert cells[1] == "present", f"{kind}: columns {cells}"
                column = cells[0]
                assert (kind, column) not in tables, f"two {column} tables for {kind}"
                tables[(kind, column)] = Table()
                continue
            if column is None or set(cells[0]) <= {"-"}:
                continue
            name = re.fullmatch(r"`([^`]+)`", cells[0])
            assert name, f"{kind}: row {line!r} does not start with a `name`"
            table = tables[(kind, column)]
            table.names.add(name[1])
            if cells[1] == "always":
                table.always.add(name[1])
    return tables


def envelope_fields(obj: dict[str, Any]) -> set[str]:
    """The names of an envelope's fields as the README lists them (payload and target opaque)."""
    names = set(obj)
    for name, value in obj.items():
        if name == "lifecycle":
            names |= {f"lifecycle.{k}" for k in value}
        elif name == "history":
            names |= {f"history[].{k}" for entry in value for k in entry}
    return names


def check(
    tables: dict[tuple[str, str], Table],
    kind: str,
    column: str,
    samples: list[set[str]],
) -> list[str]:
    """What the samples (each a record's set of names) and the table disagree on."""
    assert samples, f"no {kind} record to check"
    table = tables[(kind, column)]
    problems = []
    seen = set().union(*samples)
    for extra in sorted(seen - table.names):
        problems.append(f"{kind}: {column} {extra!r} is emitted but not documented")
    for name in sorted(table.always):
        lacking = sum(name not in s for s in samples)
        if lacking:
            problems.append(f"{kind}: {column} {name!r} documented always, {lacking} lack it")
    for name in sorted(table.names - seen):
        if (kind, column, name) not in NOT_PRODUCED:
            problems.append(f"{kind}: {column} {name!r} documented, in no record")
    return problems


async def read_all(servers: str, topics: Iterable[str]) -> dict[str, list[Any]]:
    """Every record of ``topics`` up to their ends now (a groupless consumer)."""
    ends: dict[TopicPartition, int] = {}
    for topic in topics:
        for partition, end in (await topic_end_offsets(servers, topic)).items():
            if end > 0:
                ends[TopicPartition(topic, partition)] = end
    records: dict[str, list[Any]] = {topic: [] for topic in topics}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(list(ends))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        left = dict(ends)
        while left and loop.time() < deadline:
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                records[tp.topic].extend(r for r in batch if r.offset < ends[tp])
                if batch and batch[-1].offset + 1 >= ends[tp]:
                    left.pop(tp, None)
        assert not left, f"not read to the end: {left}"
    finally:
        await consumer.stop()
    return records


def headers(record: Any) -> dict[str, bytes]:
    return dict(record.headers or ())


async def test_every_record_kind_matches_the_readme_wire_format(
    api_client, wal_settings, wal_env, workers, recorder, unique
):
    tables = readme_wire_format()
    ns = f"wire-{unique}"
    log, retry, dlq = f"wal.{ns}.log", f"wal.{ns}.retry", f"wal.{ns}.dlq"
    await apply_namespace(
        wal_settings,
        {
            "name": ns,
            "ordering": "key",
            "max_attempts": 3,
            # 1 s backoffs: each retry copy goes through the timer tier (beyond the hand-over lead)
            "backoff": {"base_ms": 1_000, "multiplier": 1.0, "cap_ms": 1_000, "jitter": 0.0},
            "target": {"type": "http", "url": recorder.url},
        },
    )
    recorder.fail_always(503)
    worker = workers(WALSTREAM_BREAKER_THRESHOLD="1000")  # attempts, not breaker deferrals
    await wait_serving(worker, log)
    client = await api_client(build_api(wal_settings))

    async def write(body: dict[str, Any]) -> str:
        answer = await client.post(f"/v1/namespaces/{ns}/log", json=body)
        assert answer.status == 200, await answer.text()
        return str((await answer.json())["id"])

    head = await write({"payload": {"n": 1}, "key": "k"})
    behind = await write({"payload": {"n": 2}, "key": "k"})  # parked behind ``head``
    delayed = await write(
        {
            "payload": base64.b64encode(b"\x00raw").decode(),
            "payload_encoding": "base64",
            "lifecycle": {"delay_ms": 3_000},  # keyless: straight into the timer tier
        }
    )

    async def all_dead():
        view = await read_dlq(wal_settings.bootstrap_list, dlq)
        return view.open if {head, behind, delayed} <= set(view.open) else None

    await eventually(all_dead, 180, "three DLQ entries", every=1.0)

    recorder.fail_always(None)
    redriven = run_cli(wal_env, "dlq", "redrive", ns, "--id", head, "--rate", "50", timeout=120)
    assert redriven.returncode == 0, redriven.stderr

    def delivered():
        return [r for r in recorder.successes() if r.headers.get("X-Wal-Id") == head]

    await eventually(delivered, 120, "the redriven record delivered")
    discarded = run_cli(wal_env, "dlq", "discard", ns, "--id", behind, timeout=120)
    assert discarded.returncode == 0, discarded.stderr

    tiers = [delay_topic(wal_settings.app_id, t) for t in (0, *TIERS_MS)]
    read = await read_all(wal_settings.bootstrap_list, [log, retry, dlq, *tiers])
    tier_records = [r for t in tiers for r in read[t]]
    markers = [r for r in read[retry] if "wal-order" in headers(r)]
    copies = [r for r in read[retry] if "wal-order" not in headers(r)]
    dlq_kinds: dict[bytes, list[Any]] = {}
    for r in read[dlq]:
        dlq_kinds.setdefault(headers(r)["wal-dlq"], []).append(r)
    assert set(dlq_kinds) == {b"entry", b"redriven", b"discarded", b"claim", b"release"}
    entries = dlq_kinds[b"entry"]

    problems: list[str] = []
    # Values: the envelope of every record copy, wherever it is.
    envelopes = []
    for r in [*read[log], *copies, *tier_records, *entries]:
        envelopes.append(orjson.loads(r.value))
        env = decode_envelope(r.value)
        assert envelopes[-1]["v"] == WIRE_VERSION
        if headers(r).get("wal-dlq") == b"entry":
            assert r.key == env.id.encode()  # an entry is keyed by the record id
        else:
            assert r.key == (env.key.encode() if env.key is not None else None)
    problems += check(tables, "Log envelope", "field", [envelope_fields(e) for e in envelopes])
    # Headers, per record kind.
    kinds = {
        "Log record": read[log],
        "Retry record": copies,
        "Ordering marker": markers,
        "Delay-tier record": tier_records,
        "DLQ entry": entries,
        "DLQ marker": dlq_kinds[b"redriven"] + dlq_kinds[b"discarded"],
        "DLQ redrive claim": dlq_kinds[b"claim"] + dlq_kinds[b"release"],
    }
    for kind, records in kinds.items():
        problems += check(tables, kind, "header", [set(headers(r)) for r in records])
    problems += check(
        tables, "Ordering marker", "field", [set(orjson.loads(r.value)) for r in markers]
    )
    documented = {kind for kind, _ in tables}
    assert documented == {"Log envelope", *kinds}, documented
    assert not problems, "\n".join(problems)

    # What wal-source and wal-origin name: a retried record's entry names the retry topic it was
    # last read from, and its first position in the log, which holds it there. A redriven record
    # is written to the log again: a copy of it would name that offset.
    first_read = {}
    for r in read[log]:
        env = decode_envelope(r.value)
        first_read[(env.id, env.redrive)] = f"{log}[{r.partition}]@{r.offset}"
    assert set(first_read) == {(head, 0), (behind, 0), (delayed, 0), (head, 1)}
    for r in entries:
        h = headers(r)
        record_id = r.key.decode()
        assert h["wal-source"].startswith(f"{retry}[".encode()), (record_id, h)
        assert h["wal-origin"].decode() == first_read[(record_id, 0)], (record_id, h)
        assert h["wal-attempt"] == b"3"
    for r in [*copies, *(t for t in tier_records if "wal-origin" in headers(t))]:
        env = decode_envelope(r.value)
        assert headers(r)["wal-origin"].decode() == first_read[(env.id, env.redrive)]
    [head_entry] = [r for r in entries if r.key == head.encode()]
    assert headers(head_entry)["wal-behind"] == behind.encode()
    assert headers(head_entry)["wal-key"] == b"k"
    # The listing (`dlq list`/`dlq show`, GET .../dlq) shows it as ``origin``.
    listed = entry_json((await read_dlq(wal_settings.bootstrap_list, dlq)).open[delayed])
    assert listed["origin"] == first_read[(delayed, 0)]
    assert listed["source"].startswith(f"{retry}[")
    [api_delayed] = [t for t in tier_records if "wal-origin" not in headers(t)]
    assert decode_envelope(api_delayed.value).id == delayed
    assert headers(api_delayed)["wal-dest"] == log.encode()
    assert worker.alive()
