"""The README's wire format, checked against real records on the embedded broker.

A worker delivers to an HTTP target that fails: a keyed write dies after its retries (with a
second write of its key parked behind it, released when it dies), a delayed base64 write goes
through the timer tier first. Then a redrive and a discard. A second namespace takes mutations
(completion timeout 1 s): a MutateItems through the API commits (its Forget waits in a tier), a
transaction sent one operation at a time gets a conflicting operation and misses another, so it
is dead-lettered (its entry and the conflict's, ``wal-mutation``), then redriven once the
missing operation came, and commits. Every record on both namespaces' topics and on the
deployment's delay tiers is decoded and compared with the README's "Wire format" tables: a
field or header documented as always present that a record lacks, a documented one no record
shows (the few this scenario cannot make are listed below, with why), or one a record carries
that is not documented, fails the test. The retried record's DLQ entry names the retry topic in
``wal-source`` and its log offset in ``wal-origin``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from walstream.api.app import build_api
from walstream.core.delay import TIERS_MS
from walstream.core.mutations.wire import Forget, Marker, decode_marker, decode_op_chunk
from walstream.dlq import entry_json, read_dlq
from walstream.records import WIRE_VERSION, decode_envelope
from walstream.testing.mutations import SqliteDb
from walstream.topology import delay_topic, mutation_topics

from .conftest import apply_namespace, eventually, run_cli, wait_serving
from .helpers import ROOT, topic_end_offsets, worker_metric

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


def commits(worker, ns: str) -> float:
    try:
        return worker_metric(worker, "walstream_mutation_commits_total", namespace=ns) or 0.0
    except OSError:  # not answering yet
        assert worker.alive(), worker.log_tail()
        return 0.0


def txn_status(worker, ns: str, txn_id: str) -> dict[str, Any]:
    """The worker's status page of a transaction ({} while it does not answer 200)."""
    url = f"http://127.0.0.1:{worker.web_port}/walstream/mutations/{ns}/{txn_id}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(orjson.loads(response.read()))
    except OSError:  # HTTPError (503 while recovering) included
        assert worker.alive(), worker.log_tail()
        return {}


async def test_every_record_kind_matches_the_readme_wire_format(
    api_client, wal_settings, wal_env, workers, recorder, unique, tmp_path
):
    tables = readme_wire_format()
    ns, mns = f"wire-{unique}", f"wirem-{unique}"
    log, retry, dlq = f"wal.{ns}.log", f"wal.{ns}.retry", f"wal.{ns}.dlq"
    mutations, markers_topic = mutation_topics(mns)
    mdlq = f"wal.{mns}.dlq"
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
    await apply_namespace(
        wal_settings,
        {
            "name": mns,
            "target": {"type": "kv", "table": "w_a", "key": "k"},
            "allowed_targets": {"kv_tables": ["w_*"]},
            "mutations": {"completion_timeout_s": 1},
            "backoff": {"base_ms": 50, "multiplier": 2.0, "cap_ms": 400, "jitter": 0.1},
        },
    )
    recorder.fail_always(503)
    worker = workers(
        WALSTREAM_BREAKER_THRESHOLD="1000",  # attempts, not breaker deferrals
        WALSTREAM_KV_URL=SqliteDb(tmp_path / "kv.sqlite").url,
    )
    await wait_serving(worker, log)
    await wait_serving(worker, markers_topic, within_s=60)
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

    async def mutate(path: str, body: dict[str, Any]) -> None:
        answer = await client.post(f"/v1/namespaces/{mns}/mutations{path}", json=body)
        assert answer.status == 200, await answer.text()
        assert (await answer.json())["durable"] == "TRUE"

    def put(table: str, row: str, value: Any, **more: Any) -> dict[str, Any]:
        return {"op": "put", "table": table, "id": row, "value": value, **more}

    await mutate(
        "",
        {
            "txn_id": "items",
            "operations": [
                put("w_a", "a", {"n": 1}, original_write_time=1_700_000_000_000),
                {"op": "delete", "table": "w_b", "id": "b"},
            ],
        },
    )
    await mutate("/dead/0", put("w_a", "d0", 1))
    await mutate("/dead/0", put("w_a", "other", 2))  # a conflict: another operation for seq 0
    await mutate("/dead:complete", {"count": 2})  # seq 1 never comes in time

    async def all_dead():
        view = await read_dlq(wal_settings.bootstrap_list, dlq)
        return view.open if {head, behind, delayed} <= set(view.open) else None

    async def mutations_dead():
        view = await read_dlq(wal_settings.bootstrap_list, mdlq)
        return view.open if len(view.open) == 2 and "txn.dead" in view.open else None

    await eventually(mutations_dead, 120, "the transaction's and the conflict's entries")
    await mutate("/dead/1", put("w_b", "d1", 3))
    # the redrive gives it a new completion timeout (1 s): redrive once seq 1 is stored
    await eventually(
        lambda: txn_status(worker, mns, "dead").get("missing") == [], 60, "seq 1 stored"
    )
    redriven = run_cli(wal_env, "dlq", "redrive", mns, "--id", "txn.dead", timeout=120)
    assert redriven.returncode == 0, redriven.stderr
    await eventually(lambda: commits(worker, mns) >= 2, 120, "both transactions committed")
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
    read = await read_all(
        wal_settings.bootstrap_list,
        [log, retry, dlq, mutations, markers_topic, mdlq, *tiers],
    )
    tier_records = [r for t in tiers for r in read[t]]
    tier_waits = [r for r in tier_records if headers(r)["wal-dest"] == markers_topic.encode()]
    tier_copies = [r for r in tier_records if headers(r)["wal-dest"] != markers_topic.encode()]
    markers = [r for r in read[retry] if "wal-order" in headers(r)]
    copies = [r for r in read[retry] if "wal-order" not in headers(r)]
    dlq_kinds: dict[bytes, list[Any]] = {}
    for r in [*read[dlq], *read[mdlq]]:
        dlq_kinds.setdefault(headers(r)["wal-dlq"], []).append(r)
    assert set(dlq_kinds) == {b"entry", b"redriven", b"discarded", b"claim", b"release"}
    entries = [r for r in dlq_kinds[b"entry"] if "wal-mutation" not in headers(r)]
    mutation_entries = [r for r in dlq_kinds[b"entry"] if "wal-mutation" in headers(r)]

    problems: list[str] = []
    # Values: the envelope of every record copy, wherever it is.
    envelopes = []
    for r in [*read[log], *copies, *tier_copies, *entries]:
        envelopes.append(orjson.loads(r.value))
        env = decode_envelope(r.value)
        assert envelopes[-1]["v"] == WIRE_VERSION
        if headers(r).get("wal-dlq") == b"entry":
            assert r.key == env.id.encode()  # an entry is keyed by the record id
        else:
            assert r.key == (env.key.encode() if env.key is not None else None)
    problems += check(tables, "Log envelope", "field", [envelope_fields(e) for e in envelopes])
    # Mutation records: operations (no headers), markers, wakes and Forgets wherever they are
    # (the markers topic, a tier, a transaction's DLQ entry), and the bad record's entry.
    ops = read[mutations]
    assert {r.key for r in ops} == {b"items", b"dead"}
    assert all(not r.headers for r in ops), [r.headers for r in ops]
    assert all(decode_op_chunk(r.value).txn_id == r.key.decode() for r in ops)
    problems += check(
        tables, "Mutation operation", "field", [set(orjson.loads(r.value)) for r in ops]
    )
    by_kind = {
        h: [r for r in mutation_entries if headers(r)["wal-mutation"] == h]
        for h in (b"marker", b"op")
    }
    [txn_entry] = by_kind[b"marker"]
    [conflict] = by_kind[b"op"]
    assert txn_entry.key == b"txn.dead"
    assert headers(txn_entry)["wal-error-class"] == b"mutation_incomplete"
    assert headers(conflict)["wal-error-class"] == b"mutation_conflict"
    assert decode_op_chunk(conflict.value).id == "other"  # its own bytes
    marker_values = [r.value for r in [*read[markers_topic], *tier_waits, txn_entry]]
    decoded = [decode_marker(v) for v in marker_values]
    assert read[markers_topic]
    for r in read[markers_topic]:
        assert r.key.decode() == decode_marker(r.value).txn_id
    assert any(isinstance(m, Forget) for m in decoded)
    assert any(isinstance(m, Marker) and m.redrive == 1 for m in decoded)
    problems += check(
        tables, "Mutation marker", "field", [set(orjson.loads(v)) for v in marker_values]
    )
    # Headers, per record kind.
    kinds = {
        "Log record": read[log],
        "Retry record": copies,
        "Ordering marker": markers,
        "Delay-tier record": tier_records,
        "DLQ entry": entries + mutation_entries,
        "DLQ marker": dlq_kinds[b"redriven"] + dlq_kinds[b"discarded"],
        "DLQ redrive claim": dlq_kinds[b"claim"] + dlq_kinds[b"release"],
        "Mutation marker": read[markers_topic],
    }
    for kind, records in kinds.items():
        problems += check(tables, kind, "header", [set(headers(r)) for r in records])
    problems += check(
        tables, "Ordering marker", "field", [set(orjson.loads(r.value)) for r in markers]
    )
    documented = {kind for kind, _ in tables}
    assert documented == {"Log envelope", "Mutation operation", *kinds}, documented
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
    [api_delayed] = [t for t in tier_copies if "wal-origin" not in headers(t)]
    assert decode_envelope(api_delayed.value).id == delayed
    assert headers(api_delayed)["wal-dest"] == log.encode()
    assert worker.alive()
