"""DLQ entries of multi-partition mutations on the real broker (issue 18): ``walstream dlq``
lists and shows a dead-lettered transaction as one (txn id, missing seqs), discards it, and
redrives it by sending its marker again to the namespace's markers topic (redrive + 1, keyed by
the txn id); end to end, a transaction dead-lettered for a missing operation commits once the
operation came and it was redriven, and one discarded (with the CLI or over HTTP) has its rows
dropped at once: its status is unknown (404) and the table's changelog holds no row of it."""

from __future__ import annotations

import time
import urllib.error

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from walstream.api.app import build_api
from walstream.core import outbox
from walstream.core.dlq import Selection, mutation_header
from walstream.core.mutations import (
    Marker,
    Operation,
    chunk_key,
    decode_marker,
    encode_marker,
    op_token,
    state_key,
)
from walstream.core.placement import key_partition
from walstream.dlq import DlqReader
from walstream.kafka.admin import ensure_topics
from walstream.mutation_pages import MUTATION_PAGE
from walstream.testing.mutations import MutationWriter, SqliteDb, Txn
from walstream.topology import default_topics, mutation_topic_specs, mutation_topics

from .conftest import apply_namespace, eventually, run_cli, wait_serving
from .helpers import changelog_rows, get_json, mutations_definition, read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 4  # WALSTREAM_DEFAULT_PARTITIONS' default


async def setup(wal_settings, ns: str, **options) -> None:
    await apply_namespace(wal_settings, mutations_definition(ns, jitter=0.0, **options))
    specs = mutation_topic_specs(ns, PARTITIONS, replication_factor=1, min_insync_replicas=1)
    await ensure_topics(wal_settings.bootstrap_list, specs)


def transaction_entry(ns: str, marker: Marker, reason: str, error_class: str, kind: str, rid: str):
    """A DLQ entry exactly as the commit agent writes one (walstream.agents.mutation_out)."""
    record = outbox.dlq_entry(
        encode_marker(marker) if kind == "marker" else b'{"v": 1, "kind": "op"}',
        dlq_topic=default_topics(ns).dlq,
        partition=key_partition(marker.txn_id.encode(), PARTITIONS),
        record_id=rid,
        namespace=ns,
        reason=reason,
        error_class=error_class,
        source=f"{mutation_topics(ns).markers}[0]@5",
        attempts=0,
        dead_at_ms=int(time.time() * 1000),
        origin=None,
    )
    return record, [*(record.headers or []), mutation_header(kind)]


async def write_entries(wal_settings, entries) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=wal_settings.bootstrap_list, acks="all")
    await producer.start()
    try:
        for record, headers in entries:
            await producer.send_and_wait(
                record.topic, record.value, key=record.key, partition=record.partition,
                headers=headers,
            )  # fmt: skip
    finally:
        await producer.stop()


def cli_ok(env, *args: str) -> str:
    done = run_cli(env, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


async def test_the_cli_lists_discards_and_redrives_a_transaction_to_its_markers_topic(
    wal_env, wal_settings, unique
):
    ns = f"md{unique}"
    await setup(wal_settings, ns)
    now = int(time.time() * 1000)
    missing = "incomplete after 600004 ms (timeout 600000 ms): missing seqs [1]"
    entries = [
        transaction_entry(ns, Marker(ns, "tx-a", 3, now, redrive=1), missing,
                          "mutation_incomplete", "marker", "txn.tx-a"),
        transaction_entry(ns, Marker(ns, "tx-b", 2, now), "seq 0 of 2: http_400",
                          "mutation_apply_failed", "marker", "txn.tx-b"),
        transaction_entry(ns, Marker(ns, "tx-c", 2, now), "another operation for seq 1",
                          "mutation_conflict", "op", "wal.x.mutations.0.9"),
        transaction_entry(ns, Marker(ns, "tx-m", 2, now, digest="0" * 32),
                          "operation set mismatch: the marker names set 00..",
                          "mutation_set_mismatch", "marker", "txn.tx-m"),
    ]  # fmt: skip
    await write_entries(wal_settings, entries)

    listed = cli_ok(wal_env, "dlq", "list", ns)
    assert "txn.tx-a\t" in listed
    assert "\tkind=transaction\ttxn=tx-a\tmissing=[1]" in listed
    assert "\tkind=transaction\ttxn=tx-b\tmissing=[]" in listed
    assert "\tkind=operation" in listed
    assert "\tkind=transaction\ttxn=tx-m\tmissing=[]" in listed
    shown = orjson.loads(run_cli(wal_env, "dlq", "show", ns, "txn.tx-a").stdout)
    assert (shown["kind"], shown["txn_id"], shown["missing"]) == ("transaction", "tx-a", [1])
    assert shown["mutation"]["redrive"] == 1
    assert "undecodable" not in shown

    assert "discarded 1" in cli_ok(wal_env, "dlq", "discard", ns, "--id", "txn.tx-b")
    redriven = cli_ok(wal_env, "dlq", "redrive", ns)
    assert "redrove 1 of 3" in redriven
    assert "wal.x.mutations.0.9" in redriven  # skipped, named: a single bad record
    assert "not redrivable" in redriven
    # skipped, named why: a redrive would find the same mismatch
    assert "txn.tx-m: a transaction dead-lettered for an operation set mismatch" in redriven

    (record,) = await read_topic(wal_settings.bootstrap_list, mutation_topics(ns).markers, expect=1)
    assert record.key == b"tx-a"
    assert record.partition == key_partition(b"tx-a", PARTITIONS)
    assert decode_marker(record.value) == Marker(ns, "tx-a", 3, now, wake=0, redrive=2)
    assert await read_topic(wal_settings.bootstrap_list, default_topics(ns).log, expect=0) == []
    page = await DlqReader(wal_settings.bootstrap_list).page(default_topics(ns).dlq, Selection())
    assert sorted(e.id for e in page.entries) == ["txn.tx-m", "wal.x.mutations.0.9"]  # left open


async def test_the_http_api_shows_and_redrives_a_transaction_to_its_markers_topic(
    wal_settings, api_client, unique
):
    ns = f"mh{unique}"
    await setup(wal_settings, ns)
    now = int(time.time() * 1000)
    missing = "incomplete after 600004 ms (timeout 600000 ms): missing seqs [0, 2]"
    await write_entries(
        wal_settings,
        [
            transaction_entry(
                ns, Marker(ns, "tx-h", 4, now), missing, "mutation_incomplete", "marker", "txn.tx-h"
            ),
            transaction_entry(
                ns,
                Marker(ns, "tx-o", 2, now),
                "poison",
                "mutation_poison",
                "op",
                "wal.x.mutations.1.3",
            ),
        ],
    )
    client = await api_client(build_api(wal_settings))

    async def listing():
        answer = await client.get(f"/v1/namespaces/{ns}/dlq")
        return await answer.json() if answer.status == 200 else None

    listed = await eventually(listing, 30, "the API to list the namespace's DLQ", every=0.5)
    shown = {e["id"]: e for e in listed["entries"]}
    assert (shown["txn.tx-h"]["kind"], shown["txn.tx-h"]["txn_id"]) == ("transaction", "tx-h")
    assert shown["txn.tx-h"]["missing"] == [0, 2]
    assert shown["wal.x.mutations.1.3"]["kind"] == "operation"
    one = await client.get(f"/v1/namespaces/{ns}/dlq/txn.tx-h")
    assert one.status == 200
    body = await one.json()
    assert body["mutation"]["op_count"] == 4
    assert "undecodable" not in body

    started = await client.post(f"/v1/namespaces/{ns}/dlq:redrive", json={})
    assert started.status == 202, await started.text()

    async def finished():
        answer = await client.get(f"/v1/namespaces/{ns}/dlq:redrive")
        body = await answer.json()
        return body if body["state"] != "running" else None

    progress = await eventually(finished, 30, "the redrive to end")
    assert (progress["state"], progress["redriven"], progress["total"]) == ("done", 1, 2)
    assert progress["skipped"][0].startswith("wal.x.mutations.1.3: ")
    (record,) = await read_topic(wal_settings.bootstrap_list, mutation_topics(ns).markers, expect=1)
    assert record.key == b"tx-h"
    assert decode_marker(record.value) == Marker(ns, "tx-h", 4, now, wake=0, redrive=1)


async def test_a_transaction_dead_lettered_for_a_missing_operation_commits_once_redriven(
    wal_env, wal_settings, workers, tmp_path, unique, api_client
):
    ns = f"me{unique}"
    await setup(wal_settings, ns, timeout_s=1)
    db = SqliteDb(tmp_path / "kv.sqlite")
    await db.prepare(["m_a", "m_b"])
    worker = workers(WALSTREAM_KV_URL=db.url)
    await wait_serving(worker, mutation_topics(ns).markers, within_s=90)
    txn = Txn(
        "tx-redrive",
        [
            Operation(op="put", table="m_a", id="k0", value=b"zero"),
            Operation(op="put", table="m_b", id="k1", value=b"one"),
            Operation(op="put", table="m_a", id="k2", value=b"two"),
        ],
        int(time.time() * 1000),
    )
    # two others missing their seq 1, discarded instead (with the CLI, over HTTP): their rows go
    dropped = Txn("tx-dropped", txn.operations[:2], txn.at_ms)
    dropped_http = Txn("tx-dropped-http", txn.operations[:2], txn.at_ms)

    def page(txn_id: str) -> str:
        path = MUTATION_PAGE.format(namespace=ns, txn_id=txn_id)
        return f"http://127.0.0.1:{worker.web_port}{path}"

    def status(wanted: str, txn_id: str = txn.txn_id):
        try:
            body = get_json(page(txn_id))
        except OSError:
            return None
        return body if body["status"] == wanted else None

    def unknown(txn_id: str) -> bool | None:
        try:
            get_json(page(txn_id))
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code == 404 or None
        except OSError:
            return None
        return None

    async with MutationWriter(wal_settings.bootstrap_list, ns) as writer:
        for seq in (0, 2):
            await writer.send(writer.topics.mutations, txn.txn_id, writer.op_records(txn, seq))
        await writer.send(writer.topics.markers, txn.txn_id, [writer.marker(txn)])
        for other in (dropped, dropped_http):
            await writer.send(writer.topics.mutations, other.txn_id, writer.op_records(other, 0))
            await writer.send(writer.topics.markers, other.txn_id, [writer.marker(other)])
        dead = await eventually(lambda: status("dead_lettered"), 60, "the transaction dead")
        assert dead["missing"] == [1]
        dlq = default_topics(ns).dlq

        async def entries():
            found = await DlqReader(wal_settings.bootstrap_list).page(dlq, Selection())
            return found.entries if len(found.entries) == 3 else None

        found = {e.id: e for e in await eventually(entries, 60, "their DLQ entries")}
        entry = found[f"txn.{txn.txn_id}"]
        assert entry.error_class == "mutation_incomplete"
        assert "missing seqs [1]" in entry.reason
        for other in (dropped, dropped_http):
            assert found[f"txn.{other.txn_id}"].expiry_wake is not None
            await eventually(lambda t=other.txn_id: status("dead_lettered", t), 30, "dead")
        assert await db.applied() == []  # nothing applied while seq 1 is missing
        await writer.send(writer.topics.mutations, txn.txn_id, writer.op_records(txn, 1))

    discarded = cli_ok(wal_env, "dlq", "discard", ns, "--id", f"txn.{dropped.txn_id}")
    assert "discarded 1" in discarded
    client = await api_client(build_api(wal_settings))
    answer = await client.post(
        f"/v1/namespaces/{ns}/dlq:discard", json={"ids": [f"txn.{dropped_http.txn_id}"]}
    )
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["discarded"] == 1
    assert "redrove 1 of 1" in cli_ok(wal_env, "dlq", "redrive", ns)
    committed = await eventually(lambda: status("committed"), 60, "the transaction committed")
    assert committed["operations"] == 3
    tokens = [op_token(ns, txn.txn_id, seq) for seq in range(3)]
    assert await db.applied() == [("m_a", "k0", tokens[0]), ("m_b", "k1", tokens[1]),
                                  ("m_a", "k2", tokens[2])]  # fmt: skip
    assert await db.rows(["m_a", "m_b"]) == {
        ("m_a", "k0"): b"zero", ("m_b", "k1"): b"one", ("m_a", "k2"): b"two",
    }  # fmt: skip
    left = await DlqReader(wal_settings.bootstrap_list).page(dlq, Selection())
    assert left.entries == []
    # the discarded ones: their entries closed and their rows dropped at once (not when the
    # idempotency window ends): unknown to the status page, no row in the table's changelog
    for other in (dropped, dropped_http):
        assert await eventually(lambda t=other.txn_id: unknown(t), 60, f"{other.txn_id} gone")
    gone = {state_key(ns, t.txn_id) for t in (dropped, dropped_http)}
    gone |= {chunk_key(ns, t.txn_id, 0, 0) for t in (dropped, dropped_http)}

    async def dropped_rows():
        rows = await changelog_rows(wal_settings.bootstrap_list, wal_settings.app_id)
        return None if gone & rows.keys() else rows

    rows = await eventually(dropped_rows, 60, "the changelog to hold no row of them")
    assert state_key(ns, txn.txn_id) not in rows  # committed: its tombstone only


async def test_a_transaction_whose_apply_gave_up_commits_once_redriven_applying_each_once(
    wal_env, wal_settings, workers, tmp_path, unique
):
    ns = f"mf{unique}"
    await setup(wal_settings, ns, max_attempts=2)
    db = SqliteDb(tmp_path / "kv.sqlite")
    await db.prepare(["m_a", "m_b"])
    await db.fail([("m_b", "k1")])  # seq 1's write fails until healed
    worker = workers(WALSTREAM_KV_URL=db.url)
    await wait_serving(worker, mutation_topics(ns).markers, within_s=90)
    txn = Txn(
        "tx-failing",
        [
            Operation(op="put", table="m_a", id="k0", value=b"zero"),
            Operation(op="put", table="m_b", id="k1", value=b"one"),
            Operation(op="delete", table="m_a", id="k0", value=None),
        ],
        int(time.time() * 1000),
    )
    path = MUTATION_PAGE.format(namespace=ns, txn_id=txn.txn_id)
    page = f"http://127.0.0.1:{worker.web_port}{path}"

    def status(wanted: str):
        try:
            body = get_json(page)
        except OSError:
            return None
        return body if body["status"] == wanted else None

    async with MutationWriter(wal_settings.bootstrap_list, ns) as writer:
        records = [v for seq in range(3) for v in writer.op_records(txn, seq)]
        await writer.send(writer.topics.mutations, txn.txn_id, records)
        await writer.send(writer.topics.markers, txn.txn_id, [writer.marker(txn)])
    dead = await eventually(lambda: status("dead_lettered"), 60, "the transaction dead")
    assert dead["missing"] == []
    assert dead["progress"] <= 1  # seq 1 never applied
    dlq = default_topics(ns).dlq

    async def entries():
        found = await DlqReader(wal_settings.bootstrap_list).page(dlq, Selection())
        return found.entries or None

    (entry,) = await eventually(entries, 30, "its DLQ entry")
    assert (entry.id, entry.error_class) == (f"txn.{txn.txn_id}", "mutation_apply_failed")
    assert entry.reason.startswith(f"seq {dead['progress']} of 3: ")
    applied_before = await db.applied()

    await db.heal()
    assert "redrove 1 of 1" in cli_ok(wal_env, "dlq", "redrive", ns)
    committed = await eventually(lambda: status("committed"), 60, "the transaction committed")
    assert committed["operations"] == 3
    tokens = [op_token(ns, txn.txn_id, seq) for seq in range(3)]
    expected = [("m_a", "k0", tokens[0]), ("m_b", "k1", tokens[1]), ("m_a", "k0", tokens[2])]
    # every operation applied once, in seq order: the redrive resumed at the first unapplied one
    assert await db.applied() == expected
    assert applied_before == expected[: dead["progress"]]
    assert await db.rows(["m_a", "m_b"]) == {("m_a", "k0"): None, ("m_b", "k1"): b"one"}
    left = await DlqReader(wal_settings.bootstrap_list).page(dlq, Selection())
    assert left.entries == []
